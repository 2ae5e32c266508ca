package main

import (
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestWHIPKeyframeRequestsMergedAndThrottled: six viewers that join a
// WHIP stream before its first keyframe each ask for one, and a child that
// sends a PLI every 50 ms for 1.5 s asks twenty-nine times more; the
// publisher gets these merged, one per 300 ms at most.
func TestWHIPKeyframeRequestsMergedAndThrottled(t *testing.T) {
	_, url := startServer(t, tree.Config{SourceCapacity: 8})
	obs := newWHIPClient(t)
	if code, body := obs.publish(url, "kf", ""); code != http.StatusCreated {
		t.Fatalf("POST: %d %s", code, body)
	}
	var viewers []*testViewer
	for range 6 {
		viewers = append(viewers, startPeer(t, url, "kf", protocol.RoleViewer, 0, obs.src))
	}
	waitFor(t, 20*time.Second, "the publisher is asked for a keyframe", func() bool { p, _ := obs.rtcpSeen(); return len(p) > 0 })
	obs.play(h264Clip)
	for _, v := range viewers {
		waitFor(t, 30*time.Second, "viewers play", func() bool { f, _, _ := v.counts(); return f >= 30 })
	}
	c := newRawChild(t, url, "kf")
	waitFor(t, 30*time.Second, "the raw child receives video", func() bool { return c.received() >= 50 })
	before, _ := obs.rtcpSeen()
	c.mu.Lock()
	ssrc := c.ssrc
	c.mu.Unlock()
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	for range 30 {
		<-tick.C
		if err := c.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	window := time.Since(start)
	waitFor(t, 5*time.Second, "the last request's answer", func() bool { p, _ := obs.rtcpSeen(); return len(p) > len(before) })
	all, _ := obs.rtcpSeen()
	plis := all[len(before):]
	// Sent at most one per 300 ms; arrival may bunch them on a busy
	// machine, but never to the child's own 50 ms.
	for i := 1; i < len(all); i++ {
		if gap := all[i].Sub(all[i-1]); gap < 100*time.Millisecond {
			t.Errorf("keyframe requests %d and %d only %s apart; the tree throttles them to one per 300 ms", i-1, i, gap)
		}
	}
	if max := 2 + int(window/(300*time.Millisecond)); len(plis) < 2 || len(plis) > max {
		t.Errorf("30 PLIs in %s reached the publisher as %d; want them merged into 2..%d", window.Round(time.Millisecond), len(plis), max)
	}
	t.Logf("joins: %d keyframe requests; 30 PLIs in %s: %d", len(before), window.Round(time.Millisecond), len(plis))
}

// rawChild is a tree child built on a bare pion PeerConnection (no
// interceptors: it NACKs only when told to), over raw signaling.
type rawChild struct {
	sig *sigPeer
	pc  *webrtc.PeerConnection

	mu     sync.Mutex
	seen   map[uint16]int // video sequence number → times received
	order  []uint16
	ssrc   uint32
	parent string
}

func newRawChild(t *testing.T, url, stream string) *rawChild {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(n string) bool { return n == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	// The test NACKs packets it did receive, to see them again: SRTP's
	// replay protection would drop the copies.
	se.DisableSRTPReplayProtection(true)
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	c := &rawChild{sig: dialSig(t, url, stream, protocol.RoleViewer, protocol.KindGo, 0), pc: pc, seen: map[uint16]int{}}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() != webrtc.RTPCodecTypeVideo {
			return
		}
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.ssrc = uint32(tr.SSRC())
			if c.seen[p.SequenceNumber] == 0 {
				c.order = append(c.order, p.SequenceNumber)
			}
			c.seen[p.SequenceNumber]++
			c.mu.Unlock()
		}
	})
	pc.OnICECandidate(func(ic *webrtc.ICECandidate) {
		if ic == nil {
			return
		}
		raw, _ := json.Marshal(ic.ToJSON())
		c.mu.Lock()
		parent := c.parent
		c.mu.Unlock()
		c.sig.send(&protocol.Message{Type: protocol.TypeSignal, Peer: parent, Sig: &protocol.Signal{Kind: protocol.SignalCandidate, Candidate: raw}})
	})
	// Answer the parent's offer; its candidates follow.
	var offer *protocol.Message
	c.sig.waitFor(20*time.Second, "the parent's offer", func(m *protocol.Message) bool {
		if m.Type == protocol.TypeSignal && m.Sig != nil && m.Sig.Kind == protocol.SignalOffer {
			offer = m
			return true
		}
		return false
	})
	c.parent = offer.Peer
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer.Sig.SDP}); err != nil {
		t.Fatal(err)
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	c.sig.send(&protocol.Message{Type: protocol.TypeSignal, Peer: c.parent, Sig: &protocol.Signal{Kind: protocol.SignalAnswer, SDP: pc.LocalDescription().SDP}})
	for _, m := range c.sig.messages() {
		if m.Type == protocol.TypeSignal && m.Sig != nil && m.Sig.Kind == protocol.SignalCandidate {
			var init webrtc.ICECandidateInit
			if json.Unmarshal(m.Sig.Candidate, &init) == nil {
				_ = pc.AddICECandidate(init)
			}
		}
	}
	return c
}

func (c *rawChild) received() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.order)
}

// TestWHIPNACKAnsweredByServer: the first hop below a WHIP publisher is
// the server's source node, and a child's NACK is answered from that
// node's send buffer: the packet comes again, and the publisher is never
// asked for it.
func TestWHIPNACKAnsweredByServer(t *testing.T) {
	lightTest(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	obs := newWHIPClient(t)
	if code, body := obs.publish(url, "nack", ""); code != http.StatusCreated {
		t.Fatalf("POST: %d %s", code, body)
	}
	obs.play(h264Clip)
	c := newRawChild(t, url, "nack")
	waitFor(t, 30*time.Second, "the raw child receives video", func() bool { return c.received() >= 200 })
	c.mu.Lock()
	asked := c.order[len(c.order)-100 : len(c.order)-90] // sent ~0.3 s ago, well inside the 256-packet ring
	ssrc := c.ssrc
	c.mu.Unlock()
	var pairs []rtcp.NackPair
	for _, seq := range asked {
		pairs = append(pairs, rtcp.NackPair{PacketID: seq})
	}
	if err := c.pc.WriteRTCP([]rtcp.Packet{&rtcp.TransportLayerNack{MediaSSRC: ssrc, Nacks: pairs}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the NACKed packets come again", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, seq := range asked {
			if c.seen[seq] < 2 {
				return false
			}
		}
		return true
	})
	if _, nacks := obs.rtcpSeen(); nacks != 0 {
		t.Errorf("the publisher got %d NACKs; the server's buffer should have answered", nacks)
	}
}
