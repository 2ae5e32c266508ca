package load

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"canopy/mesh/media"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// TestAnswersAcceptedByMeshParent feeds patched answers to real mesh
// parents (peer.Downstream, what a source or relay makes per child): each
// must be taken as a valid answer, and each must carry credentials of its
// own though only the first was made by pion.
func TestAnswersAcceptedByMeshParent(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	api, err := peer.NewAPI(peer.Config{LoopbackOnly: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	tracks := []protocol.Track{
		{ID: "video", Kind: "video", MimeType: media.VP8.MimeType, ClockRate: 90000},
		{ID: "audio", Kind: "audio", MimeType: media.Opus.MimeType, ClockRate: 48000, Channels: 2},
	}
	var fwds []*peer.Forwarder
	for _, tr := range tracks {
		f := peer.NewForwarder(tr, log)
		defer f.Close()
		fwds = append(fwds, f)
	}
	cache := newAnswers()
	ufrags := map[string]bool{}
	for i := range 3 {
		offers := make(chan string, 8)
		var once sync.Once
		d, err := api.NewDownstream("child", fwds, func(s protocol.Signal) {
			if s.Kind == protocol.SignalOffer {
				once.Do(func() { offers <- s.SDP })
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		var offer string
		select {
		case offer = <-offers:
		case <-time.After(10 * time.Second):
			t.Fatal("no offer")
		}
		ans, err := cache.answer(offer)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if err := d.HandleSignal(protocol.Signal{Kind: protocol.SignalAnswer, SDP: ans}); err != nil {
			t.Fatalf("parent refused answer %d: %v\n%s", i, err, ans)
		}
		ufrags[line(ans, "a=ice-ufrag:")] = true
		if i == 0 {
			// The check can fail: an answer naming other mids is refused.
			bad := strings.ReplaceAll(ans, "a=mid:", "a=mid:x")
			d2, err := api.NewDownstream("other", fwds, func(protocol.Signal) {})
			if err != nil {
				t.Fatal(err)
			}
			if err := d2.HandleSignal(protocol.Signal{Kind: protocol.SignalAnswer, SDP: bad}); err == nil {
				t.Error("a parent took an answer with the wrong mids")
			}
			_ = d2.Close()
		}
		_ = d.Close()
	}
	if cache.built != 1 {
		t.Errorf("%d answers made by pion for one offer shape, want 1", cache.built)
	}
	if len(ufrags) != 3 {
		t.Errorf("answers share ICE credentials: %v", ufrags)
	}
}

func line(sdp, prefix string) string {
	for l := range strings.SplitSeq(sdp, "\r\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// TestRelayedOfferIsAnOffer checks a simulated relay's offer: its parent's
// offer with fresh credentials and no candidates, answerable as the
// original.
func TestRelayedOfferIsAnOffer(t *testing.T) {
	const offer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:aaaa\r\na=ice-pwd:bbbbbbbbbbbbbbbbbbbbbbbb\r\n" +
		"a=fingerprint:sha-256 00:11\r\na=setup:actpass\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n" +
		"a=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n"
	got := withCredentials(offer, true)
	for _, gone := range []string{"a=ice-ufrag:aaaa", "a=candidate:", "a=end-of-candidates", "00:11"} {
		if strings.Contains(got, gone) {
			t.Errorf("relayed offer still has %q", gone)
		}
	}
	if shape(got) != shape(offer) {
		t.Errorf("relayed offer changed shape:\n%s\nvs\n%s", shape(got), shape(offer))
	}
	if _, err := newAnswers().answer(got); err != nil {
		t.Errorf("relayed offer not answerable: %v", err)
	}
}
