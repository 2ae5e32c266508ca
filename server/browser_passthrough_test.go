package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Browser tests of the pass-through relay (static/js/relay-passthrough.js):
// real Chromium processes, one per viewer (a background tab of a shared
// headless browser stops presenting frames), relaying to each other.

// logConsole copies a tab's console warnings and errors into the test log,
// so a failing relay says why.
func logConsole(t *testing.T, ctx context.Context, name string) {
	var done atomic.Bool
	t.Cleanup(func() { done.Store(true) }) // runs before the browser's own cleanup stops it
	err := chromedp.Listen(ctx, func(ev any) {
		if done.Load() {
			return
		}
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type != runtime.ConsoleAPICalledTypeWarning && e.Type != runtime.ConsoleAPICalledTypeError && e.Type != runtime.ConsoleAPICalledTypeInfo {
				return
			}
			var parts []string
			for _, a := range e.Args {
				if len(a.Value) > 0 {
					parts = append(parts, string(a.Value))
				} else {
					parts = append(parts, a.Description)
				}
			}
			t.Logf("%s console.%s: %s", name, e.Type, strings.Join(parts, " "))
		case *runtime.EventExceptionThrown:
			d := e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				d += " " + e.ExceptionDetails.Exception.Description
			}
			t.Logf("%s exception: %s", name, d)
		}
	})
	if err != nil {
		t.Fatalf("listen to %s: %v", name, err)
	}
}

// openViewer starts a Chromium of its own on /watch/<stream><query> and
// waits until it plays.
func openViewer(t *testing.T, srvURL, stream, query, name string) context.Context {
	t.Helper()
	ctx := newBrowser(t)
	logConsole(t, ctx, name)
	if err := chromedp.Do(ctx, chromedp.Navigate(srvURL+"/watch/"+stream+query)); err != nil {
		t.Fatal(err)
	}
	t.Logf("viewer %s opened", name)
	waitPlaying(t, ctx, 10, 90*time.Second)
	t.Logf("viewer %s plays", name)
	return ctx
}

// hashedFrame is one frame a tab's relay worker saw: type letter, FNV-1a
// and length of the payload, and when (ms since the epoch).
type hashedFrame struct {
	Hash string
	At   float64
}

// relayWorkerStats is what PassthroughRelay.stats() returns, in part.
type relayWorkerStats struct {
	Received  float64 `json:"received"`
	Forwarded float64 `json:"forwarded"`
	Keyframes float64 `json:"keyframeRequests"`
	Hashes    struct {
		Video [][2]any `json:"video"`
		Audio [][2]any `json:"audio"`
	} `json:"hashes"`
}

func readWorker(t *testing.T, ctx context.Context) relayWorkerStats {
	t.Helper()
	s, err := evalJS[relayWorkerStats](ctx, `window.canopy.client.relay.stats()`)
	if err != nil {
		t.Fatalf("read relay worker: %v", err)
	}
	return s
}

func frames(list [][2]any) []hashedFrame {
	out := make([]hashedFrame, 0, len(list))
	for _, e := range list {
		h, _ := e[0].(string)
		at, _ := e[1].(float64)
		out = append(out, hashedFrame{h, at})
	}
	return out
}

// maxChainDelayMs bounds how much later than up a downstream tab may get a
// frame: hops measured here take tens of ms, and up to ~1 s while a new
// link's bandwidth estimate ramps up.
const maxChainDelayMs = 3000

// compareFrames checks that every frame down got while up was recording
// (up's recording began at least maxChainDelayMs before down got it) is
// one up had, byte-identical (same hash), and returns how many of down's
// frames matched, how many up never had, and the delays from up to down.
// The test clips loop every second and a still picture repeats identical
// frames, so a frame's copy is the latest up had before down did (50 ms
// allows for the two processes' clocks): hops take less than a loop.
func compareFrames(up, down []hashedFrame) (matched, missing int, delays []float64) {
	if len(up) == 0 {
		return 0, 0, nil
	}
	index := map[string][]int{}
	for i, f := range up {
		index[f.Hash] = append(index[f.Hash], i)
	}
	for _, f := range down {
		copyAt := -1
		for _, i := range index[f.Hash] {
			if up[i].At > f.At+50 {
				break
			}
			if up[i].At >= f.At-maxChainDelayMs {
				copyAt = i
			}
		}
		switch {
		case copyAt >= 0:
			matched++
			delays = append(delays, f.At-up[copyAt].At)
		case f.At-maxChainDelayMs >= up[0].At && f.At <= up[len(up)-1].At:
			missing++ // up was recording whenever this frame could have left it
		}
	}
	return matched, missing, delays
}

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// senderReport is what a relaying tab's links to its children report.
type senderReport struct {
	Kind          string  `json:"kind"`
	FramesEncoded float64 `json:"framesEncoded"`
	FramesSent    float64 `json:"framesSent"`
	BytesSent     float64 `json:"bytesSent"`
	PacketsSent   float64 `json:"packetsSent"`
	Encoder       string  `json:"encoder"`
}

const sendersJS = `(async () => {
  const out = [];
  for (const child of window.canopy.client.children.values()) {
    (await child.pc.getStats()).forEach((r) => {
      if (r.type === 'outbound-rtp') out.push({kind: r.kind, framesEncoded: r.framesEncoded || 0,
        framesSent: r.framesSent || 0, bytesSent: r.bytesSent || 0, encoder: r.encoderImplementation || ''});
    });
  }
  return out;
})()`

// parentIn is id's parent in tr ("" if it is not there, or queued).
func parentIn(tr treeResponse, id string) string {
	for _, n := range tr.Nodes {
		if n.ID == id {
			return n.Parent
		}
	}
	return ""
}

// waitTree waits until the stream's tree is as want says; on a timeout
// it logs every node (who was moved, queued or held, and why not) first.
func waitTree(t *testing.T, srvURL, stream string, within time.Duration, what string, want func(treeResponse) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var tr treeResponse
		getJSON(t, srvURL+"/api/streams/"+stream+"/tree", &tr)
		if want(tr) {
			return
		}
		if time.Now().After(deadline) {
			for _, n := range tr.Nodes {
				t.Logf("tree: %s parent %q trust %s usable %d/%d queued %v passthrough %v hops %d children %v",
					n.ID, n.Parent, n.Trust, n.Usable, n.Capacity, n.Queued, n.Passthrough, n.Hops, n.Children)
			}
			t.Fatalf("timed out after %v waiting for the tree to have %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func relayMode(t *testing.T, ctx context.Context) string {
	t.Helper()
	m, err := evalJS[string](ctx, `window.canopy.client.relayMode`)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestBrowserPassthroughChain builds Go source → Chromium A → Chromium B →
// Chromium C with a re-encode bound of one (so the chain exists only because
// A and B pass frames through), and checks that C's video and audio frames
// are byte-identical to what A received, and that A's and B's senders to
// their children encode nothing.
func TestBrowserPassthroughChain(t *testing.T) {
	browserTest(t)
	passthroughChain(t, "passchain", func(srvURL, stream string) { startSource(t, srvURL, stream, 1) })
}

// TestBrowserPassthroughChainH264 is the same chain with an H264 source
// (Constrained Baseline, packetization mode 1, from mesh/media's test clip):
// the relays' offers carry the Go peers' H264 payload type, not Chromium's.
func TestBrowserPassthroughChainH264(t *testing.T) {
	browserTest(t)
	passthroughChain(t, "passchain264", func(srvURL, stream string) {
		startClipSource(t, srvURL, stream, 1, filepath.Join("..", "mesh", "media", "testdata", "short.h264"))
	})
}

func passthroughChain(t *testing.T, stream string, source func(srvURL, stream string)) {
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1, BrowserMaxCapacity: 1, MaxBrowserHops: 1})
	source(srvURL, stream)

	a := openViewer(t, srvURL, stream, "?stats=1", "A")
	aState := readRelayState(t, a)
	b := openViewer(t, srvURL, stream, "", "B")
	bState := readRelayState(t, b)
	if bState.Parent != aState.ID {
		t.Fatalf("B's parent is %q, want A %s", bState.Parent, aState.ID)
	}
	c := openViewer(t, srvURL, stream, "?relay=0", "C")
	cID := readRelayState(t, c).ID
	waitTree(t, srvURL, stream, 30*time.Second, "C under B under A", func(tr treeResponse) bool {
		return parentIn(tr, cID) == bState.ID && parentIn(tr, bState.ID) == aState.ID
	})
	for name, ctx := range map[string]context.Context{"A": a, "B": b} {
		if m := relayMode(t, ctx); m != "pass-through" {
			t.Errorf("%s relays in mode %q, want pass-through", name, m)
		}
	}
	var tr treeResponse
	getJSON(t, srvURL+"/api/streams/"+stream+"/tree", &tr)
	for _, n := range tr.Nodes {
		if n.Kind == "browser" && (!n.Passthrough || n.Hops != 0) {
			t.Errorf("tree node %s: passthrough %v hops %d, want pass-through with no re-encode above", n.ID, n.Passthrough, n.Hops)
		}
	}

	// Past C's first seconds (its link's bandwidth estimate ramps up from
	// Chromium's 300 kbps start; a pass-through sender cannot slow down, so
	// frames queue in the pacer meanwhile), record what each worker
	// receives, for a few seconds of stream.
	settle := waitPlaying(t, c, 0, 5*time.Second).FramesDecoded
	waitPlaying(t, c, settle+300, 60*time.Second)
	// Upstream first, each a chain delay (3 s of frames) before the next,
	// and read downstream first: every frame C records, B and A had while
	// recording.
	for _, ctx := range []context.Context{a, b, c} {
		if _, err := evalJS[any](ctx, `window.canopy.client.relay.recordHashes(1500)`); err != nil {
			t.Fatal(err)
		}
		decoded := waitPlaying(t, c, 0, 5*time.Second).FramesDecoded
		waitPlaying(t, c, decoded+90, 60*time.Second)
	}
	framesC := waitPlaying(t, c, 0, 5*time.Second).FramesDecoded
	waitPlaying(t, c, framesC+60, 60*time.Second)
	sc, sb, sa := readWorker(t, c), readWorker(t, b), readWorker(t, a)

	for _, kind := range []string{"video", "audio"} {
		pick := func(s relayWorkerStats) []hashedFrame {
			if kind == "video" {
				return frames(s.Hashes.Video)
			}
			return frames(s.Hashes.Audio)
		}
		fa, fb, fc := pick(sa), pick(sb), pick(sc)
		matched, missing, _ := compareFrames(fa, fc)
		t.Logf("%s: A recorded %d frames, B %d, C %d; C matched %d of A's, %d not in A", kind, len(fa), len(fb), len(fc), matched, missing)
		if matched < 60 || missing > 0 {
			t.Errorf("%s: C's frames are not A's byte for byte: %d matched, %d C frames A never had", kind, matched, missing)
		}
		if kind == "video" {
			_, _, dAB := compareFrames(fa, fb)
			_, _, dBC := compareFrames(fb, fc)
			t.Logf("video delay per pass-through hop (worker to worker): A→B p50 %.1f ms p99 %.1f ms (%d frames); B→C p50 %.1f ms p99 %.1f ms (%d frames)",
				quantile(dAB, 0.5), quantile(dAB, 0.99), len(dAB), quantile(dBC, 0.5), quantile(dBC, 0.99), len(dBC))
		}
	}

	for name, ctx := range map[string]context.Context{"A": a, "B": b} {
		reports, err := evalJS[[]senderReport](ctx, sendersJS)
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]bool{}
		for _, r := range reports {
			kinds[r.Kind] = true
			if r.FramesEncoded != 0 || r.Encoder != "" {
				t.Errorf("%s's %s sender to its child encodes: %+v", name, r.Kind, r)
			}
			if r.BytesSent == 0 {
				t.Errorf("%s's %s sender sent nothing: %+v", name, r.Kind, r)
			}
		}
		if !kinds["video"] || !kinds["audio"] {
			t.Errorf("%s's child link reports %v, want video and audio", name, reports)
		}
		t.Logf("%s sends: %+v", name, reports)
	}
	if s := waitPlaying(t, c, 0, 5*time.Second); s.AudioPacketsReceived == 0 {
		t.Error("C received no audio")
	}
	t.Logf("workers: A %s, B %s", workerLine(sa), workerLine(sb))
}

func workerLine(s relayWorkerStats) string {
	return fmt.Sprintf("received %.0f forwarded %.0f keyframe requests %.0f", s.Received, s.Forwarded, s.Keyframes)
}

// childPlayback is what a watching tab says about its picture and its
// connection to its parent.
type childPlayback struct {
	Frames     float64 `json:"frames"`
	Marked     bool    `json:"marked"`
	Freezes    float64 `json:"freezes"`
	FreezeSecs float64 `json:"freezeSecs"`
	Parent     string  `json:"parent"`
}

const childPlaybackJS = `(async () => {
  const c = window.canopy.client;
  const out = {frames: 0, marked: !!(c.pc && c.pc.__canopyMark), freezes: 0, freezeSecs: 0, parent: c.parentId || ''};
  if (c.pc) (await c.pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') {
      out.frames = r.framesDecoded || 0; out.freezes = r.freezeCount || 0; out.freezeSecs = r.totalFreezesDuration || 0;
    }
  });
  return out;
})()`

// TestBrowserPassthroughParentSwitch: source → Go relay → Chromium A →
// Chromium B. The Go relay crashes and A moves to the source (Go → Go); A's
// link to B stays the same connection with the same description (no
// re-negotiation), and B's picture keeps moving: its decoded-frame count
// never stops for long and grows well past the switch.
func TestBrowserPassthroughParentSwitch(t *testing.T) {
	browserTest(t)
	const stream = "passswitch"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1, BrowserMaxCapacity: 1})
	src := startSource(t, srvURL, stream, 1)
	proxy := startProxy(t, srvURL)
	relay := startPeer(t, proxy.url(), stream, protocol.RoleRelay, 1, nil)
	waitFor(t, 10*time.Second, "Go relay placed under the source", func() bool { return relay.node.Parent() == src.node.ID() })

	a := openViewer(t, srvURL, stream, "", "A")
	if s := readRelayState(t, a); s.Parent != relay.node.ID() {
		t.Fatalf("A's parent is %q, want the Go relay", s.Parent)
	}
	b := openViewer(t, srvURL, stream, "?relay=0", "B")
	if m := relayMode(t, a); m != "pass-through" {
		t.Fatalf("A relays in mode %q", m)
	}
	const markJS = `(() => { const c = window.canopy.client; c.pc.__canopyMark = 1;
	  const [child] = c.children.values(); if (!child) return '';
	  child.pc.__canopyMark = 1; return child.pc.localDescription.sdp; })()`
	if _, err := evalJS[string](b, markJS); err != nil {
		t.Fatal(err)
	}
	sdpBefore, err := evalJS[string](a, markJS)
	if err != nil || sdpBefore == "" {
		t.Fatalf("A has no child link: %v", err)
	}
	// Past the first seconds of B's link (its bandwidth estimate ramps up).
	steady := waitPlaying(t, b, 0, 5*time.Second).FramesDecoded
	waitPlaying(t, b, steady+150, 60*time.Second)
	before, err := evalJS[childPlayback](b, childPlaybackJS)
	if err != nil {
		t.Fatal(err)
	}

	proxy.cutAll() // the Go relay's signaling drops: a crash to the server
	var longest, stalledFor time.Duration
	last := before
	lastMove := time.Now()
	deadline := time.Now().Add(60 * time.Second)
	switched := false
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		p, err := evalJS[childPlayback](b, childPlaybackJS)
		if err != nil {
			continue
		}
		if p.Frames > last.Frames {
			lastMove = time.Now()
		}
		stalledFor = time.Since(lastMove)
		longest = max(longest, stalledFor)
		last = p
		if !switched {
			switched = readRelayState(t, a).Parent == src.node.ID()
		}
		if switched && p.Frames > before.Frames+150 {
			break
		}
	}
	if !switched {
		t.Fatal("A never moved to the source")
	}
	t.Logf("B across A's parent switch: frames %v → %v, longest stall %v, freezes %v (%.2f s) before %v (%.2f s)",
		before.Frames, last.Frames, longest, last.Freezes, last.FreezeSecs, before.Freezes, before.FreezeSecs)
	if last.Frames <= before.Frames+150 {
		t.Errorf("B decoded %v frames after the switch, want more than 150 (a frozen picture)", last.Frames-before.Frames)
	}
	if !last.Marked || last.Parent != readRelayState(t, a).ID {
		t.Errorf("B's connection changed (marked %v, parent %q): A's parent switch reached it", last.Marked, last.Parent)
	}
	sdpAfter, err := evalJS[string](a, `(() => { const [child] = window.canopy.client.children.values();
	  return child && child.pc.__canopyMark ? child.pc.localDescription.sdp : ''; })()`)
	if err != nil || sdpAfter != sdpBefore {
		t.Errorf("A's link to B was re-negotiated or replaced (err %v)", err)
	}
	w := readWorker(t, a)
	t.Logf("A's worker: %s", workerLine(w))
}

// TestBrowserRelayForwardsLateRepairedFrames: a signing Go source → an
// honest Go relay M on a lossy link (every 60 frames, 6 come after the one
// behind them, as NACK repairs do: tamper_relay_test.go lateRepairs) →
// Chromium A (passes frames through) → Chromium B. A's transform gets the
// late frames after newer ones: its verifier must play each once (read as
// replays, a Chromium viewer under M rejected 18 frames, held 396 and
// reported M 6 times),
// and it must forward them (B's next frames reference them), not drop them
// as repeats: dropped, B froze to the next keyframe each time and decoded a
// fifth of what A did.
func TestBrowserRelayForwardsLateRepairedFrames(t *testing.T) {
	browserTest(t)
	const stream = "passlate"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1, BrowserMaxCapacity: 1})
	m := startLateRelay(t, srvURL, stream)
	a := openViewer(t, srvURL, stream, "?stats=1", "A")
	b := openViewer(t, srvURL, stream, "?relay=0&stats=1", "B")
	if s := readRelayState(t, b); s.Parent != readRelayState(t, a).ID {
		t.Fatalf("B's parent is %q, want A", s.Parent)
	}
	if mode := relayMode(t, a); mode != "pass-through" {
		t.Fatalf("A relays in mode %q", mode)
	}
	const heldJS = `window.canopy.client.relay.stats().then((s) => { const [k] = Object.values(s.children); return k ? k.video.held : -1; })`
	steady := waitPlaying(t, b, 0, 30*time.Second).FramesDecoded
	waitPlaying(t, b, steady+30, 30*time.Second)
	read := func() (float64, float64, float64) {
		pa, err1 := evalJS[childPlayback](a, childPlaybackJS)
		pb, err2 := evalJS[childPlayback](b, childPlaybackJS)
		held, err3 := evalJS[float64](a, heldJS)
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Fatal(err)
		}
		return pa.Frames, pb.Frames, held
	}
	a0, b0, held0 := read()
	m.armed.Store(true)
	waitFor(t, 60*time.Second, "the relay delayed 4 runs of frames", func() bool { return m.forged.Load() >= 24 })
	// Past the last run's repairs: B decodes what A forwarded.
	time.Sleep(time.Second)
	a1, b1, held1 := read()
	va, vb := readVerify(t, a), readVerify(t, b)
	t.Logf("over %d late frames: A decoded %.0f, B %.0f; A held %.0f of B's; A video %+v, B video %+v",
		m.forged.Load(), a1-a0, b1-b0, held1-held0, va.Video, vb.Video)
	if held1-held0 > 2 {
		t.Errorf("A held back %.0f video frames from B: it dropped the late ones", held1-held0)
	}
	// B lags A by its jitter buffer, which grows to absorb the late frames
	// (100–200 ms): 0.70–0.98 of A's frames here; 0.16–0.25 when A
	// dropped the late ones.
	if b1-b0 < 0.5*(a1-a0) {
		t.Errorf("B decoded %.0f frames while A decoded %.0f: B froze on the frames A did not forward", b1-b0, a1-a0)
	}
	if va.Video.Rejected+va.Audio.Rejected != 0 || va.Reports != 0 || va.Verification != "verified" {
		t.Errorf("A refused the honest relay's late frames: %+v", va)
	}
	if vb.Video.Rejected != 0 || vb.Reports != 0 {
		t.Errorf("B rejected frames an honest path forwarded: %+v", vb)
	}
}
