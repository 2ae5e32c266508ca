package main

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/chromedp/chromedp"

	"canopy/mesh/tree"
)

// TestChromiumVerifyCost measures what checking a source-signed frame costs
// a Chromium tab: frames of typical sizes are signed in the page (WebCrypto
// Ed25519, as the Go source signs them), then checked with static/js's own
// code, one at a time (latency per frame) and pipelined as the receive
// worker does (TrackVerifier: throughput), while the browser's processes'
// CPU is read from /proc. A measurement that prints figures; it fails only
// if a frame does not verify. Run it with
//
//	CANOPY_VERIFY_COST=2000 go test ./server -run TestChromiumVerifyCost -v -count=1
//
// (CANOPY_VERIFY_COST is the number of frames per size.)
func TestChromiumVerifyCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CANOPY_VERIFY_COST"))
	if n <= 0 {
		t.Skip("a measurement: set CANOPY_VERIFY_COST=<frames per size>")
	}
	_, srvURL := startServer(t, tree.Config{})
	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(srvURL+"/")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		size int
		h264 bool
	}{{"opus 160 B", 160, false}, {"vp8 6 KB", 6000, false}, {"vp8 40 KB", 40000, false}, {"h264 6 KB", 6000, true}} {
		setup := fmt.Sprintf(`(async () => {
  const fs = await import('/static/js/framesig.js');
  const { TrackVerifier } = await import('/static/js/framesig-track.js');
  const k = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
  const pub = fs.b64url(new Uint8Array(await crypto.subtle.exportKey('raw', k.publicKey)));
  const key = await fs.importKey(pub);
  const frames = [];
  for (let i = 0; i < %d; i++) {
    const media = new Uint8Array(%d);
    crypto.getRandomValues(media.subarray(0, Math.min(media.length, 65536)));
    let data;
    const counter = BigInt(1000 + i);
    const u64 = new Uint8Array(8); new DataView(u64.buffer).setBigUint64(0, counter);
    if (%t) {
      // One IDR slice (no zero bytes, so no start code inside), the SEI before it.
      for (let j = 0; j < media.length; j++) if (media[j] === 0) media[j] = 1;
      media[0] = 0x65;
      const canon = new Uint8Array(4 + media.length); new DataView(canon.buffer).setUint32(0, media.length); canon.set(media, 4);
      const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', canon));
      const sig = new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, k.privateKey, fs.message('v', counter, hash)));
      const p = [5, 88, ...fs.SEI_UUID, ...u64, ...sig, 0x80];
      const esc = []; let z = 0;
      for (const x of p) { if (z >= 2 && x <= 3) { esc.push(3); z = 0; } esc.push(x); z = x === 0 ? z + 1 : 0; }
      data = new Uint8Array([0, 0, 0, 1, 6, ...esc, 0, 0, 0, 1, ...media]);
    } else {
      const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', media));
      const sig = new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, k.privateKey, fs.message('v', counter, hash)));
      data = new Uint8Array(media.length + 75); data.set(media); data.set(u64, media.length); data.set(sig, media.length + 8); data.set([1, 0x43, 0x53], media.length + 72);
    }
    frames.push(data);
  }
  window.__cost = { fs, TrackVerifier, key, frames, h264: %t };
  return frames.length;
})()`, n, c.size, c.h264, c.h264)
		if _, err := evalJS[float64](ctx, setup); err != nil {
			t.Fatalf("%s: set up: %v", c.name, err)
		}
		type result struct {
			Ms, Bad float64
		}
		// One at a time: what each frame waits before its decoder gets it.
		const serial = `(async () => {
  const { fs, key, frames, h264 } = window.__cost;
  let bad = 0; const t0 = performance.now();
  for (const f of frames) if (!(await fs.checkFrame(key, 'v', f, h264)).ok) bad++;
  return { ms: performance.now() - t0, bad };
})()`
		// Pipelined through TrackVerifier, as the worker checks a stream.
		const piped = `(async () => {
  const { TrackVerifier, key, frames, h264 } = window.__cost;
  let got = 0;
  const v = new TrackVerifier({ kind: 'v', h264, key, shared: { high: null }, deliver: () => { got++; } });
  const t0 = performance.now();
  for (const f of frames) { const w = v.push({ data: f.slice().buffer, type: 'key' }); if (w) await w; }
  await v.drain();
  return { ms: performance.now() - t0, bad: frames.length - got };
})()`
		var figures []string
		for _, m := range []struct{ name, js string }{{"one at a time", serial}, {"pipelined", piped}} {
			cpu0 := browserCPU(t, ctx)
			r, err := evalJS[result](ctx, m.js)
			cpu := browserCPU(t, ctx) - cpu0
			if err != nil {
				t.Fatalf("%s %s: %v", c.name, m.name, err)
			}
			if r.Bad > 0 {
				t.Errorf("%s %s: %.0f of %d frames did not verify", c.name, m.name, r.Bad, n)
			}
			figures = append(figures, fmt.Sprintf("%s %.0f µs wall/frame, %.0f µs CPU/frame", m.name,
				r.Ms*1000/float64(n), float64(cpu.Microseconds())/float64(n)))
		}
		fmt.Printf("chromium verify %s (%d frames): %s; %s\n", c.name, n, figures[0], figures[1])
	}
}
