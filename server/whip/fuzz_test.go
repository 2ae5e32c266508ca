package whip

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"canopy/mesh/protocol"
)

// obsOffer is an offer as OBS 30 writes it (libdatachannel): session-level
// ICE credentials, Opus then H264 packetization-mode 1, no trickle.
const obsOffer = "v=0\r\n" +
	"o=rtc 3767197920 0 IN IP4 127.0.0.1\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=group:BUNDLE 0 1\r\n" +
	"a=group:LS 0 1\r\n" +
	"a=msid-semantic:WMS *\r\n" +
	"a=ice-ufrag:PLvb\r\n" +
	"a=ice-pwd:2s8C1jUuvgbuDJ5CY2Aq8x\r\n" +
	"a=ice-options:ice2,trickle\r\n" +
	"a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC\r\n" +
	"m=audio 54609 UDP/TLS/RTP/SAVPF 111\r\n" +
	"c=IN IP4 192.0.2.10\r\n" +
	"a=mid:0\r\n" +
	"a=sendonly\r\n" +
	"a=ssrc:1809418432 cname:obs\r\n" +
	"a=ssrc:1809418432 msid:obs obs-audio\r\n" +
	"a=msid:obs obs-audio\r\n" +
	"a=rtcp-mux\r\n" +
	"a=setup:actpass\r\n" +
	"a=rtpmap:111 opus/48000/2\r\n" +
	"a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1\r\n" +
	"a=candidate:1 1 UDP 2122317823 192.0.2.10 54609 typ host\r\n" +
	"a=end-of-candidates\r\n" +
	"m=video 54609 UDP/TLS/RTP/SAVPF 96\r\n" +
	"c=IN IP4 192.0.2.10\r\n" +
	"a=mid:1\r\n" +
	"a=sendonly\r\n" +
	"a=ssrc:2851637012 cname:obs\r\n" +
	"a=ssrc:2851637012 msid:obs obs-video\r\n" +
	"a=msid:obs obs-video\r\n" +
	"a=rtcp-mux\r\n" +
	"a=setup:actpass\r\n" +
	"a=rtpmap:96 H264/90000\r\n" +
	"a=rtcp-fb:96 nack\r\n" +
	"a=rtcp-fb:96 nack pli\r\n" +
	"a=rtcp-fb:96 goog-remb\r\n" +
	"a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n"

const sampleFragment = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n" +
	"a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n" +
	"a=end-of-candidates\r\n"

// FuzzOffer: no offer makes parseOffer panic, and every one it accepts
// names, for each section, a mid and a codec the tree carries.
func FuzzOffer(f *testing.F) {
	f.Add(obsOffer, true)
	f.Add(strings.ReplaceAll(obsOffer, "sendonly", "recvonly"), false)
	f.Add(strings.Replace(obsOffer, "H264/90000", "H265/90000", 1), true)
	f.Add("v=0\r\n", true)
	f.Fuzz(func(t *testing.T, body string, send bool) {
		_, media, err := parseOffer(body, send)
		if err != nil {
			return
		}
		if len(media) == 0 || len(media) > maxTracks {
			t.Fatalf("accepted %d media sections", len(media))
		}
		for _, m := range media {
			if m.mid == "" || (m.kind != "audio" && m.kind != "video") {
				t.Fatalf("accepted section %+v", m)
			}
			ok := false
			for _, c := range ingestCodecs {
				ok = ok || c.MimeType == m.codec.MimeType
			}
			if !ok {
				t.Fatalf("picked %s, not a codec the tree carries", m.codec.MimeType)
			}
		}
	})
}

// FuzzFragment: no PATCH body makes parseFragment panic; what it accepts is
// bounded, and an ICE restart built from it carries its credentials.
func FuzzFragment(f *testing.F) {
	f.Add(sampleFragment)
	f.Add("a=ice-ufrag:x\r\n")
	f.Add("a=candidate:\r\nm=\r\na=mid:\r\n")
	f.Fuzz(func(t *testing.T, body string) {
		frag, err := parseFragment(body)
		if err != nil {
			return
		}
		if len(frag.candidates) > maxFragCandidates {
			t.Fatalf("accepted %d candidates", len(frag.candidates))
		}
		if frag.ufrag != "" && frag.pwd != "" && !strings.ContainsAny(frag.ufrag+frag.pwd, "\r\n") {
			offer := restartOffer(obsOffer, frag)
			if !strings.Contains(offer, "a=ice-ufrag:"+frag.ufrag+"\r\n") || strings.Contains(offer, "a=candidate:") {
				t.Fatalf("restart offer lost the fragment's credentials or kept old candidates:\n%s", offer)
			}
		}
		_ = answerFragment(body)
	})
}

// FuzzHandlers sends arbitrary bodies and headers through the real routes
// (up to the credential check, which refuses everything here so no
// PeerConnection is made): every answer is one of the defined statuses,
// never a 500 or a panic.
func FuzzHandlers(f *testing.F) {
	h, err := New(Config{
		Admit:  func(*http.Request, string, protocol.Role) (Connect, error) { return nil, ErrUnauthorized },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	h.Routes(r)
	f.Add("POST", "/whip/live", "application/sdp", obsOffer)
	f.Add("POST", "/whep/live", "application/sdp", strings.ReplaceAll(obsOffer, "sendonly", "recvonly"))
	f.Add("PATCH", "/whip/live/abc", "application/trickle-ice-sdpfrag", sampleFragment)
	f.Add("POST", "/whip/live", "text/plain", "x")
	f.Add("DELETE", "/whep/live/abc", "", "")
	f.Add("OPTIONS", "/whip/live", "", "")
	f.Fuzz(func(t *testing.T, method, path, ctype, body string) {
		if !strings.HasPrefix(path, "/") {
			return
		}
		req, err := http.NewRequest(method, "http://canopy.test"+path, strings.NewReader(body))
		if err != nil {
			return // no client can send it
		}
		req.RemoteAddr = "192.0.2.1:1234"
		req.Header.Set("Content-Type", ctype)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		switch w.Code {
		case 200, 201, 204, 400, 401, 403, 404, 405, 412, 413, 415, 422, 429:
		default:
			t.Fatalf("%s %s (%q, %d bytes): %d %s", method, path, ctype, len(body), w.Code, w.Body.String())
		}
	})
}
