package main

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// candidateBurst sends n ICE candidates from p to peer as fast as the
// socket takes them, each naming a different loopback port. It returns how
// many were written before the connection failed.
func candidateBurst(p *livePeer, peer string, n int) int {
	for i := range n {
		c := fmt.Sprintf(`{"candidate":"candidate:%d 1 udp 2130706431 127.0.0.1 %d typ host","sdpMid":"0","sdpMLineIndex":0}`, i, 20000+i)
		msg := `{"type":"signal","peer":"` + peer + `","signal":{"kind":"candidate","candidate":` + c + `}}`
		if p.conn.WriteMessage(websocket.TextMessage, []byte(msg)) != nil {
			return i
		}
	}
	return n
}

// codes counts the error codes p has received so far.
func (p *livePeer) codes() map[string]int {
	out := map[string]int{}
	for {
		select {
		case m := <-p.in:
			if m.Type == protocol.TypeError {
				out[m.Code]++
			}
		default:
			return out
		}
	}
}

// TestCandidateBurstsNeverCutTheParent is finding 2 of issue 11: three
// children each sending 400 candidates to their parent (each inside its own
// connection's burst) got the parent disconnected, its send buffer full of
// what others sent. Now each edge carries at most MaxEdgeCandidates, a
// receiver's queue takes forwarded signals only up to half full, and the
// senders are told rate_limited; the parent, a real pion source, stays up
// and its honest viewer keeps playing.
func TestCandidateBurstsNeverCutTheParent(t *testing.T) {
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 4}})
	src := startSource(t, url, "burst", 4)
	viewer := startPeer(t, url, "burst", protocol.RoleViewer, 0, src)
	waitFor(t, 30*time.Second, "the honest viewer plays", func() bool { f, _, _ := viewer.counts(); return f >= 30 })

	// Three children that never answer their parent's offer: every
	// candidate they send waits in the parent's queue for an answer.
	var kids []*livePeer
	for range 3 {
		k, id := join(t, url, protocol.RoleViewer, protocol.KindBrowser, "burst", 0)
		waitFor(t, 10*time.Second, "the child under the source", func() bool { return parentOf(s, "burst", id) == src.node.ID() })
		kids = append(kids, k)
	}
	const burst = 400
	var wg sync.WaitGroup
	for _, k := range kids {
		wg.Go(func() { candidateBurst(k, src.node.ID(), burst) })
	}
	wg.Wait()

	// A bad message after each burst comes back once the server has
	// handled the whole burst; by then each sender was told rate_limited.
	for i, k := range kids {
		k.send(`{"type":"teleport"}`)
		codes := map[string]int{}
		waitFor(t, 10*time.Second, "the burst handled", func() bool {
			select {
			case <-src.node.Done():
				t.Fatalf("the parent was disconnected by its children's candidates: %v", src.node.Err())
			default:
			}
			for c, n := range k.codes() {
				codes[c] += n
			}
			return codes[protocol.CodeBadMessage] > 0
		})
		if codes[protocol.CodeRateLimited] == 0 {
			t.Errorf("child %d was not told its candidates were refused: %v", i, codes)
		}
	}
	// The parent is up, still the stream's source, and its viewer plays.
	before, _, _ := viewer.counts()
	waitFor(t, 20*time.Second, "the honest viewer keeps playing", func() bool { f, _, _ := viewer.counts(); return f >= before+30 })
	select {
	case <-src.node.Done():
		t.Fatalf("the parent was disconnected by its children's candidates: %v", src.node.Err())
	default:
	}
	if co := s.hub.get("burst"); co == nil || !co.info().Live {
		t.Fatal("the stream lost its source")
	}
	for i, k := range kids {
		select {
		case <-k.done:
			t.Errorf("child %d was disconnected: %v", i, k.readErr())
		default:
		}
	}
	resp, err := http.Get(url + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("server down: %v", err)
	}
	resp.Body.Close()
}

// TestCandidatesBoundedPerEdge counts what a parent receives when each of
// three children sends 400 candidates and then its answer: the answer comes
// after everything forwarded before it, so the count is exact.
func TestCandidatesBoundedPerEdge(t *testing.T) {
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 4}})
	parent, parentID := join(t, url, protocol.RoleSource, protocol.KindGo, "edge", 4)
	for i := range 3 {
		k, id := join(t, url, protocol.RoleViewer, protocol.KindBrowser, "edge", 0)
		waitFor(t, 10*time.Second, "the child under the source", func() bool { return parentOf(s, "edge", id) == parentID })
		candidateBurst(k, parentID, 400)
		k.send(`{"type":"signal","peer":"` + parentID + `","signal":{"kind":"answer","sdp":"v=0"}}`)
		candidates := 0
		for answered := false; !answered; {
			m := parent.next(protocol.TypeSignal) // fails if the parent is disconnected
			switch {
			case m.Peer != id:
				t.Fatalf("a signal from %s, want %s", m.Peer, id)
			case m.Sig.Kind == protocol.SignalCandidate:
				candidates++
			default:
				answered = true
			}
		}
		if candidates != protocol.MaxEdgeCandidates {
			t.Errorf("child %d: the parent got %d of its 400 candidates, want %d", i, candidates, protocol.MaxEdgeCandidates)
		}
		limited := 0
		waitFor(t, 10*time.Second, "the child told its candidates were refused", func() bool {
			limited += k.codes()[protocol.CodeRateLimited]
			return limited > 0
		})
	}
	select {
	case <-parent.done:
		t.Fatalf("the parent was disconnected: %v", parent.readErr())
	default:
	}
}
