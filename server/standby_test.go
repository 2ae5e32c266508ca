package main

import (
	"slices"
	"sync"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// offerCounter counts the SDP offers peers send, by the peer they are for.
type offerCounter struct {
	mu sync.Mutex
	to map[string]int
}

func (o *offerCounter) see(m *protocol.Message) {
	if m.Type != protocol.TypeSignal || m.Sig == nil || m.Sig.Kind != protocol.SignalOffer {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.to == nil {
		o.to = make(map[string]int)
	}
	o.to[m.Peer]++
}

func (o *offerCounter) count(id string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.to[id]
}

// eventCounts is how many parent and standby events v has seen.
func (v *testViewer) eventCounts() [2]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return [2]int{len(v.parentLog), len(v.standbyLog)}
}

// eventsSince returns the parent events (and whether each was a hot
// switch) and standby events after the counts given.
func (v *testViewer) eventsSince(c [2]int) (parents []string, hot []bool, standbys []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.parentLog[c[0]:]), slices.Clone(v.hotLog[c[0]:]), slices.Clone(v.standbyLog[c[1]:])
}

// checkStandbys fails the test if the stream's standby records break a
// rule (coordinator.checkStandbys).
func checkStandbys(t *testing.T, s *Server, stream string) {
	t.Helper()
	c := s.hub.get(stream)
	if c == nil {
		t.Fatalf("no stream %s", stream)
	}
	if err := c.checkStandbys(); err != nil {
		t.Fatal(err)
	}
}

// TestStandbyTakesOverOnKill kills the relay that feeds everyone (as a
// crashed process would: node.Kill, no goodbye). Every orphan had a standby
// link up before the kill; each ends up under that standby parent, plays
// complete frames again, and is sent no new offer: the frames after the
// kill come over the link that was already up.
func TestStandbyTakesOverOnKill(t *testing.T) {
	var offers offerCounter
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 1}, onMessage: offers.see})
	src := startSource(t, url, "hot", 1)
	top := startPeer(t, url, "hot", protocol.RoleRelay, 8, src)
	waitFor(t, 10*time.Second, "relay under the source", func() bool { return top.node.Parent() == src.node.ID() })
	second := startPeer(t, url, "hot", protocol.RoleRelay, 8, src)
	waitFor(t, 10*time.Second, "second relay placed", func() bool { return second.node.Parent() == top.node.ID() })
	viewers := startViewers(t, url, "hot", 4, 30, src)

	// The orphans-to-be: the second relay and the viewers the top relay feeds.
	orphans := []*testViewer{second}
	for _, v := range viewers {
		if v.node.Parent() == top.node.ID() {
			orphans = append(orphans, v)
		}
	}
	if len(orphans) < 2 {
		t.Fatalf("only %d orphans-to-be; the test needs viewers under the top relay", len(orphans))
	}
	for _, o := range orphans {
		waitFor(t, 10*time.Second, "a standby for every orphan-to-be", func() bool { return o.node.Standby() != "" })
	}
	checkStandbys(t, s, "hot")
	standby := make(map[*testViewer]string)
	offersBefore := make(map[*testViewer]int)
	eventsBefore := make(map[*testViewer][2]int)
	for _, o := range orphans {
		standby[o] = o.node.Standby()
		offersBefore[o] = offers.count(o.node.ID())
		eventsBefore[o] = o.eventCounts()
		if standby[o] == top.node.ID() || standby[o] == o.node.ID() {
			t.Fatalf("%s: standby %s is its parent or itself", o.node.ID(), standby[o])
		}
	}
	if standby[second] != src.node.ID() {
		t.Errorf("the heir's standby is %s, want the source (its parent's slot)", standby[second])
	}
	before := make([]int, len(orphans))
	for i, o := range orphans {
		before[i], _, _ = o.counts()
	}

	killed := time.Now()
	top.node.Kill()
	var stalls []float64
	for i, o := range orphans {
		waitFor(t, 30*time.Second, "orphan plays again", func() bool { f, _, _ := o.counts(); return f >= before[i]+30 })
		stalls = append(stalls, float64(o.firstFrameAfter(killed).Sub(killed).Microseconds())/1000)
		if got := o.node.Parent(); got != standby[o] {
			t.Errorf("orphan %s: parent %s after the kill, standby was %s", o.node.ID(), got, standby[o])
		}
		parents, hot, standbys := o.eventsSince(eventsBefore[o])
		if len(parents) != 1 || parents[0] != standby[o] || !hot[0] {
			t.Errorf("orphan %s: parents %v (hot %v) after the kill, want its standby link to %s only", o.node.ID(), parents, hot, standby[o])
		}
		// Offers since the kill are for new standby links only, none for the
		// tree edge: the switch needed no negotiation.
		newLinks := 0
		for _, sb := range standbys {
			if sb != "" {
				newLinks++
			}
		}
		if n := offers.count(o.node.ID()) - offersBefore[o]; n > newLinks {
			t.Errorf("orphan %s was sent %d offers after the kill for %d new standby links", o.node.ID(), n, newLinks)
		}
		if _, mismatch, _ := o.counts(); mismatch != 0 {
			t.Errorf("orphan %s: %d corrupted frames", o.node.ID(), mismatch)
		}
	}
	t.Logf("kill → next complete frame per orphan, ms: %.0f", stalls)
	// The tree plans standbys again after the move: the new relays' children
	// get new ones, and every record is valid.
	waitFor(t, 10*time.Second, "new standbys planned", func() bool {
		return s.hub.get("hot").checkStandbys() == nil && slices.ContainsFunc(viewers, func(v *testViewer) bool { return v.node.Standby() != "" })
	})
	checkStandbys(t, s, "hot")
}
