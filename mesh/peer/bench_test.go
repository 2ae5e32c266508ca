package peer

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// drained waits (sleeping, so the wait costs no CPU) until every child of f
// has written out its queue.
func drained(f *Forwarder) {
	for {
		busy := false
		for _, c := range *f.children.Load() {
			if c.queued() > 0 {
				busy = true
				break
			}
		}
		if !busy {
			return
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// BenchmarkForwarder: one packet in per op, fanned out to N children whose
// WriteStream discards; measures WriteRTP + queue + writer goroutines.
func BenchmarkForwarder(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("children=%d", n), func(b *testing.B) {
			f := NewForwarder(vp8Track, testLogger())
			defer f.Close()
			for i := range n {
				bindFake(b, f, fmt.Sprint(i), webrtc.SSRC(i+1), &discardWriter{})
			}
			p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 5}, Payload: vp8Payload(0, true, true, 1100)}
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				p.SequenceNumber++
				_ = f.WriteRTP(p)
				if i%64 == 63 { // a few frames' worth, then let the writers catch up
					drained(f)
				}
			}
			drained(f)
			b.StopTimer()
			st := f.Stats()
			out := float64(st.PacketsOut)
			b.ReportMetric(float64(cpuTime()-cpu0)/out, "cpu-ns/pkt-out")
			b.ReportMetric(float64(st.Drops)/float64(b.N), "drops/op")
		})
	}
}

// naiveDownstream is the baseline from FIELD-NOTES: one TrackLocalStaticRTP
// added to every child's PeerConnection, written synchronously.
func naiveDownstream(b *testing.B, a *API, track *webrtc.TrackLocalStaticRTP, send func(protocol.Signal)) (*conn, func()) {
	pc, err := a.newPeerConnection()
	if err != nil {
		b.Fatal(err)
	}
	c := newConn(pc, send, a.logger)
	s, err := pc.AddTrack(track)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { // drain RTCP, as a fair naive relay must for NACKs to work
		defer close(done)
		buf := make([]byte, 1500)
		for {
			if _, _, err := s.Read(buf); err != nil {
				return
			}
		}
	}()
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := pc.SetLocalDescription(offer); err != nil {
		b.Fatal(err)
	}
	c.sendDescription(protocol.SignalOffer, pc.LocalDescription())
	return c, func() { _ = c.closePC(); <-done }
}

// BenchmarkPionFanout compares the Forwarder with naive pion fan-out through
// real PeerConnections on loopback. One op is one 1100-byte VP8 packet in;
// cpu-ns/pkt-out is the whole process's CPU (relay and the in-process
// receivers, which cost the same in both variants) per delivered packet.
func BenchmarkPionFanout(b *testing.B) {
	for _, n := range []int{1, 10} {
		for _, variant := range []string{"naive", "forwarder"} {
			b.Run(fmt.Sprintf("%s/children=%d", variant, n), func(b *testing.B) {
				benchPion(b, variant, n)
			})
		}
	}
}

func benchPion(b *testing.B, variant string, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := newTestAPI(b)
	var received atomic.Uint64
	sink := func(protocol.Track, *rtp.Packet) { received.Add(1) }

	var write func(*rtp.Packet) error
	var settle func()
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	switch variant {
	case "forwarder":
		f := NewForwarder(vp8Track, testLogger())
		closers = append(closers, f.Close)
		for i := range n {
			l := newLink(b, ctx, a, fmt.Sprint("c", i), []*Forwarder{f}, sink)
			closers = append(closers, l.close)
		}
		write, settle = f.WriteRTP, func() { drained(f) }
	case "naive":
		track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", StreamID)
		if err != nil {
			b.Fatal(err)
		}
		for range n {
			var down atomic.Pointer[conn]
			toDown := newPump(b, func() func(protocol.Signal) error {
				for down.Load() == nil {
					time.Sleep(time.Millisecond)
				}
				c := down.Load()
				return func(s protocol.Signal) error {
					if s.Kind == protocol.SignalAnswer {
						return c.setRemote(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: s.SDP})
					}
					return c.addRemoteCandidate(s.Candidate, s.Link)
				}
			})
			up, err := a.NewUpstream("p", []protocol.Track{vp8Track}, toDown.send, sink)
			if err != nil {
				b.Fatal(err)
			}
			toUp := newPump(b, func() func(protocol.Signal) error { return up.HandleSignal })
			c, closeNaive := naiveDownstream(b, a, track, toUp.send)
			down.Store(c)
			closers = append(closers, func() { toUp.close(); toDown.close(); closeNaive(); _ = up.Close() })
			if err := c.waitConnected(ctx); err != nil {
				b.Fatal(err)
			}
		}
		write, settle = track.WriteRTP, func() {}
	}

	// Warm up until every child receives, so the timed loop measures steady state.
	p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 5, PayloadType: 96}}
	payload := vp8Payload(0, true, true, 1100)
	p.Payload = payload
	for received.Load() < uint64(n) {
		p.SequenceNumber++
		_ = write(p)
		time.Sleep(time.Millisecond)
		if ctx.Err() != nil {
			b.Fatal("no media during warm-up")
		}
	}
	time.Sleep(50 * time.Millisecond)
	recv0 := received.Load()
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p.SequenceNumber++
		p.Timestamp = uint32(i/8) * 3000
		// Every 8th packet starts a keyframe so a child that dropped recovers;
		// between 8-packet frames the relay waits for its writers, then pauses
		// like a 2 Mbps stream would (in both variants alike).
		payload[3] = 1
		if i%8 == 0 {
			payload[3] = 0
		}
		_ = write(p)
		if i%8 == 7 {
			settle()
			time.Sleep(200 * time.Microsecond)
		}
	}
	settle()
	b.StopTimer()
	// Let the receivers catch up before counting.
	want := recv0 + uint64(b.N*n)
	deadline := time.Now().Add(2 * time.Second)
	for received.Load() < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	got := received.Load() - recv0
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(max(got, 1)), "cpu-ns/pkt-out")
	b.ReportMetric(100*float64(got)/float64(b.N*n), "delivered-%")
}
