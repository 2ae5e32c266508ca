package main

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// noTransformJS runs before the page's scripts: the tab has neither the
// standard receive transform nor Chromium's encoded streams, as a browser
// without them (or the web component on another origin, whose worker
// cannot start) has. The page never sees the constructor again; the test
// keeps it to watch what N's decoder is handed: every receiver gets, in its
// track event before the page's own listeners, a transform of the test's
// that counts the frames reaching the decoder and those still ending in a
// VP8/Opus signature trailer (version 1, magic "CS": framesig.HasTrailer),
// and passes each on unchanged. The page's CSP allows no blob: worker; the
// test bypasses it for this tab.
const noTransformJS = `(() => {
  const RST = window.RTCRtpScriptTransform;
  delete window.RTCRtpScriptTransform;
  if (window.RTCRtpSender) delete RTCRtpSender.prototype.createEncodedStreams;
  if (window.RTCRtpReceiver) delete RTCRtpReceiver.prototype.createEncodedStreams;
  const src = "const counts = {video: {frames: 0, trailer: 0}, audio: {frames: 0, trailer: 0}};" +
    "onrtctransform = (ev) => { const t = ev.transformer; const k = t.options.kind;" +
    " t.readable.pipeThrough(new TransformStream({transform(f, c) { const d = new Uint8Array(f.data); const n = d.length;" +
    " counts[k].frames++; if (n >= 75 && d[n-3] === 1 && d[n-2] === 67 && d[n-1] === 83) counts[k].trailer++; c.enqueue(f); }})).pipeTo(t.writable); };" +
    "onmessage = () => postMessage(counts);";
  let w = null;
  const probe = () => {
    if (!w) {
      w = new Worker(URL.createObjectURL(new Blob([src], {type: 'text/javascript'})));
      w.onerror = (e) => console.warn('probe worker error', e.message);
      Object.defineProperty(window, '__probe', {value: w, enumerable: false});
    }
    return w;
  };
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends PC {
    constructor(...args) {
      super(...args);
      this.addEventListener('track', (ev) => {
        try { ev.receiver.transform = new RST(probe(), {kind: ev.track.kind}); } catch (e) { console.warn('probe', e); }
      });
    }
  };
})()`

const probeReadJS = `new Promise((resolve) => {
  if (!window.__probe) return resolve({video: {frames: 0, trailer: 0}, audio: {frames: 0, trailer: 0}});
  window.__probe.onmessage = (e) => resolve(e.data);
  window.__probe.postMessage(0);
})`

type probeCounts struct {
	Video struct{ Frames, Trailer float64 } `json:"video"`
	Audio struct{ Frames, Trailer float64 } `json:"audio"`
}

// audioPlay is what the playing connection's audio receiver decoded.
type audioPlay struct {
	Received  float64 `json:"received"`  // totalSamplesReceived
	Decoded   float64 `json:"decoded"`   // totalSamplesDecoded, where Chromium reports it
	Concealed float64 `json:"concealed"` // concealedSamples
	Silent    float64 `json:"silent"`    // silentConcealedSamples
	Packets   float64 `json:"packets"`
	Declared  bool    `json:"declared"` // the hello said noVerify
	Worker    bool    `json:"worker"`   // a receive worker exists
}

const audioPlayJS = `(async () => {
  const c = window.canopy.client;
  const out = {received: 0, decoded: 0, concealed: 0, silent: 0, packets: 0,
    declared: !!c.frameChecks.declaredNoVerify, worker: !!c.relay};
  if (!c._mediaPC) return out;
  const r = await c._mediaPC.getStats();
  r.forEach((s) => {
    if (s.type !== 'inbound-rtp' || s.kind !== 'audio') return;
    out.received += s.totalSamplesReceived || 0;
    out.decoded += s.totalSamplesDecoded || 0;
    out.concealed += s.concealedSamples || 0;
    out.silent += s.silentConcealedSamples || 0;
    out.packets += s.packetsReceived || 0;
  });
  return out;
})()`

// TestBrowserWithoutTransformGetsStrippedFrames: a signing Go source feeds
// a Go relay R (the source's only child, with room to spare). A Chromium
// tab N whose receive transforms are removed before its scripts run says
// noVerify in its hello; the server holds its own relay node, hangs N
// below it and never below R, which forwards the VP8/Opus trailers; that
// node strips them for N alone. N decodes video that keeps advancing and
// audio with little concealment, says "unverified" (no transform), and the
// tree API marks it. A normal Chromium V beside it still verifies every
// frame, wherever it hangs (the server's relay strips only for N).
func TestBrowserWithoutTransformGetsStrippedFrames(t *testing.T) {
	browserTest(t)
	const stream = "signoverify"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1})
	src := demoSignedSource(t, srvURL, stream, 1, "")
	relay := startPeer(t, srvURL, stream, protocol.RoleRelay, 4, nil)
	waitFor(t, 20*time.Second, "the Go relay under the source", func() bool { return relay.node.Parent() == src.ID() })

	n := newBrowser(t)
	logConsole(t, n, "N")
	if err := chromedp.Do(n, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, page.SetBypassCSP, page.SetBypassCSPParams{Enabled: true}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: noTransformJS})
		return err
	})); err != nil {
		t.Fatalf("init script: %v", err)
	}
	if err := chromedp.Do(n, chromedp.Navigate(srvURL+"/watch/"+stream+"?relay=0&stats=1")); err != nil {
		t.Fatal(err)
	}
	first := waitPlaying(t, n, 10, 90*time.Second)
	ns := readRelayState(t, n)

	var tr treeResponse
	var nInfo, parentInfo tree.NodeInfo
	waitFor(t, 20*time.Second, "N in the tree API", func() bool {
		getJSON(t, srvURL+"/api/streams/"+stream+"/tree", &tr)
		nInfo, parentInfo = tree.NodeInfo{}, tree.NodeInfo{}
		for _, x := range tr.Nodes {
			if x.ID == ns.ID {
				nInfo = x
			}
		}
		for _, x := range tr.Nodes {
			if x.ID == nInfo.Parent && x.ID != "" {
				parentInfo = x
			}
		}
		return parentInfo.ID != ""
	})
	t.Logf("N %s below %s (%s/%s, strips %v); R is %s", ns.ID, parentInfo.ID, parentInfo.Role, parentInfo.Kind, parentInfo.Strips, relay.node.ID())
	if !nInfo.NoVerify || !nInfo.Unverified {
		t.Errorf("the tree API does not mark N: noVerify %v unverified %v", nInfo.NoVerify, nInfo.Unverified)
	}
	if parentInfo.ID == relay.node.ID() || parentInfo.ID == src.ID() || !parentInfo.Strips ||
		parentInfo.Role != protocol.RoleRelay || parentInfo.Kind != protocol.KindGo {
		t.Fatalf("N hangs below %s (%s/%s strips %v), want the server's relay node", parentInfo.ID, parentInfo.Role, parentInfo.Kind, parentInfo.Strips)
	}

	// It plays: video keeps advancing, audio decodes without a wall of
	// concealment (Opus packets with a 75-byte trailer on do not decode).
	later := waitPlaying(t, n, first.FramesDecoded+150, 60*time.Second)
	a0, err := evalJS[audioPlay](n, audioPlayJS)
	if err != nil {
		t.Fatal(err)
	}
	waitPlaying(t, n, later.FramesDecoded+90, 60*time.Second)
	a1, err := evalJS[audioPlay](n, audioPlayJS)
	if err != nil {
		t.Fatal(err)
	}
	recv, conc := a1.Received-a0.Received, a1.Concealed-a0.Concealed
	t.Logf("N video %v → %v frames; audio %+v → %+v: %.0f samples received, %.0f concealed (%.1f %%)",
		first.FramesDecoded, later.FramesDecoded, a0, a1, recv, conc, 100*conc/max(recv, 1))
	if !a1.Declared || a1.Worker {
		t.Errorf("N: hello noVerify %v, worker %v; want a tab without a worker that said so", a1.Declared, a1.Worker)
	}
	if a1.Packets-a0.Packets < 50 || recv < 48_000 {
		t.Errorf("N received too little audio over 3 s of video: %.0f packets, %.0f samples", a1.Packets-a0.Packets, recv)
	}
	if conc > 0.25*recv {
		t.Errorf("N concealed %.0f of %.0f audio samples: its decoder is not getting clean Opus", conc, recv)
	}
	// What N's decoder is handed carries no trailer: the server's relay
	// took it off (a test that bypassed stripping saw it on every frame).
	var pc probeCounts
	waitFor(t, 30*time.Second, "the probe sees N's frames", func() bool {
		var err error
		pc, err = evalJS[probeCounts](n, probeReadJS)
		if err != nil {
			t.Logf("probe: %v", err)
		}
		return pc.Video.Frames >= 60 && pc.Audio.Frames >= 100
	})
	t.Logf("N's decoder was handed %+v", pc)
	if pc.Video.Trailer+pc.Audio.Trailer != 0 {
		t.Errorf("N's decoder got signature trailers: video %v of %v frames, audio %v of %v",
			pc.Video.Trailer, pc.Video.Frames, pc.Audio.Trailer, pc.Audio.Frames)
	}
	time.Sleep(1500 * time.Millisecond) // a stats sample after the last move
	if v := readVerify(t, n); v.Verification != "unverified" || v.Why != "no transform" || v.Panel != "unverified" {
		t.Errorf("N says %q (%q), panel %q; want unverified, no transform", v.Verification, v.Why, v.Panel)
	}

	// A normal Chromium beside it verifies, wherever it hangs.
	v := openViewer(t, srvURL, stream, "?relay=0&stats=1", "V")
	vs := readRelayState(t, v)
	f := waitPlaying(t, v, 0, 5*time.Second).FramesDecoded
	waitPlaying(t, v, f+90, 60*time.Second)
	time.Sleep(1500 * time.Millisecond)
	vv := readVerify(t, v)
	t.Logf("V %s below %s: %q video %+v audio %+v", vs.ID, vs.Parent, vv.Verification, vv.Video, vv.Audio)
	if vv.Verification != "verified" || vv.Video.Rejected+vv.Audio.Rejected != 0 || vv.Video.Verified < 90 || vv.Audio.Verified < 50 {
		t.Errorf("V did not verify its frames: %q video %+v audio %+v", vv.Verification, vv.Video, vv.Audio)
	}
	if p, _ := readRelayState(t, n), 0; p.Parent != parentInfo.ID {
		t.Errorf("N moved to %s meanwhile", p.Parent)
	}
}
