package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// whepPage is a WHEP player made of nothing but RTCPeerConnection and
// fetch, served from another origin than Canopy's (CORS): it POSTs its
// offer at once and trickles its candidates with PATCH.
const whepPage = `<!doctype html><meta charset="utf-8"><title>WHEP</title>
<video id="v" autoplay muted playsinline></video>
<script type="module">
const endpoint = new URLSearchParams(location.search).get('whep');
const v = document.getElementById('v');
const pc = new RTCPeerConnection();
pc.addTransceiver('video', {direction: 'recvonly'});
pc.addTransceiver('audio', {direction: 'recvonly'});
pc.ontrack = (e) => { if (!v.srcObject) v.srcObject = e.streams[0] || new MediaStream([e.track]); };
window.patches = [];
window.whepError = '';
let session = null, etag = null;
const queued = [];
async function trickle(c) {
  const frag = 'a=ice-ufrag:' + c.usernameFragment + '\r\n' + 'm=' + (c.sdpMid === '0' ? 'video' : 'audio') +
    ' 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:' + c.sdpMid + '\r\na=' + c.candidate + '\r\n';
  const r = await fetch(session, {method: 'PATCH', headers: {'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': etag}, body: frag});
  window.patches.push(r.status);
}
pc.onicecandidate = (e) => {
  if (!e.candidate || !e.candidate.candidate) return;
  if (session) trickle(e.candidate); else queued.push(e.candidate);
};
try {
  await pc.setLocalDescription(await pc.createOffer());
  const r = await fetch(endpoint, {method: 'POST', headers: {'Content-Type': 'application/sdp'}, body: pc.localDescription.sdp});
  if (r.status !== 201) throw new Error('POST ' + r.status + ' ' + await r.text());
  session = new URL(r.headers.get('Location'), endpoint).href;
  etag = r.headers.get('ETag');
  await pc.setRemoteDescription({type: 'answer', sdp: await r.text()});
  for (const c of queued.splice(0)) trickle(c);
} catch (e) { window.whepError = String(e); }
window.whepStats = async () => {
  let frames = 0, audio = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded || 0;
    if (s.type === 'inbound-rtp' && s.kind === 'audio') audio = s.packetsReceived || 0;
  });
  return {framesDecoded: frames, videoWidth: v.videoWidth, audioPacketsReceived: audio, state: pc.connectionState + ' ' + window.whepError, patches: window.patches};
};
</script>`

type whepPageStats struct {
	pageStats
	Patches []int `json:"patches"`
}

// TestWHEPInChromium plays a WHIP-published H264 stream in headless
// Chromium through WHEP, from a page on another origin that uses no
// Canopy JavaScript: constrained baseline, and High profile as OBS sends
// it with x264's default profile (its offer says 42e01f whatever the
// encoder's profile; server/testdata/high_nobf.h264 is ffmpeg's
// "-c:v libx264 -profile:v high -bf 0 -g 30" of testsrc2).
func TestWHEPInChromium(t *testing.T) {
	browserTest(t)
	for _, clip := range []string{h264Clip, "testdata/high_nobf.h264"} {
		t.Run(clip[strings.LastIndex(clip, "/")+1:], func(t *testing.T) { whepInChromium(t, clip) })
	}
}

func whepInChromium(t *testing.T, clip string) {
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	bctx := newBrowser(t)
	obs := newWHIPClient(t)
	if code, body := obs.publish(url, "chromium", ""); code != http.StatusCreated {
		t.Fatalf("POST /whip: %d %s", code, body)
	}
	obs.play(clip)
	v := startPeer(t, url, "chromium", protocol.RoleViewer, 0, obs.src)
	waitFor(t, 30*time.Second, "a Go viewer plays", func() bool { f, _, _ := v.counts(); return f >= 30 })
	if _, mismatch, _ := v.counts(); mismatch != 0 {
		t.Errorf("Go viewer: %d frames differ from the publisher's", mismatch)
	}
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(whepPage))
	}))
	t.Cleanup(page.Close)
	if err := chromedp.Do(bctx, chromedp.Navigate(page.URL+"/?whep="+url+"/whep/chromium")); err != nil {
		t.Fatal(err)
	}
	var last whepPageStats
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(bctx, 5*time.Second)
		s, err := chromedp.Run(ctx, chromedp.Evaluate[whepPageStats](`window.whepStats ? window.whepStats() : {state: 'loading'}`, chromedp.EvalAwaitPromise))
		cancel()
		if err == nil {
			last = s
			if s.FramesDecoded > 30 && s.VideoWidth > 0 {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("chromium WHEP player: %+v", last)
	if last.FramesDecoded <= 30 || last.VideoWidth == 0 {
		t.Fatalf("the WHEP page did not play: %+v", last)
	}
	if last.AudioPacketsReceived == 0 {
		t.Error("no audio reached the WHEP page")
	}
	for _, code := range last.Patches {
		if code != http.StatusNoContent {
			t.Errorf("a trickle PATCH from the page got %d", code)
		}
	}
}
