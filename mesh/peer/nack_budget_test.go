package peer

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// nackFlooder is a hostile child: a plain pion PeerConnection (none of this
// package's code) that answers a Downstream's offer, reads its video track
// and, every 20 ms, NACKs the last 256 sequence numbers it saw. SRTP replay
// protection is off, so every retransmission the parent sends is counted.
type nackFlooder struct {
	pc      *webrtc.PeerConnection
	bytes   atomic.Uint64 // RTP bytes received, retransmissions included
	packets atomic.Uint64
	nacks   atomic.Uint64 // NACK packets written
	mu      sync.Mutex
	seen    map[uint16]int // payload bytes of each distinct sequence number
	wg      sync.WaitGroup
	stop    chan struct{}
}

func newNACKFlooder(t *testing.T) *nackFlooder {
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
	se.DisableSRTPReplayProtection(true)
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	h := &nackFlooder{pc: pc, seen: map[uint16]int{}, stop: make(chan struct{})}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() != webrtc.RTPCodecTypeVideo {
			return
		}
		h.wg.Add(1)
		defer h.wg.Done()
		var highest atomic.Int32
		highest.Store(-1)
		h.wg.Add(1)
		go h.flood(uint32(tr.SSRC()), &highest)
		buf := make([]byte, 1500)
		var p rtp.Packet
		for {
			n, _, err := tr.Read(buf)
			if err != nil {
				return
			}
			if p.Unmarshal(buf[:n]) != nil {
				continue
			}
			h.bytes.Add(uint64(n))
			h.packets.Add(1)
			h.mu.Lock()
			h.seen[p.SequenceNumber] = len(p.Payload)
			h.mu.Unlock()
			if hi := highest.Load(); hi < 0 || int16(p.SequenceNumber-uint16(hi)) > 0 {
				highest.Store(int32(p.SequenceNumber))
			}
		}
	})
	t.Cleanup(h.close)
	return h
}

// flood NACKs the 256 sequence numbers up to the highest seen, every 20 ms.
func (h *nackFlooder) flood(ssrc uint32, highest *atomic.Int32) {
	defer h.wg.Done()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	seqs := make([]uint16, 256)
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
		}
		hi := highest.Load()
		if hi < 0 {
			continue
		}
		for i := range seqs {
			seqs[i] = uint16(hi) - uint16(255-i)
		}
		pkt := &rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: ssrc, Nacks: rtcp.NackPairsFromSequenceNumbers(seqs)}
		if h.pc.WriteRTCP([]rtcp.Packet{pkt}) == nil {
			h.nacks.Add(1)
		}
	}
}

// uniqueBytes is the payload bytes of the distinct packets received.
func (h *nackFlooder) uniqueBytes() (int, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sum := 0
	for _, n := range h.seen {
		sum += n
	}
	return sum, len(h.seen)
}

func (h *nackFlooder) close() {
	select {
	case <-h.stop:
		return
	default:
	}
	close(h.stop)
	_ = h.pc.Close()
	h.wg.Wait()
}

// connect answers d's offer, trickling candidates both ways; toChild is
// where d's signals arrive.
func (h *nackFlooder) connect(t *testing.T, ctx context.Context, toChild <-chan protocol.Signal, d func() *Downstream) {
	t.Helper()
	h.pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			return
		}
		raw, _ := json.Marshal(c.ToJSON())
		go func() { _ = d().HandleSignal(protocol.Signal{Kind: protocol.SignalCandidate, Candidate: raw}) }()
	})
	connected := make(chan struct{})
	var once sync.Once
	h.pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(connected) })
		}
	})
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			var s protocol.Signal
			select {
			case s = <-toChild:
			case <-h.stop:
				return
			}
			switch s.Kind {
			case protocol.SignalOffer:
				if err := h.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: s.SDP}); err != nil {
					t.Errorf("hostile child: offer: %v", err)
					return
				}
				answer, err := h.pc.CreateAnswer(nil)
				if err == nil {
					err = h.pc.SetLocalDescription(answer)
				}
				if err != nil {
					t.Errorf("hostile child: answer: %v", err)
					return
				}
				sdp := h.pc.LocalDescription().SDP
				go func() { _ = d().HandleSignal(protocol.Signal{Kind: protocol.SignalAnswer, SDP: sdp}) }()
			case protocol.SignalCandidate:
				var c webrtc.ICECandidateInit
				if json.Unmarshal(s.Candidate, &c) == nil {
					_ = h.pc.AddICECandidate(c)
				}
			}
		}
	}()
	select {
	case <-connected:
	case <-ctx.Done():
		t.Fatal("hostile child did not connect")
	}
}

// TestNACKFloodIsBudgeted: a hostile child NACKing its last 256 packets
// every 20 ms gets at most its retransmission budget (a quarter of what it
// is sent, plus the floor and one bucket), the refused requests are
// counted, and an honest sibling on the same Forwarder gets every frame.
func TestNACKFloodIsBudgeted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := newTestAPI(t)
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	honest := &seqSet{seen: map[uint16]bool{}}
	hl := newLink(t, ctx, a, "honest", []*Forwarder{f}, honest.sink)
	defer hl.close()

	h := newNACKFlooder(t)
	toChild := make(chan protocol.Signal, 256)
	var down atomic.Pointer[Downstream]
	ready := make(chan struct{})
	d, err := a.NewDownstream("hostile", []*Forwarder{f}, func(s protocol.Signal) {
		select {
		case toChild <- s:
		case <-ctx.Done():
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	down.Store(d)
	close(ready)
	defer func() { _ = d.Close() }()
	h.connect(t, ctx, toChild, func() *Downstream { <-ready; return down.Load() })
	waitFor(t, ctx, "the hostile child bound", func() bool { return f.Stats().Children == 2 })

	// ~1 Mbit/s: 30 frames/s of 4 packets of 1000 bytes, for 4 s.
	const pkts, size, frames = 4, 1000, 120
	p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 5, PayloadType: 96}}
	tick := time.NewTicker(time.Second / 30)
	start := time.Now()
	for i := range frames {
		synthFrame(t, f, p, i, i%30 == 0, pkts, size)
		<-tick.C
	}
	tick.Stop()
	elapsed := time.Since(start)
	waitFor(t, ctx, "the honest child's last packet", func() bool {
		honest.mu.Lock()
		defer honest.mu.Unlock()
		return honest.seen[frames*pkts-1]
	})
	h.close()

	unique, distinct := h.uniqueBytes()
	total := int(h.bytes.Load())
	resentBytes := total - unique - distinct*12 // the RTP header of each first copy
	st := f.Stats()
	ss := d.SendStats()
	budget := unique/resendShare + int(elapsed.Seconds()*resendFloor) + resendBurst + size + resendOverhead
	t.Logf("hostile child: %d NACKs, %d packets (%d distinct), %.2f Mbit/s pulled against a stream of %.2f Mbit/s; "+
		"retransmitted %d bytes, budget %d; forwarder resent %d, refused %d; connection resent %d, refused %d",
		h.nacks.Load(), h.packets.Load(), distinct, float64(total)*8/elapsed.Seconds()/1e6,
		float64(unique+distinct*12)*8/elapsed.Seconds()/1e6, resentBytes, budget, st.Resent, st.Refused, ss.Resent, ss.Refused)
	if h.nacks.Load() < 50 {
		t.Fatalf("the hostile child sent only %d NACKs", h.nacks.Load())
	}
	if resentBytes > budget {
		t.Errorf("the hostile child pulled %d bytes of retransmissions, over its budget of %d", resentBytes, budget)
	}
	if st.Refused == 0 || ss.Refused == 0 {
		t.Errorf("no refused retransmission counted: forwarder %+v, connection %+v", st, ss)
	}
	honest.mu.Lock()
	defer honest.mu.Unlock()
	for s := range frames * pkts {
		if !honest.seen[uint16(s)] {
			t.Fatalf("the honest child missed packet %d", s)
		}
	}
}
