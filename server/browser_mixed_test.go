package main

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Mixed browsers: real headless Firefox (firefox_test.go, over WebDriver
// BiDi) and Chromium (chromedp) in one tree. Firefox has the standard
// RTCRtpScriptTransform but not createEncodedStreams, so it must relay by
// re-encoding (the replaceTrack path) and say so in its hello.

// TestFirefoxWatchesGoSource: a Firefox viewer straight under the Go source
// decodes video that keeps advancing, presents it, and receives audio; its
// hello declared re-encode (no pass-through APIs), so it relays that way.
func TestFirefoxWatchesGoSource(t *testing.T) {
	browserTest(t)
	const stream = "firefox"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1})
	startSource(t, srvURL, stream, 1)

	f := openFirefoxViewer(t, srvURL, stream, "", "F")
	if n, err := tabEval[float64](f, framesPresentedJS); err != nil || n < 0 {
		t.Fatalf("Firefox has no requestVideoFrameCallback (%v, %v)", n, err)
	}
	first := waitPagePlaying(t, f, "F", 0, 5*time.Second)
	later := waitPagePlaying(t, f, "F", first.FramesDecoded+60, 30*time.Second)
	presented := waitPresented(t, f, "Firefox", 30, 60*time.Second)
	t.Logf("Firefox: %+v then %+v; %v frames presented", first, later, presented)
	if later.AudioPacketsReceived == 0 {
		t.Error("Firefox received no audio")
	}
	if m, err := tabEval[string](f, `window.canopy.client.relayMode`); err != nil || m != "re-encode" {
		t.Errorf("Firefox relays in mode %q (%v), want re-encode", m, err)
	}
	var tr treeResponse
	getJSON(t, srvURL+"/api/streams/"+stream+"/tree", &tr)
	for _, n := range tr.Nodes {
		if n.Kind == "browser" && n.Passthrough {
			t.Errorf("tree node %s: Firefox declared pass-through", n.ID)
		}
	}
}

// TestMixedBrowsersFirefoxRelaysBetweenChromiums builds Go source →
// Chromium A (pass-through) → Firefox F (re-encode) → Chromium C: Firefox
// decodes frames a Chromium forwarded without decoding (so their payload
// types suit Firefox's answer), and its re-encoded track plays in Chromium.
// Every viewer decodes; A's sender encodes nothing, F's encodes.
func TestMixedBrowsersFirefoxRelaysBetweenChromiums(t *testing.T) {
	heavyBrowserTest(t)
	firefoxPath(t) // skip (or fail in CI) before starting anything
	chromiumPath(t)
	const stream = "mixed"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1, BrowserMaxCapacity: 1})
	src := startSource(t, srvURL, stream, 1)

	aCtx := openViewer(t, srvURL, stream, "?stats=1", "A")
	a := chromiumTab{aCtx}
	aState := readPageRelay(t, a, "A")
	if aState.Parent != src.node.ID() {
		t.Fatalf("A's parent is %q, want the source", aState.Parent)
	}
	f := openFirefoxViewer(t, srvURL, stream, "?stats=1", "F")
	fState := readPageRelay(t, f, "F")
	if fState.Parent != aState.ID {
		t.Fatalf("F's parent is %q, want A %s", fState.Parent, aState.ID)
	}
	cCtx := openViewer(t, srvURL, stream, "?relay=0", "C")
	c := chromiumTab{cCtx}
	if cs := readPageRelay(t, c, "C"); cs.Parent != fState.ID {
		t.Fatalf("C's parent is %q, want F %s", cs.Parent, fState.ID)
	}

	for name, want := range map[string]string{"A": "pass-through", "F": "re-encode"} {
		p := map[string]tab{"A": a, "F": f}[name]
		if m, err := tabEval[string](p, `window.canopy.client.relayMode`); err != nil || m != want {
			t.Errorf("%s relays in mode %q (%v), want %s", name, m, err, want)
		}
	}
	var tr treeResponse
	getJSON(t, srvURL+"/api/streams/"+stream+"/tree", &tr)
	for _, n := range tr.Nodes {
		switch n.ID {
		case aState.ID:
			if !n.Passthrough {
				t.Errorf("tree: A %s is not marked pass-through", n.ID)
			}
		case fState.ID:
			if n.Passthrough {
				t.Errorf("tree: Firefox %s is marked pass-through", n.ID)
			}
		}
	}

	// Every viewer keeps decoding, and Firefox presents what it decodes.
	if _, err := tabEval[float64](f, framesPresentedJS); err != nil {
		t.Fatal(err)
	}
	base := map[string]pageStats{}
	pages := []struct {
		name string
		p    tab
	}{{"A", a}, {"F", f}, {"C", c}}
	for _, v := range pages {
		base[v.name] = waitPagePlaying(t, v.p, v.name, 0, 5*time.Second)
	}
	for _, v := range pages {
		s := waitPagePlaying(t, v.p, v.name, base[v.name].FramesDecoded+90, 60*time.Second)
		t.Logf("%s: %+v", v.name, s)
		if s.AudioPacketsReceived == 0 {
			t.Errorf("%s received no audio", v.name)
		}
	}
	waitPresented(t, f, "Firefox", 30, 60*time.Second)

	// A forwards encoded frames; Firefox re-encodes its decoded track for C.
	for _, v := range []struct {
		name   string
		p      tab
		encode bool
	}{{"A", a, false}, {"F", f, true}} {
		reports, err := tabEval[[]senderReport](v.p, sendersJS)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s sends: %+v", v.name, reports)
		kinds := map[string]bool{}
		for _, r := range reports {
			kinds[r.Kind] = true
			if r.BytesSent == 0 {
				t.Errorf("%s's %s sender sent nothing", v.name, r.Kind)
			}
			if r.Kind == "video" && (r.FramesEncoded > 0) != v.encode {
				t.Errorf("%s's video sender encoded %v frames, want encoding %v", v.name, r.FramesEncoded, v.encode)
			}
		}
		if !kinds["video"] || !kinds["audio"] {
			t.Errorf("%s's child link reports %v, want video and audio", v.name, reports)
		}
	}
	saveScreenshot(t, cCtx, "mixed-chromium-under-firefox.png")
}

// TestMixedBrowsersParentSwitches: Go source → Go relay → Chromium A
// (pass-through) → Firefox F → Chromium C. First the Go relay crashes and A
// moves to the source: F keeps its connection to A and keeps decoding
// across A's new timeline. Then A's tab goes away and F moves to the
// source: F swaps the new tracks into C's sender (replaceTrack), so C keeps
// its connection to F and keeps playing.
func TestMixedBrowsersParentSwitches(t *testing.T) {
	heavyBrowserTest(t)
	firefoxPath(t) // skip (or fail in CI) before starting anything
	chromiumPath(t)
	const stream = "mixedswitch"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1, BrowserMaxCapacity: 1})
	src := startSource(t, srvURL, stream, 1)
	proxy := startProxy(t, srvURL)
	relay := startPeer(t, proxy.url(), stream, protocol.RoleRelay, 1, nil)
	waitFor(t, 10*time.Second, "Go relay placed under the source", func() bool { return relay.node.Parent() == src.node.ID() })

	aCtx := openViewer(t, srvURL, stream, "", "A")
	a := chromiumTab{aCtx}
	aState := readPageRelay(t, a, "A")
	if aState.Parent != relay.node.ID() {
		t.Fatalf("A's parent is %q, want the Go relay", aState.Parent)
	}
	f := openFirefoxViewer(t, srvURL, stream, "", "F")
	fState := readPageRelay(t, f, "F")
	if fState.Parent != aState.ID {
		t.Fatalf("F's parent is %q, want A %s", fState.Parent, aState.ID)
	}
	c := chromiumTab{openViewer(t, srvURL, stream, "?relay=0", "C")}
	if cs := readPageRelay(t, c, "C"); cs.Parent != fState.ID {
		t.Fatalf("C's parent is %q, want F %s", cs.Parent, fState.ID)
	}
	for name, p := range map[string]tab{"F": f, "C": c} {
		if _, err := tabEval[bool](p, markParentJS); err != nil {
			t.Fatalf("mark %s's link: %v", name, err)
		}
	}

	// 1. A's parent changes (Go → Go); F's link to A carries on. The
	// frames counted after the switch came from A's new parent.
	proxy.cutAll()
	stalls, gap := keepsPlaying(t, 45*time.Second, func() bool { return playsFrom(a, src.node.ID()) },
		watched{"F", f, 90}, watched{"C", c, 90})
	t.Logf("A's switch: longest frozen picture F %v, C %v (polls up to %v apart)", stalls["F"], stalls["C"], gap)

	// 2. A's tab goes away: F moves to the source and re-sends its new
	// track to C in place of the old one; what C shows after the switch
	// came from the source through F.
	if _, err := evalJS[bool](aCtx, `(() => { location.href = 'about:blank'; return true; })()`); err != nil {
		t.Fatal(err)
	}
	stalls, gap = keepsPlaying(t, 45*time.Second, func() bool { return playsFrom(f, src.node.ID()) },
		watched{"C", c, 90})
	waitPagePlaying(t, f, "F", 0, 5*time.Second)
	t.Logf("F's switch: C kept its link to F, longest frozen picture %v (polls up to %v apart)", stalls["C"], gap)
	cMoved := readPageRelay(t, c, "C")
	if cMoved.Parent != fState.ID {
		t.Errorf("C's parent is %q, want F %s still", cMoved.Parent, fState.ID)
	}
}

// playsFrom reports whether p's parent is parent and the media it plays
// (and relays) comes over that connection, not an older one kept while
// the new one started.
func playsFrom(p tab, parent string) bool {
	ok, err := tabEval[bool](p, `(() => { const c = window.canopy.client;
	  return c.parentId === '`+parent+`' && !!c.pc && c._mediaPC === c.pc; })()`)
	return err == nil && ok
}

// TestFirefoxH264Stream: the tree forwards the source's codec unchanged, so
// a browser that cannot decode it cannot watch. Firefox without the
// OpenH264 plugin (firefox-esr here: it cannot fetch it) stops at once with
// a clear reason, leaves the tree, and reports nobody stalled; a Firefox
// with H264 plays the stream.
func TestFirefoxH264Stream(t *testing.T) {
	browserTest(t)
	const stream = "firefox264"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1})
	startClipSource(t, srvURL, stream, 1, filepath.Join("..", "mesh", "media", "testdata", "short.h264"))

	f := newFirefox(t, "F")
	if err := f.navigate(srvURL + "/watch/" + stream); err != nil {
		t.Fatal(err)
	}
	type verdict struct {
		Loaded  bool   `json:"loaded"`
		H264    bool   `json:"h264"`
		State   string `json:"state"`
		Reason  string `json:"reason"`
		Overlay string `json:"overlay"`
	}
	const verdictJS = `(() => {
	  const c = window.canopy && window.canopy.client;
	  const p = window.canopy && window.canopy.player;
	  const overlay = p && p.shadowRoot ? p.shadowRoot.querySelector('.overlay').textContent : '';
	  return {loaded: !!c, h264: RTCRtpReceiver.getCapabilities('video').codecs.some((x) => x.mimeType === 'video/H264'),
	    state: c ? c.state : '', reason: c ? c.reason : '', overlay: overlay.replace(/\s+/g, ' ').trim()};
	})()`
	var v verdict
	waitFor(t, 30*time.Second, "the watch page's client", func() bool {
		var err error
		v, err = tabEval[verdict](f, verdictJS)
		return err == nil && v.Loaded
	})
	if v.H264 {
		t.Log("this Firefox decodes H264 (OpenH264 installed): it must play")
		waitPagePlaying(t, f, "F", 30, 60*time.Second)
		return
	}
	waitFor(t, 20*time.Second, "Firefox to stop with a reason", func() bool {
		var err error
		v, err = tabEval[verdict](f, verdictJS)
		return err == nil && v.State == "offline" && strings.Contains(v.Reason, "H264")
	})
	t.Logf("Firefox without H264: state %s, reason %q, overlay %q", v.State, v.Reason, v.Overlay)
	if !strings.Contains(v.Overlay, "cannot decode H264") {
		t.Errorf("the player shows %q, want the reason", v.Overlay)
	}
	waitFor(t, 10*time.Second, "Firefox out of the tree", func() bool {
		var tr treeResponse
		getJSON(t, srvURL+"/api/streams/"+stream+"/tree", &tr)
		for _, n := range tr.Nodes {
			if n.Kind == "browser" {
				return false
			}
		}
		return true
	})
	// It stays stopped: no socket, and no reconnect scheduled.
	idle, err := tabEval[bool](f, `window.canopy.client._ws === null && window.canopy.client._retryTimer === null`)
	if err != nil || !idle {
		t.Errorf("Firefox keeps a socket or a reconnect after stopping (%v, %v)", idle, err)
	}
}

// TestMixedBrowsersPassthroughBelowFirefox: Go source → Firefox F →
// Chromium B (pass-through) → Chromium C. B's offer to C must carry the
// codec and payload type numbers Firefox's offer used (Firefox numbers VP8
// and Opus unlike Chromium and the Go peers), so C gets B's frames byte for
// byte while B encodes nothing.
func TestMixedBrowsersPassthroughBelowFirefox(t *testing.T) {
	heavyBrowserTest(t)
	firefoxPath(t) // skip (or fail in CI) before starting anything
	chromiumPath(t)
	const stream = "mixedbelow"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1, BrowserMaxCapacity: 1})
	startSource(t, srvURL, stream, 1)

	f := openFirefoxViewer(t, srvURL, stream, "", "F")
	fState := readPageRelay(t, f, "F")
	bCtx := openViewer(t, srvURL, stream, "", "B")
	b := chromiumTab{bCtx}
	bState := readPageRelay(t, b, "B")
	if bState.Parent != fState.ID {
		t.Fatalf("B's parent is %q, want F %s", bState.Parent, fState.ID)
	}
	cCtx := openViewer(t, srvURL, stream, "?relay=0", "C")
	if cs := readPageRelay(t, chromiumTab{cCtx}, "C"); cs.Parent != bState.ID {
		t.Fatalf("C's parent is %q, want B %s", cs.Parent, bState.ID)
	}
	if m := relayMode(t, bCtx); m != "pass-through" {
		t.Fatalf("B relays in mode %q, want pass-through", m)
	}
	// The payload types B receives from Firefox are the ones C's link uses.
	const ptsJS = `(async () => {
	  const out = {};
	  const add = (report, side) => report.forEach((r) => {
	    if (r.type === 'codec') (out[side] = out[side] || []).push(r.mimeType + ' ' + r.payloadType);
	  });
	  const c = window.canopy.client;
	  add(await c.pc.getStats(), 'up');
	  for (const child of c.children.values()) add(await child.pc.getStats(), 'down');
	  return out;
	})()`
	pts, err := tabEval[map[string][]string](b, ptsJS)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("B's codecs, from Firefox and to C: %v", pts)
	for _, d := range pts["down"] {
		if !slices.Contains(pts["up"], d) {
			t.Errorf("B's link to C uses %s, which Firefox's link to B does not", d)
		}
	}

	settle := waitPlaying(t, cCtx, 0, 5*time.Second).FramesDecoded
	waitPlaying(t, cCtx, settle+90, 60*time.Second)
	// Upstream first, a chain delay (3 s of frames) before C: in a new
	// link's first seconds frames queue in its pacer (README, delay per
	// pass-through hop), ~1.5 s here behind a Firefox that sends ~2 Mbps at
	// once. Then C is read first, then B: every frame C recorded, B had
	// while recording.
	for _, ctx := range []context.Context{bCtx, cCtx} {
		if _, err := evalJS[any](ctx, `window.canopy.client.relay.recordHashes(1000)`); err != nil {
			t.Fatal(err)
		}
		decoded := waitPlaying(t, cCtx, 0, 5*time.Second).FramesDecoded
		waitPlaying(t, cCtx, decoded+90, 60*time.Second)
	}
	sc := readWorker(t, cCtx)
	sb := readWorker(t, bCtx)
	for kind, pair := range map[string][2][]hashedFrame{
		"video": {frames(sb.Hashes.Video), frames(sc.Hashes.Video)},
		"audio": {frames(sb.Hashes.Audio), frames(sc.Hashes.Audio)},
	} {
		matched, missing, _ := compareFrames(pair[0], pair[1])
		t.Logf("%s: B recorded %d frames, C %d; %d of C's matched B's, %d not B's", kind, len(pair[0]), len(pair[1]), matched, missing)
		if matched < 45 || missing > 0 {
			t.Errorf("%s: C's frames are not B's byte for byte: %d matched, %d C frames B never had", kind, matched, missing)
		}
	}
	reports, err := evalJS[[]senderReport](bCtx, sendersJS)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reports {
		if r.FramesEncoded != 0 || r.Encoder != "" || r.BytesSent == 0 {
			t.Errorf("B's %s sender to C: %+v, want bytes sent and nothing encoded", r.Kind, r)
		}
	}
	waitPagePlaying(t, f, "F", 0, 5*time.Second)
}
