package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// fragmentOf is the trickle-ice-sdpfrag of a description: its ICE
// credentials and, per media section, its candidates.
func fragmentOf(sdp string) string {
	var b strings.Builder
	b.WriteString("a=ice-ufrag:" + iceUfragOf(sdp) + "\r\na=ice-pwd:" + icePwdOf(sdp) + "\r\n")
	for _, l := range strings.Split(sdp, "\n") {
		l = strings.TrimRight(l, "\r")
		if strings.HasPrefix(l, "m=") || strings.HasPrefix(l, "a=mid:") || strings.HasPrefix(l, "a=candidate:") {
			b.WriteString(l + "\r\n")
		}
	}
	return b.String()
}

// withFragment is sdp with the fragment's ICE credentials and candidates.
func withFragment(sdp, frag string) string {
	ufrag, pwd := iceUfragOf(frag), icePwdOf(frag)
	var cands []string
	for _, l := range strings.Split(frag, "\n") {
		if l = strings.TrimRight(l, "\r"); strings.HasPrefix(l, "a=candidate:") {
			cands = append(cands, l)
		}
	}
	var b strings.Builder
	for _, l := range strings.Split(sdp, "\n") {
		l = strings.TrimRight(l, "\r")
		switch {
		case l == "", strings.HasPrefix(l, "a=candidate:"), l == "a=end-of-candidates":
			continue
		case strings.HasPrefix(l, "a=ice-ufrag:"):
			l = "a=ice-ufrag:" + ufrag
		case strings.HasPrefix(l, "a=ice-pwd:"):
			l = "a=ice-pwd:" + pwd
		}
		b.WriteString(l + "\r\n")
		if strings.HasPrefix(l, "a=mid:") {
			for _, c := range cands {
				b.WriteString(c + "\r\n")
			}
		}
	}
	return b.String()
}

// TestWHIPICERestart restarts ICE through PATCH (RFC 9725 section 4.4):
// the server answers with new credentials and candidates and a new ETag,
// and the publisher's media keeps reaching a viewer over the new session.
func TestWHIPICERestart(t *testing.T) {
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	obs := newWHIPClient(t)
	if code, body := obs.publish(url, "restart", ""); code != http.StatusCreated {
		t.Fatalf("POST: %d %s", code, body)
	}
	obs.play(h264Clip)
	v := startPeer(t, url, "restart", protocol.RoleViewer, 0, obs.src)
	waitFor(t, 30*time.Second, "the viewer plays", func() bool { f, _, _ := v.counts(); return f >= 30 })

	oldAnswer := obs.pc.RemoteDescription().SDP
	restart, err := obs.pc.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(obs.pc)
	if err := obs.pc.SetLocalDescription(restart); err != nil {
		t.Fatal(err)
	}
	<-gathered
	resp, body := post(t, http.MethodPatch, obs.location, "application/trickle-ice-sdpfrag", "", fragmentOf(obs.pc.LocalDescription().SDP), "If-Match", "*")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/trickle-ice-sdpfrag" {
		t.Fatalf("ICE restart: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if etag := resp.Header.Get("ETag"); etag == "" || etag == obs.etag {
		t.Errorf("ICE restart kept ETag %q (was %q)", etag, obs.etag)
	}
	if iceUfragOf(body) == "" || iceUfragOf(body) == iceUfragOf(oldAnswer) || !strings.Contains(body, "a=candidate:") {
		t.Fatalf("ICE restart answer fragment has no new credentials or no candidates:\n%s", body)
	}
	if err := obs.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: withFragment(oldAnswer, body)}); err != nil {
		t.Fatal(err)
	}
	// The old ICE session is gone on the publisher's side: only the new
	// one can carry media now.
	f0, _, _ := v.counts()
	waitFor(t, 30*time.Second, "media over the restarted ICE session", func() bool { f, _, _ := v.counts(); return f >= f0+90 })
	if _, mismatch, _ := v.counts(); mismatch != 0 {
		t.Errorf("%d frames differ from what was published", mismatch)
	}
}
