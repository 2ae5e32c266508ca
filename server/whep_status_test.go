package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// whepOffer is a WHEP player's complete offer receiving only codecs.
func whepOffer(t *testing.T, codecs ...webrtc.RTPCodecParameters) string {
	t.Helper()
	c := newWHEPClient(t, nil)
	if len(codecs) > 0 {
		me := &webrtc.MediaEngine{}
		for _, k := range codecs {
			if err := me.RegisterCodec(k, webrtc.RTPCodecTypeVideo); err != nil {
				t.Fatal(err)
			}
		}
		pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me)).NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close() })
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
		c.pc = pc
	}
	o, err := c.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	g := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	<-g
	return c.pc.LocalDescription().SDP
}

// TestWHEPStatusCodes checks WHEP's answers: the same HTTP semantics and
// error codes as WHIP.
func TestWHEPStatusCodes(t *testing.T) {
	lightTest(t)
	url := startWHIPServer(t, 2)
	private := signHS256(t, claims("private", true, time.Hour))
	obs := newWHIPClient(t)
	if code, body := obs.publish(url, "private", private); code != http.StatusCreated {
		t.Fatalf("publish: %d %s", code, body)
	}
	obs.play(h264Clip)
	offer := whepOffer(t)
	vp8 := whepOffer(t, webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96})
	vp9 := whepOffer(t, webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP9, ClockRate: 90000, SDPFmtpLine: "profile-id=0"}, PayloadType: 98})
	viewer := signHS256(t, claims("private", false, time.Hour))

	resp, _ := post(t, http.MethodOptions, url+"/whep/private", "", "", "", "Origin", "https://player.example")
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Accept-Post") != "application/sdp" || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("OPTIONS: %d %v", resp.StatusCode, resp.Header)
	}
	for _, tc := range []struct {
		name, stream, ctype, token, body string
		want                             int
		inBody                           string
	}{
		{"wrong content type", "private", "application/json", viewer, offer, 415, "application/sdp"},
		{"unparsable SDP", "private", "application/sdp", viewer, "v=0\r\nnonsense", 400, "SDP"},
		{"no media", "private", "application/sdp", viewer, noMediaSDP, 400, "no audio or video"},
		{"a publisher's offer", "private", "application/sdp", viewer, newWHIPClient(t).offer(), 400, "receives media"},
		{"body over the limit", "private", "application/sdp", viewer, offer + strings.Repeat("a=x\r\n", 20000), 413, "too large"},
		// A private stream is hidden from callers without a grant for it:
		// they get what an unknown stream gets (the gate, gate.go).
		{"private stream, no token", "private", "application/sdp", "", offer, 404, "stream not found"},
		{"private stream, another stream's token", "private", "application/sdp", signHS256(t, claims("other", false, time.Hour)), offer, 404, "stream not found"},
		{"bad token", "private", "application/sdp", "x.y.z", offer, 401, "token"},
		{"unknown stream", "nobody", "application/sdp", "", offer, 404, "stream not found"},
		{"VP9 only", "private", "application/sdp", viewer, vp9, 422, "VP9"},
		{"VP8 only for an H264 stream", "private", "application/sdp", viewer, vp8, 422, "H264"},
	} {
		resp, body := post(t, http.MethodPost, url+"/whep/"+tc.stream, tc.ctype, tc.token, tc.body)
		if resp.StatusCode != tc.want || !strings.Contains(body, tc.inBody) {
			t.Errorf("%s: %d %q, want %d mentioning %q", tc.name, resp.StatusCode, body, tc.want, tc.inBody)
		}
	}

	// 403: a valid token, from a page of another site, for a private
	// stream (those are watched from the server's own pages or an
	// -allow-origin site).
	var body string
	resp, body = post(t, http.MethodPost, url+"/whep/private", "application/sdp", viewer, offer, "Origin", "https://elsewhere.example")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("private stream from another site: %d %q, want 403", resp.StatusCode, body)
	}

	// The WHIP session is one of this address's two; one player fits.
	p := newWHEPClient(t, obs.src)
	if code, body := p.watch(url, "private", viewer); code != http.StatusCreated {
		t.Fatalf("watch: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "the player plays", func() bool { f, _, _ := p.counts(); return f >= 30 })
	if code, body := newWHEPClient(t, nil).watch(url, "private", viewer); code != http.StatusTooManyRequests {
		t.Errorf("a third session from one address: %d %q, want 429", code, body)
	}
	frag := "a=ice-ufrag:" + iceUfragOf(p.pc.LocalDescription().SDP) + "\r\na=ice-pwd:" + icePwdOf(p.pc.LocalDescription().SDP) + "\r\n"
	for _, tc := range []struct {
		name, method, url, ifMatch string
		want                       int
	}{
		{"PATCH unknown session", http.MethodPatch, url + "/whep/private/nope", "*", 404},
		{"PATCH a WHEP session at /whip", http.MethodPatch, strings.Replace(p.location, "/whep/", "/whip/", 1), p.etag, 404},
		{"PATCH wrong If-Match", http.MethodPatch, p.location, `"old"`, 412},
		{"PATCH trickle", http.MethodPatch, p.location, p.etag, 204},
	} {
		resp, body := post(t, tc.method, tc.url, "application/trickle-ice-sdpfrag", "", frag, "If-Match", tc.ifMatch)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.name, resp.StatusCode, body, tc.want)
		}
	}
	if resp, _ := post(t, http.MethodDelete, p.location, "", "", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("DELETE: %d", resp.StatusCode)
	}
	if resp, _ := post(t, http.MethodDelete, p.location, "", "", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE twice: %d, want 404", resp.StatusCode)
	}
}
