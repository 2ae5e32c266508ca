package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"canopy/mesh/peer"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// startWHIPServer runs a server with auth on (authConfig), TURN
// credentials to hand out and a quota of sessions per address.
func startWHIPServer(t *testing.T, sessionsPerIP int) string {
	t.Helper()
	_, url := startServerWith(t, Config{
		Policy:            tree.Config{SourceCapacity: 2},
		Auth:              authConfig(),
		TURN:              &TURNCredentials{Port: 3478, Secret: []byte("turn-secret"), TTL: time.Hour},
		ICEServers:        []protocol.ICEServer{{URLs: []string{"stun:stun.example.net:3478"}}},
		Hosted:            peer.Config{LoopbackOnly: true},
		WHIPSessionsPerIP: sessionsPerIP,
	})
	return url
}

const noMediaSDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"

// TestWHIPStatusCodes checks each answer RFC 9725 (and Canopy) defines for
// a WHIP request, and the headers of the ones that succeed.
func TestWHIPStatusCodes(t *testing.T) {
	lightTest(t)
	url := startWHIPServer(t, 2)
	key := authConfig().StreamKeys["keyed"]
	offer := newWHIPClient(t).offer()

	resp, _ := post(t, http.MethodOptions, url+"/whip/keyed", "", "", "", "Origin", "https://studio.example", "Access-Control-Request-Method", "POST")
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Accept-Post") != "application/sdp" ||
		resp.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("OPTIONS: %d %v", resp.StatusCode, resp.Header)
	}

	vp9 := newWHIPClient(t, webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP9, ClockRate: 90000, SDPFmtpLine: "profile-id=0"}, PayloadType: 98})
	pm0 := newWHIPClient(t, webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: "packetization-mode=0;profile-level-id=42e01f"}, PayloadType: 97})
	for _, tc := range []struct {
		name, stream, ctype, token, body string
		want                             int
		inBody                           string
	}{
		{"wrong content type", "keyed", "text/plain", key, offer, 415, "application/sdp"},
		{"unparsable SDP", "keyed", "application/sdp", key, "hello", 400, "SDP"},
		{"no media", "keyed", "application/sdp", key, noMediaSDP, 400, "no audio or video"},
		{"body over the limit", "keyed", "application/sdp", key, offer + strings.Repeat("a=x\r\n", 20000), 413, "too large"},
		{"no token", "keyed", "application/sdp", "", offer, 401, "token"},
		{"bad token", "keyed", "application/sdp", "not-a-token", offer, 401, "token"},
		{"token for another stream", "keyed", "application/sdp", signHS256(t, claims("other", true, time.Hour)), offer, 403, "not for stream"},
		{"token without publish", "keyed", "application/sdp", signHS256(t, claims("keyed", false, time.Hour)), offer, 403, "publish"},
		{"VP9 only", "keyed", "application/sdp", key, vp9.offer(), 422, "VP9"},
		{"H264 packetization-mode 0 only", "keyed", "application/sdp", key, pm0.offer(), 422, "packetization-mode"},
		{"invalid stream name", "bad%20name", "application/sdp", key, offer, 400, "stream"},
	} {
		resp, body := post(t, http.MethodPost, url+"/whip/"+tc.stream, tc.ctype, tc.token, tc.body)
		if resp.StatusCode != tc.want || !strings.Contains(body, tc.inBody) {
			t.Errorf("%s: %d %q, want %d mentioning %q", tc.name, resp.StatusCode, body, tc.want, tc.inBody)
		}
		if tc.want == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
		}
		if tc.want == 415 && resp.Header.Get("Accept-Post") != "application/sdp" {
			t.Errorf("%s: 415 without Accept-Post", tc.name)
		}
	}

	// 201: Location, ETag, the ICE servers with TURN credentials.
	obs := newWHIPClient(t)
	if code, body := obs.publish(url, "keyed", key); code != http.StatusCreated {
		t.Fatalf("publish with the stream key: %d %s", code, body)
	}
	links := strings.Join(obs.resp.Header.Values("Link"), "\n")
	if !strings.Contains(links, `<stun:stun.example.net:3478>; rel="ice-server"`) ||
		!strings.Contains(links, `rel="ice-server"; username=`) || !strings.Contains(links, `credential-type="password"`) ||
		!strings.Contains(links, "<turn:") {
		t.Errorf("Link headers: %s", links)
	}
	if obs.etag == "" || !strings.HasPrefix(obs.resp.Header.Get("Location"), "/whip/keyed/") {
		t.Errorf("201: ETag %q Location %q", obs.etag, obs.resp.Header.Get("Location"))
	}

	// 409: the stream has its source.
	second := newWHIPClient(t)
	if code, body := second.publish(url, "keyed", key); code != http.StatusConflict || !strings.Contains(body, "source") {
		t.Errorf("second publisher: %d %q, want 409", code, body)
	}

	// 429: the quota is 2 sessions from this address.
	any := signHS256(t, Claims{Stream: "*", Publish: true, RegisteredClaims: claims("*", true, time.Hour).RegisteredClaims})
	if code, body := newWHIPClient(t).publish(url, "other", any); code != http.StatusCreated {
		t.Fatalf("second session: %d %s", code, body)
	}
	if code, body := newWHIPClient(t).publish(url, "third", any); code != http.StatusTooManyRequests {
		t.Errorf("third session from one address: %d %q, want 429", code, body)
	}

	frag := "a=ice-ufrag:" + iceUfragOf(obs.pc.LocalDescription().SDP) + "\r\na=ice-pwd:" + icePwdOf(obs.pc.LocalDescription().SDP) +
		"\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n"
	for _, tc := range []struct {
		name, method, url, ctype, ifMatch, body string
		want                                    int
	}{
		{"PATCH unknown session", http.MethodPatch, url + "/whip/keyed/nope", "application/trickle-ice-sdpfrag", "*", frag, 404},
		{"DELETE unknown session", http.MethodDelete, url + "/whip/keyed/nope", "", "", "", 404},
		{"PATCH session of another stream", http.MethodPatch, strings.Replace(obs.location, "/keyed/", "/other/", 1), "application/trickle-ice-sdpfrag", obs.etag, frag, 404},
		{"PATCH wrong If-Match", http.MethodPatch, obs.location, "application/trickle-ice-sdpfrag", `"stale"`, frag, 412},
		{"PATCH wrong content type", http.MethodPatch, obs.location, "application/sdp", obs.etag, frag, 415},
		{"PATCH not a fragment", http.MethodPatch, obs.location, "application/trickle-ice-sdpfrag", obs.etag, "hello\r\n", 400},
		{"PATCH trickle", http.MethodPatch, obs.location, "application/trickle-ice-sdpfrag", obs.etag, frag, 204},
	} {
		resp, body := post(t, tc.method, tc.url, tc.ctype, "", tc.body, "If-Match", tc.ifMatch)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.name, resp.StatusCode, body, tc.want)
		}
	}
	if code := obs.stop(); code != http.StatusOK {
		t.Errorf("DELETE: %d", code)
	}
	if resp, _ := post(t, http.MethodDelete, obs.location, "", "", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE twice: %d, want 404", resp.StatusCode)
	}
}

func iceUfragOf(sdp string) string { return sdpAttr(sdp, "a=ice-ufrag:") }
func icePwdOf(sdp string) string   { return sdpAttr(sdp, "a=ice-pwd:") }

func sdpAttr(sdp, prefix string) string {
	for _, l := range strings.Split(sdp, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(l, "\r"), prefix); ok {
			return v
		}
	}
	return ""
}

// TestWHIPServerFull: a publisher for a new stream on a server at its
// -max-streams, or a hosted node past -max-peers, gets 503 with
// Retry-After, not a 500.
func TestWHIPServerFull(t *testing.T) {
	lightTest(t)
	_, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2}, Hosted: peer.Config{LoopbackOnly: true},
		Limits: Limits{MaxStreams: 1}})
	startSource(t, url, "first", 2)
	code, body := newWHIPClient(t).publish(url, "second", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "full") {
		t.Errorf("a new stream past -max-streams: %d %q, want 503", code, body)
	}

	_, url = startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2}, Hosted: peer.Config{LoopbackOnly: true},
		Limits: Limits{MaxPeers: 1}})
	startSource(t, url, "first", 2)
	c := newWHIPClient(t)
	code, body = c.publish(url, "second", "")
	if code != http.StatusServiceUnavailable || c.resp.Header.Get("Retry-After") == "" {
		t.Errorf("a hosted node past -max-peers: %d %q, want 503 with Retry-After", code, body)
	}
}
