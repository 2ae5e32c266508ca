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

// TestStandbySwitchWithoutServer: a relay that keeps its signaling up but
// sends no media (it ignores its offers) fails its children in a way only
// they can see. Each child whose standby link is up switches to it by
// itself after the stall timeout, before the server knows anything is
// wrong, and plays from it: its new parent is its standby, the switch was
// over the link already up, and no second offer was ever sent to it.
func TestStandbySwitchWithoutServer(t *testing.T) {
	var offers offerCounter
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2}, onMessage: offers.see})
	src := startSource(t, url, "silent", 2)
	hung := dialRaw(t, url)
	hung.sendText(`{"type":"hello","v":1,"role":"relay","kind":"go","stream":"silent","capacity":8}`)
	hungID := hung.next(protocol.TypeWelcome).ID
	go func() { // read (and so answer pings) but never act
		for {
			if _, _, err := hung.conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	healthy := startPeer(t, url, "silent", protocol.RoleRelay, 8, nil)
	waitFor(t, 10*time.Second, "healthy relay placed", func() bool { return healthy.node.Parent() == src.node.ID() })

	type watched struct {
		v       *testViewer
		standby string
	}
	var under []watched
	var viewers []*testViewer
	for range 6 {
		v := startPeer(t, url, "silent", protocol.RoleViewer, 0, src)
		waitFor(t, 10*time.Second, "viewer placed", func() bool { return v.node.Parent() != "" })
		viewers = append(viewers, v)
	}
	for _, v := range viewers {
		if v.node.Parent() != hungID {
			continue
		}
		// Read at once: the switch comes a stall timeout after the join.
		if sb := v.node.Standby(); sb == healthy.node.ID() {
			under = append(under, watched{v, sb})
		}
	}
	if len(under) == 0 {
		t.Fatal("no viewer under the silent relay with the healthy relay as its standby; the test needs one")
	}
	for _, w := range under {
		waitFor(t, 30*time.Second, "the switched viewer plays", func() bool { f, _, _ := w.v.counts(); return f >= 30 })
		if p := w.v.node.Parent(); p != w.standby {
			t.Errorf("viewer %s: parent %s, its standby was %s", w.v.node.ID(), p, w.standby)
		}
		parents, hot, standbys := w.v.eventsSince([2]int{})
		if len(parents) < 2 || parents[0] != hungID || parents[1] != w.standby || !hot[1] {
			t.Errorf("viewer %s: parents %v (hot %v), want the silent relay, then its standby link", w.v.node.ID(), parents, hot)
		}
		// One offer per standby link it was given (the silent relay never
		// offers), and none for the switch.
		links := 0
		for _, sb := range standbys {
			if sb != "" && sb != hungID {
				links++
			}
		}
		if n := offers.count(w.v.node.ID()); n != links {
			t.Errorf("viewer %s was sent %d offers for %d standby links (%v): the switch was negotiated", w.v.node.ID(), n, links, standbys)
		}
	}
	for _, v := range viewers {
		waitFor(t, 30*time.Second, "every viewer plays", func() bool { f, _, _ := v.counts(); return f >= 30 })
	}
	checkStandbys(t, s, "silent")
	t.Logf("%d of %d viewers under the silent relay switched to their standby by themselves", len(under), len(viewers))
}
