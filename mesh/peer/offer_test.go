package peer

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"canopy/mesh/protocol"
	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// repeatingParent is a hostile parent: a plain pion PeerConnection with one
// VP8 track whose offer, as sent, repeats that m-section n times (SSRC and
// all, each copy with its own mid). It keeps its own, one-section view of
// the session, so ICE and DTLS still connect.
type repeatingParent struct {
	pc    *webrtc.PeerConnection
	track *webrtc.TrackLocalStaticRTP
	offer string // as sent: n m-sections
}

func newRepeatingParent(t *testing.T, n int) *repeatingParent {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96,
	}, webrtc.RTPCodecTypeVideo); err != nil {
		t.Fatal(err)
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(n string) bool { return n == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	tr, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", StreamID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	// The copies keep what pion needs to make a receiver (and the SSRC),
	// and lose the rest, so that ninety of them fit in one signal.
	sdp := pc.LocalDescription().SDP
	i := strings.Index(sdp, "m=video")
	head, sec := sdp[:i], sdp[i:]
	var lines []string
	for _, l := range strings.Split(sec, "\r\n") {
		if strings.HasPrefix(l, "a=rtcp-fb") || strings.HasPrefix(l, "a=extmap") ||
			(strings.HasPrefix(l, "a=ssrc:") && !strings.Contains(l, " cname:")) {
			continue
		}
		lines = append(lines, l)
	}
	short := strings.Join(lines, "\r\n")
	mids := make([]string, n)
	var b strings.Builder
	for k := range n {
		mids[k] = strconv.Itoa(k)
	}
	b.WriteString(strings.Replace(head, "a=group:BUNDLE 0", "a=group:BUNDLE "+strings.Join(mids, " "), 1))
	b.WriteString(sec)
	for k := 1; k < n; k++ {
		b.WriteString(strings.Replace(short, "a=mid:0", "a=mid:"+mids[k], 1))
	}
	return &repeatingParent{pc: pc, track: tr, offer: b.String()}
}

// answer applies the child's answer, cut back to its first m-section.
func (h *repeatingParent) answer(sdp string) error {
	i := strings.Index(sdp, "m=video")
	if j := strings.Index(sdp[i+1:], "m=video"); j >= 0 {
		sdp = sdp[:i+1+j]
	}
	if k := strings.Index(sdp, "a=group:BUNDLE "); k >= 0 {
		end := strings.Index(sdp[k:], "\r\n")
		sdp = sdp[:k] + "a=group:BUNDLE 0" + sdp[k+end:]
	}
	return h.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp})
}

// TestOfferRepeatingSectionRefused: an offer that repeats one m-section 90
// times (it fits a signal) is refused with ErrBadOffer, and so are an
// unknown kind, a repeated mid and an SSRC in two sections; the stream's own
// offer is accepted.
func TestOfferRepeatingSectionRefused(t *testing.T) {
	h := newRepeatingParent(t, 90)
	if len(h.offer) > protocol.MaxSDPLength {
		t.Fatalf("the hostile offer is %d bytes, over the %d a signal may carry", len(h.offer), protocol.MaxSDPLength)
	}
	a := newTestAPI(t)
	up, err := a.NewUpstream("hostile", []protocol.Track{vp8Track, opusTrack}, func(protocol.Signal) {}, func(protocol.Track, *rtp.Packet) {})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	err = up.HandleSignal(protocol.Signal{Kind: protocol.SignalOffer, SDP: h.offer})
	if !errors.Is(err, ErrBadOffer) {
		t.Fatalf("90 m-sections: %v, want ErrBadOffer", err)
	}
	t.Logf("refused: %v", err)
	two := newRepeatingParent(t, 2).offer // within the bound, one SSRC twice
	for name, sdp := range map[string]string{
		"ssrc twice":   two,
		"mid twice":    strings.Replace(two, "a=mid:1", "a=mid:0", 1),
		"unknown kind": strings.Replace(two, "m=video", "m=text", 1),
	} {
		if err := checkOffer(sdp, 2); !errors.Is(err, ErrBadOffer) {
			t.Errorf("%s: %v, want ErrBadOffer", name, err)
		}
	}
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	d, err := a.NewDownstream("c", []*Forwarder{f, NewForwarder(opusTrack, testLogger())}, func(protocol.Signal) {})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := checkOffer(d.pc.LocalDescription().SDP, 2); err != nil {
		t.Errorf("the stream's own offer: %v", err)
	}
}
