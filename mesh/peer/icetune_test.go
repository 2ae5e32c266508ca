package peer

import (
	"reflect"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// TestSetICECheckInterval: the pinned pion keeps the ICE agent's check
// interval where setICECheckInterval looks for it. If a pion upgrade moves
// it, this fails and the workaround needs a look (or is no longer needed).
func TestSetICECheckInterval(t *testing.T) {
	a := newTestAPI(t)
	pc, err := a.newPeerConnection()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Close() }()
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	if !setICECheckInterval(pc, 7*time.Millisecond) {
		t.Fatal("pion's ICE agent check interval not found")
	}
	g := field(reflect.ValueOf(pc).Elem(), "iceGatherer", reflect.TypeFor[*webrtc.ICEGatherer]())
	ag := field(g.Elem(), "agent", reflect.TypeFor[*ice.Agent]())
	if got := field(ag.Elem(), "checkInterval", reflect.TypeFor[time.Duration]()).Interface().(time.Duration); got != 7*time.Millisecond {
		t.Fatalf("check interval %v after setting 7ms", got)
	}
}
