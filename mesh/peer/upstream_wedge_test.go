package peer

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// This test drives pion into the state the repeated-section offer caused
// (receivers sharing an SRTP stream), in which pion leaves goroutines of its
// own behind after Close. It lives in a file named to run after the leak
// checks of peer_test.go, which would otherwise see them.

// TestCloseDoesNotWaitForWedgedReadLoops: an offer whose m-sections share
// an SSRC (applied here past checkOffer) wedges pion's read loops; Close
// still returns, within its bounded wait.
func TestCloseDoesNotWaitForWedgedReadLoops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := newRepeatingParent(t, 90)
	a := newTestAPI(t)
	var up *Upstream
	answers := make(chan string, 1)
	// The child's candidates reach the hostile parent only once it holds
	// the answer: pion refuses candidates before a remote description, and
	// the child trickles them as soon as it has answered.
	var candMu sync.Mutex
	var early []webrtc.ICECandidateInit
	answered := false
	up, err := a.NewUpstream("hostile", []protocol.Track{vp8Track}, func(s protocol.Signal) {
		switch s.Kind {
		case protocol.SignalAnswer:
			answers <- s.SDP
		case protocol.SignalCandidate:
			var c webrtc.ICECandidateInit
			if json.Unmarshal(s.Candidate, &c) != nil {
				return
			}
			candMu.Lock()
			defer candMu.Unlock()
			if !answered {
				early = append(early, c)
				return
			}
			_ = h.pc.AddICECandidate(c)
		}
	}, func(protocol.Track, *rtp.Packet) {})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	h.pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			return
		}
		raw, _ := json.Marshal(c.ToJSON())
		go func() {
			mu.Lock()
			defer mu.Unlock()
			_ = up.HandleSignal(protocol.Signal{Kind: protocol.SignalCandidate, Candidate: raw})
		}()
	})
	// What HandleSignal does, without its check.
	mu.Lock()
	if err := up.setRemote(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: h.offer}); err != nil {
		t.Fatal(err)
	}
	answer, err := up.pc.CreateAnswer(nil)
	if err == nil {
		err = up.pc.SetLocalDescription(answer)
	}
	if err != nil {
		t.Fatal(err)
	}
	up.sendDescription(protocol.SignalAnswer, up.pc.LocalDescription())
	mu.Unlock()
	if err := h.answer(<-answers); err != nil {
		t.Fatal(err)
	}
	candMu.Lock()
	answered = true
	for _, c := range early {
		_ = h.pc.AddICECandidate(c)
	}
	candMu.Unlock()
	if err := up.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		_ = h.track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(i * 3000), Marker: true},
			Payload: vp8Payload(i, i == 0, true, 300)})
		up.mu.Lock()
		loops := len(up.remotes)
		up.mu.Unlock()
		if loops > 1 && i > 50 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no read loop started")
		case <-time.After(10 * time.Millisecond):
		}
	}
	start := time.Now()
	done := make(chan struct{})
	var closeErr error
	go func() { closeErr = up.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(readLoopWait + 10*time.Second):
		t.Fatal("Close still waits for the read loops")
	}
	t.Logf("Close returned in %v (%v) with %d read loops started", time.Since(start).Round(time.Millisecond), closeErr, len(up.remotes))
}
