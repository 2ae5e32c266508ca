package peer

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// TestPublicIPsReplaceHostCandidates checks that Config.PublicIPs (the
// server's -public-ip) is what a PeerConnection advertises as its host
// address, as a host behind 1:1 NAT needs.
func TestPublicIPsReplaceHostCandidates(t *testing.T) {
	api, err := NewAPI(Config{LoopbackOnly: true, PublicIPs: []string{"203.0.113.7"}})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := api.newPeerConnection()
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-gathered:
	case <-ctx.Done():
		t.Fatal("candidate gathering did not complete")
	}
	sdp := pc.LocalDescription().SDP
	if !strings.Contains(sdp, "203.0.113.7") {
		t.Fatalf("the offer does not advertise the public address:\n%s", sdp)
	}
	if strings.Contains(sdp, " 127.0.0.1 ") {
		t.Errorf("the offer still advertises the local address:\n%s", sdp)
	}
}
