package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/rtp"

	"canopy/mesh"
	"canopy/mesh/framesig"
	"canopy/mesh/media"
	"canopy/mesh/media/demo"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Browser tests of source-signed frames (static/js/framesig*.js): real
// Chromium processes verify, in their receive worker, every frame a signing
// Go source sent, through pass-through Chromium relays, and refuse what a
// tampering relay changed.

// startSignedSourceOf publishes video and audio, looped, from a Go source that
// signs every frame with a fresh key (mesh.Config.SignKey: Node.Play signs).
func startSignedSourceOf(t *testing.T, server, stream string, capacity int, video, audio media.FrameReader) *mesh.Node {
	t.Helper()
	_, priv, err := framesig.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	node, err := mesh.Dial(ctx, mesh.Config{
		Server: server, Stream: stream, Role: protocol.RoleSource, Capacity: capacity,
		Tracks: mesh.TracksFor(video, audio), LoopbackOnly: true, Logger: testLogger(), SignKey: priv,
	})
	if err != nil {
		cancel()
		t.Fatalf("signed source: %v", err)
	}
	if !node.Signs() {
		t.Fatal("the source does not sign")
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = node.Play(ctx, video, audio) }()
	t.Cleanup(func() { cancel(); <-done; _ = node.Close() })
	return node
}

// demoSignedSource is startSignedSource with the demo clip (VP8 + Opus),
// or another video file with the demo's audio.
func demoSignedSource(t *testing.T, server, stream string, capacity int, videoPath string) *mesh.Node {
	t.Helper()
	video, audio, err := demo.Open()
	if err != nil {
		t.Fatal(err)
	}
	if videoPath != "" {
		v, closer, err := media.OpenFile(videoPath)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = closer.Close() })
		video = v
	}
	return startSignedSourceOf(t, server, stream, capacity, video, audio)
}

// trackCounts mirrors framesig-track.js TrackCounts.
type trackCounts struct {
	Verified   float64 `json:"verified"`
	Rejected   float64 `json:"rejected"`
	Stale      float64 `json:"stale"`
	Held       float64 `json:"held"`
	Unverified float64 `json:"unverified"`
}

// verifyState is what a tab says about the frames it checked.
type verifyState struct {
	Video        trackCounts `json:"video"`
	Audio        trackCounts `json:"audio"`
	KeyError     string      `json:"keyError"`
	LastWhy      string      `json:"lastWhy"`      // why the last rejected frame failed
	Verification string      `json:"verification"` // the stats snapshot's word
	Why          string      `json:"why"`
	Panel        string      `json:"panel"` // the stats panel's text, when shown
	Decoded      float64     `json:"decoded"`
	Reports      float64     `json:"reports"`
	Parent       string      `json:"parent"`
	// Counts of the connection that plays now.
	Current struct {
		Tampered bool        `json:"tampered"`
		Video    trackCounts `json:"video"`
	} `json:"current"`
}

const verifyStateJS = `(async () => {
  const c = window.canopy.client;
  // The decoder's count first: frames verified meanwhile make the worker's
  // count only larger (read the other way round, a frame verified and
  // decoded between the two reads showed as decoded but not verified).
  const stats = await c.stats();
  const s = c.relay ? await c.relay.stats() : null;
  const v = (s && s.verify) || {};
  const snap = c.snapshot || {};
  const player = document.querySelector('canopy-player');
  const panel = player && player.shadowRoot && player.shadowRoot.getElementById('p-signed');
  const up = c._mediaPC && c.relay ? (v.upstreams || {})[c.relay.upstreamId(c._mediaPC)] : null;
  return { video: v.video || {}, audio: v.audio || {}, keyError: v.keyError || '', lastWhy: v.lastWhy || '',
    verification: snap.verification || '', why: snap.unverifiedWhy || '', panel: panel ? panel.textContent : '',
    decoded: stats.framesDecoded || 0, reports: c.frameChecks.reports, parent: c.parentId || '',
    current: { tampered: !!(up && up.tampered), video: (up && up.video) || {} } };
})()`

func readVerify(t *testing.T, ctx context.Context) verifyState {
	t.Helper()
	v, err := evalJS[verifyState](ctx, verifyStateJS)
	if err != nil {
		t.Fatalf("read verification: %v", err)
	}
	return v
}

// pollVerify is readVerify for a page that may still be loading: the zero
// state until it answers.
func pollVerify(ctx context.Context) verifyState {
	v, _ := evalJS[verifyState](ctx, verifyStateJS)
	return v
}

// TestBrowserVerifiesSignedChain: signing Go source → Chromium A (passes
// frames through) → Chromium B. Both verify every frame they play: none
// rejected, every decoded frame one that verified, the panel says
// "verified"; B's frames verify only because A forwarded the source's bytes
// with their signatures (an A that stripped them would make B reject all).
func TestBrowserVerifiesSignedChain(t *testing.T) {
	browserTest(t)
	signedChain(t, "sigchain", "")
}

// TestBrowserVerifiesSignedChainH264 is the same with H264 video (its
// signature is an SEI NAL; Chromium re-frames the access unit on receipt).
func TestBrowserVerifiesSignedChainH264(t *testing.T) {
	browserTest(t)
	signedChain(t, "sigchain264", filepath.Join("..", "mesh", "media", "testdata", "short.h264"))
}

func signedChain(t *testing.T, stream, clip string) {
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1, BrowserMaxCapacity: 1, MaxBrowserHops: 1})
	demoSignedSource(t, srvURL, stream, 1, clip)

	a := openViewer(t, srvURL, stream, "?stats=1", "A")
	aState := readRelayState(t, a)
	b := openViewer(t, srvURL, stream, "?relay=0&stats=1", "B")
	if bs := readRelayState(t, b); bs.Parent != aState.ID {
		t.Fatalf("B's parent is %q, want A %s", bs.Parent, aState.ID)
	}
	if m := relayMode(t, a); m != "pass-through" {
		t.Fatalf("A relays in mode %q, want pass-through", m)
	}
	settle := waitPlaying(t, b, 0, 5*time.Second).FramesDecoded
	waitPlaying(t, b, settle+150, 60*time.Second)
	time.Sleep(1500 * time.Millisecond) // one more stats sample, so the panel is current
	for name, ctx := range map[string]context.Context{"A": a, "B": b} {
		v := readVerify(t, ctx)
		t.Logf("%s: %q (%s) panel %q; video %+v audio %+v; decoded %v", name, v.Verification, v.Why, v.Panel, v.Video, v.Audio, v.Decoded)
		if v.Verification != "verified" {
			t.Errorf("%s says %q (%s %s), want verified", name, v.Verification, v.Why, v.KeyError)
		}
		if v.Video.Rejected+v.Audio.Rejected != 0 || v.Video.Unverified+v.Audio.Unverified != 0 {
			t.Errorf("%s rejected or passed unchecked frames of a clean tree: video %+v audio %+v", name, v.Video, v.Audio)
		}
		if v.Video.Verified < 150 || v.Audio.Verified < 100 {
			t.Errorf("%s verified too few frames: video %+v audio %+v", name, v.Video, v.Audio)
		}
		if v.Decoded > v.Video.Verified {
			t.Errorf("%s decoded %v video frames but verified only %v", name, v.Decoded, v.Video.Verified)
		}
		if len(v.Panel) < len("verified ") || v.Panel[:len("verified ")] != "verified " {
			t.Errorf("%s's stats panel says %q, want \"verified N\"", name, v.Panel)
		}
	}
	if s := waitPlaying(t, b, 0, 5*time.Second); s.AudioPacketsReceived == 0 {
		t.Error("B received no audio")
	}
	// The tabs' stats reports carry their counts to the stats API, and
	// the dashboard labels each node with them.
	bState := readRelayState(t, b)
	for _, id := range []string{aState.ID, bState.ID} {
		waitVerifiedStats(t, srvURL, stream, id, 150)
	}
	// A tab in B's browser: no third Chromium.
	dash, closeDash := chromedp.NewContext(b)
	defer closeDash()
	if err := chromedp.Do(dash, chromedp.Navigate(srvURL+"/stats/"+stream)); err != nil {
		t.Fatal(err)
	}
	v := waitDashboard(t, dash, "the viewers' verified labels", func(v dashboardView) bool {
		return strings.HasPrefix(v.Verify[aState.ID], "verified ") && strings.HasPrefix(v.Verify[bState.ID], "verified ")
	})
	t.Logf("dashboard labels: %q", v.Verify)
}

// TestBrowserRefusesTamperedFrames: a signing Go source feeds a malicious
// relay M (server/tamper_relay_test.go: it flips bits in video frames,
// replays old ones, or injects its own) and a clean Go relay R; a Chromium
// viewer C is placed under M. C decodes no frame that failed (every decoded
// frame verified), reports M as tampered, is moved, and plays again from a
// clean parent with nothing rejected there.
func TestBrowserRefusesTamperedFrames(t *testing.T) {
	browserTest(t)
	for _, m := range []struct {
		name string
		mode tamperMode
		why  string
	}{{"flip", flipBits, "signature"}, {"replay", replayOld, "replay"}, {"inject", injectOwn, "signature"}} {
		t.Run(m.name, func(t *testing.T) { browserRefusesTampering(t, "sigtamper"+m.name, m.mode, m.why) })
	}
}

func browserRefusesTampering(t *testing.T, stream string, mode tamperMode, why string) {
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 2})
	src := demoSignedSource(t, srvURL, stream, 2, "")
	bad := startTamperRelay(t, srvURL, stream, 2, mode)
	treeNode := func(id string) tree.NodeInfo {
		var tr treeResponse
		getJSON(t, srvURL+"/api/streams/"+stream+"/tree", &tr)
		for _, n := range tr.Nodes {
			if n.ID == id {
				return n
			}
		}
		return tree.NodeInfo{}
	}
	waitFor(t, 10*time.Second, "the malicious relay under the source", func() bool { return treeNode(bad.id).Parent == src.ID() })
	good := startPeer(t, srvURL, stream, protocol.RoleRelay, 2, nil)
	waitFor(t, 10*time.Second, "the clean relay under the source", func() bool { return good.node.Parent() == src.ID() })
	// Both relays play and have earned the same slots (trust.go): on a
	// busy machine the malicious one may not have reported yet, and C
	// would go to the clean one.
	waitFor(t, 20*time.Second, "both relays trusted alike", func() bool {
		m, r := treeNode(bad.id), treeNode(good.node.ID())
		return m.Usable > 0 && m.Usable == r.Usable && m.Trust == r.Trust
	})

	c := newBrowser(t)
	logConsole(t, c, "C")
	if err := chromedp.Do(c, chromedp.Navigate(srvURL+"/watch/"+stream+"?relay=0&stats=1")); err != nil {
		t.Fatal(err)
	}
	// C starts under M (the older of two equal slots), sees forged frames,
	// and is moved.
	var first string
	waitFor(t, 30*time.Second, "C placed", func() bool { first = pollVerify(c).Parent; return first != "" })
	if first != bad.id {
		t.Fatalf("C was placed under %q, want the malicious relay %s", first, bad.id)
	}
	bad.armed.Store(true) // honest until now (it forges only once armed)
	waitFor(t, 60*time.Second, "C rejects a forged frame and reports it", func() bool {
		v := pollVerify(c)
		return v.Video.Rejected > 0 && v.Reports > 0
	})
	if w := pollVerify(c).LastWhy; w != why {
		t.Errorf("C rejected for %q, want %q", w, why)
	}
	waitFor(t, 30*time.Second, "C moved off the malicious relay", func() bool { return pollVerify(c).Parent != bad.id })
	moved := readVerify(t, c)
	t.Logf("C after the report: parent %s; %+v; relay forged %d frames", moved.Parent, moved, bad.forged.Load())
	if moved.Parent == bad.id {
		t.Fatal("C still under the malicious relay")
	}
	after := waitPlaying(t, c, moved.Decoded, 60*time.Second).FramesDecoded
	waitPlaying(t, c, after+120, 60*time.Second)
	time.Sleep(1500 * time.Millisecond)
	v := readVerify(t, c)
	t.Logf("C later: parent %s, %q panel %q; video %+v audio %+v; now playing %+v; decoded %v",
		v.Parent, v.Verification, v.Panel, v.Video, v.Audio, v.Current, v.Decoded)
	if v.Decoded > v.Video.Verified {
		t.Errorf("C decoded %v video frames but only %v verified: it played something forged", v.Decoded, v.Video.Verified)
	}
	if v.Current.Tampered || v.Current.Video.Rejected > 0 {
		t.Errorf("C's new parent %s sends frames that fail: %+v", v.Parent, v.Current)
	}
	if v.Current.Video.Verified < 100 {
		t.Errorf("C verified only %v frames from its new parent", v.Current.Video.Verified)
	}
	if treeNode(moved.Parent).Parent == bad.id {
		t.Errorf("C's new parent %s is under the malicious relay", moved.Parent)
	}
}

// signingReader signs each frame a reader gives, as Node.Play does for a
// source with a SignKey (the GOP source below writes frames itself).
type signingReader struct {
	media.FrameReader
	s *framesig.Signer
}

func (r *signingReader) ReadFrame() (media.Frame, error) {
	f, err := r.FrameReader.ReadFrame()
	if err == nil {
		f.Data = r.s.Sign(f.Data)
	}
	return f, err
}

// startGOPSourceSigned is startGOPSource (a 10 s GOP clip that ignores
// keyframe requests) whose frames are signed when sign is set.
func startGOPSourceSigned(t *testing.T, server, stream, clip string, sign bool) *gopSource {
	t.Helper()
	f, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	ivf, err := media.NewIVFReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var video media.FrameReader = ivf
	cfg := mesh.Config{
		Server: server, Stream: stream, Role: protocol.RoleSource, Capacity: 32,
		Tracks: mesh.TracksFor(video), LoopbackOnly: true, Logger: testLogger(),
	}
	if sign {
		_, priv, err := framesig.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		s, err := framesig.NewSigner(priv, video.Codec().MimeType)
		if err != nil {
			t.Fatal(err)
		}
		cfg.SignKey = priv
		video = &signingReader{FrameReader: ivf, s: s}
	}
	ctx, cancel := context.WithCancel(context.Background())
	node, err := mesh.Dial(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("source: %v", err)
	}
	src := &gopSource{node: node, cancel: cancel, done: make(chan struct{}), sent: make(map[uint32]time.Time)}
	pk, err := media.NewPacketizer(video.Codec())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(src.done)
		_ = media.Play(ctx, video, pk, func(pkts []*rtp.Packet, fr media.Frame) error {
			now := time.Now()
			src.mu.Lock()
			src.sent[pkts[0].Timestamp] = now
			if fr.Keyframe {
				src.keys = append(src.keys, now)
			}
			src.frame++
			src.mu.Unlock()
			return node.WriteFrame("video", pkts, now)
		})
	}()
	t.Cleanup(func() { cancel(); <-src.done; _ = node.Close() })
	return src
}

// TestChromiumTimeToFirstFrameSigned measures what verification costs a
// joining Chromium: two 10 s GOP sources that ignore keyframe requests, one
// signing its frames and one not, and tabs that join each in turn at random
// points of the GOP (the source's cached GOP reaches them as a burst, every
// frame of which the signed tab checks before decoding). It prints both
// medians and fails only if a tab shows no picture. Run it with
//
//	CANOPY_TTFF_SIGNED=10 go test ./server -run TestChromiumTimeToFirstFrameSigned -v -count=1
//
// (CANOPY_TTFF_SIGNED is the number of joins per mode.)
func TestChromiumTimeToFirstFrameSigned(t *testing.T) {
	joins, _ := strconv.Atoi(os.Getenv("CANOPY_TTFF_SIGNED"))
	if joins <= 0 {
		t.Skip("a measurement: set CANOPY_TTFF_SIGNED=<joins per mode>")
	}
	_, url := startServer(t, tree.Config{SourceCapacity: 32, BrowserMaxCapacity: -1})
	srcs := map[string]*gopSource{
		"on":  startGOPSourceSigned(t, url, "ttffsigned", "testdata/ttff_gop10s.ivf", true),
		"off": startGOPSourceSigned(t, url, "ttffplain", "testdata/ttff_gop10s.ivf", false),
	}
	pages := map[string]string{"on": url + "/watch/ttffsigned", "off": url + "/watch/ttffplain"}
	browser := newBrowser(t)
	time.Sleep(500 * time.Millisecond) // let the sources' first GOP start
	decoded := map[string][]float64{}
	presented := map[string][]float64{}
	afterConnect := map[string][]float64{} // connected → first decoded: the part verification may add to
	misses := 0
	for i := range joins {
		for _, mode := range []string{"on", "off"} {
			time.Sleep(time.Duration(rand.Int64N(int64(1500 * time.Millisecond))))
			j, ok := ttffOne(t, browser, pages[mode], srcs[mode])
			if !ok {
				misses++
				continue
			}
			t.Logf("join %2d verification %-3s: %4.0f ms into the GOP; connected %4.0f, decoded %4.0f, presented %4.0f ms; %d frames in 3 s",
				i, mode, float64(j.intoGOP.Milliseconds()), j.connected, j.decoded, j.presented, j.framesIn3s)
			decoded[mode] = append(decoded[mode], j.decoded)
			afterConnect[mode] = append(afterConnect[mode], j.decoded-j.connected)
			presented[mode] = append(presented[mode], j.presented)
		}
	}
	for _, mode := range []string{"on", "off"} {
		if len(decoded[mode]) == 0 {
			t.Fatalf("no tab showed a picture with verification %s", mode)
		}
		fmt.Printf("chromium ttff, GOP 10 s, verification %-3s (%d joins): navigation → first decoded median %.0f max %.0f ms; → first presented median %.0f max %.0f ms; connected → decoded median %.0f max %.0f ms\n",
			mode, len(decoded[mode]), quantile(decoded[mode], 0.5), quantile(decoded[mode], 1), quantile(presented[mode], 0.5), quantile(presented[mode], 1),
			quantile(afterConnect[mode], 0.5), quantile(afterConnect[mode], 1))
	}
	if misses > 0 {
		t.Errorf("%d tabs showed no picture within 15 s", misses)
	}
}

// TestBrowserReencodingRelayChildIsUnverified: signing Go source → Chromium
// A relaying by re-encoding (?passthrough=0) → Chromium B. A verifies and
// strips before its decoder; B's frames are A's encoder's, unsigned: the
// server tells B its path cannot be verified, B plays them unchecked and
// says "unverified", and the tree API marks it.
func TestBrowserReencodingRelayChildIsUnverified(t *testing.T) {
	browserTest(t)
	const stream = "sigreencode"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1, BrowserMaxCapacity: 1})
	demoSignedSource(t, srvURL, stream, 1, "")
	a := openViewer(t, srvURL, stream, "?passthrough=0&stats=1", "A")
	if m := relayMode(t, a); m != "re-encode" {
		t.Fatalf("A relays in mode %q, want re-encode", m)
	}
	b := openViewer(t, srvURL, stream, "?relay=0&stats=1", "B")
	bs := readRelayState(t, b)
	if bs.Parent != readRelayState(t, a).ID {
		t.Fatalf("B's parent is %q, want A", bs.Parent)
	}
	f := waitPlaying(t, b, 0, 5*time.Second).FramesDecoded
	waitPlaying(t, b, f+90, 60*time.Second)
	time.Sleep(1500 * time.Millisecond)
	va, vb := readVerify(t, a), readVerify(t, b)
	t.Logf("A: %q video %+v; B: %q (%s) panel %q video %+v", va.Verification, va.Video, vb.Verification, vb.Why, vb.Panel, vb.Video)
	if va.Verification != "verified" || va.Video.Rejected != 0 || va.Video.Verified < 90 {
		t.Errorf("A (under the source) did not verify its frames: %q %+v", va.Verification, va.Video)
	}
	if vb.Verification != "unverified" || vb.Panel != "unverified" {
		t.Errorf("B says %q (panel %q), want unverified", vb.Verification, vb.Panel)
	}
	if vb.Video.Rejected+vb.Audio.Rejected != 0 || vb.Video.Unverified == 0 {
		t.Errorf("B rejected re-encoded frames or checked them: video %+v audio %+v", vb.Video, vb.Audio)
	}
	var tr map[string]any
	getJSON(t, srvURL+"/api/streams/"+stream+"/tree", &tr)
	nodes, _ := tr["nodes"].([]any)
	marked := false
	for _, n := range nodes {
		m, _ := n.(map[string]any)
		if m["id"] == bs.ID {
			marked, _ = m["unverified"].(bool)
		}
	}
	if !marked {
		t.Errorf("the tree API does not mark B unverified: %v", nodes)
	}
	// The dashboard draws B's edge as unverified.
	dash := newTab(t, a)
	if err := chromedp.Do(dash, chromedp.Navigate(srvURL+"/stats/"+stream)); err != nil {
		t.Fatal(err)
	}
	var edges float64
	waitFor(t, 30*time.Second, "the dashboard marks B's edge unverified", func() bool {
		edges, _ = evalJS[float64](dash, `document.querySelectorAll('#tree g.edge[data-trust="unverified"]').length`)
		return edges == 1
	})
}

// TestFirefoxVerifiesSignedFrames: Firefox has the standard receive
// transform and Ed25519 (not createEncodedStreams, so it relays by
// re-encoding): under a signing Go source it checks and strips every frame
// as Chromium does, rejects none, and says "verified".
func TestFirefoxVerifiesSignedFrames(t *testing.T) {
	const stream = "sigfirefox"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1})
	demoSignedSource(t, srvURL, stream, 1, "")
	f := openFirefoxViewer(t, srvURL, stream, "?stats=1", "F")
	first := waitPagePlaying(t, f, "F", 0, 5*time.Second)
	waitPagePlaying(t, f, "F", first.FramesDecoded+60, 60*time.Second)
	time.Sleep(1500 * time.Millisecond)
	v, err := tabEval[verifyState](f, verifyStateJS)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Firefox: %q (%s) panel %q; video %+v audio %+v; decoded %v", v.Verification, v.Why, v.Panel, v.Video, v.Audio, v.Decoded)
	if v.Verification != "verified" || v.Video.Rejected+v.Audio.Rejected != 0 || v.Video.Verified < 60 || v.Audio.Verified < 50 {
		t.Errorf("Firefox did not verify the signed stream: %+v", v)
	}
	if v.Decoded > v.Video.Verified {
		t.Errorf("Firefox decoded %v video frames but verified only %v", v.Decoded, v.Video.Verified)
	}
}

// TestFirefoxPlaysLateRepairedFrames: a signing Go source → an honest relay
// M on a lossy link (every 60 frames, 6 frames come after the one behind
// them, as NACK repairs do: server/tamper_relay_test.go lateRepairs) →
// Firefox. The browser hands its transform each frame as it completes, so
// the late frames reach the verifier out of order: each must play once,
// and none read as a replay (in CI, a Firefox under load reported its
// honest parent for that). TestBrowserRelayForwardsLateRepairedFrames
// checks the same in Chromium, as a relay and below one.
func TestFirefoxPlaysLateRepairedFrames(t *testing.T) {
	const stream = "siglatefirefox"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1})
	m := startLateRelay(t, srvURL, stream)
	v := openFirefoxViewer(t, srvURL, stream, "?relay=0&stats=1", "F")
	placed, ok, err := pollPage(v, verifyStateJS, 30*time.Second, func(s verifyState) bool { return s.Parent != "" })
	if !ok {
		t.Fatalf("the viewer was not placed: %+v (%v)", placed, err)
	}
	if placed.Parent != m.id {
		t.Fatalf("the viewer plays from %s, want the lossy relay %s", placed.Parent, m.id)
	}
	waitPagePlaying(t, v, "the viewer", 0, 30*time.Second)
	m.armed.Store(true)
	waitFor(t, 60*time.Second, "the relay delayed 3 runs of frames", func() bool { return m.forged.Load() >= 18 })
	now, err := tabEval[verifyState](v, verifyStateJS)
	if err != nil {
		t.Fatal(err)
	}
	waitPagePlaying(t, v, "the viewer", now.Decoded+60, 60*time.Second)
	s, err := tabEval[verifyState](v, verifyStateJS)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %d late frames: %q panel %q; video %+v audio %+v; decoded %v; parent %s",
		m.forged.Load(), s.Verification, s.Panel, s.Video, s.Audio, s.Decoded, s.Parent)
	if s.Video.Rejected+s.Audio.Rejected != 0 || s.Reports != 0 || s.Verification != "verified" {
		t.Errorf("the viewer refused an honest relay's late frames: %+v", s)
	}
	if s.Parent != m.id {
		t.Errorf("the viewer was moved off the honest relay, to %s", s.Parent)
	}
	if s.Decoded > s.Video.Verified {
		t.Errorf("decoded %v video frames but verified only %v", s.Decoded, s.Video.Verified)
	}
}
