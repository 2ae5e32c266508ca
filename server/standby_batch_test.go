package main

import (
	"fmt"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// batchTree is a coordinator with a proven tree of Go relays (capacity 4)
// and viewers: every placed peer has reported live from its parent, so
// relays took their full capacity, and the standby plans have run.
type batchTree struct {
	t     *testing.T
	c     *coordinator
	peers map[string]*peerConn
}

func newBatchTree(t *testing.T, relays, viewers int) *batchTree {
	c := newCoordinator("batch", tree.Config{SourceCapacity: 2}, testLogger(), nil)
	b := &batchTree{t: t, c: c, peers: map[string]*peerConn{}}
	b.join(protocol.RoleSource, 2)
	for i := range relays + viewers {
		if i < relays {
			b.join(protocol.RoleRelay, 4)
		} else {
			b.join(protocol.RoleViewer, 0)
		}
		b.live()
	}
	for range 4 {
		b.live()
	}
	return b
}

func (b *batchTree) join(role protocol.Role, capacity int) *peerConn {
	hello := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role, Kind: protocol.KindGo, Stream: "batch", Capacity: capacity}
	if role == protocol.RoleSource {
		hello.Tracks = []protocol.Track{{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}}
	}
	p := newTestPeer(hello)
	if err := b.c.join(p, hello); err != nil {
		b.t.Fatal(err)
	}
	b.peers[p.id] = p
	return p
}

// live has every placed peer report its parent's media.
func (b *batchTree) live() {
	for _, p := range b.peers {
		b.c.mu.Lock()
		parent, placed := b.c.tree.Parent(p.id)
		b.c.mu.Unlock()
		if placed && parent != "" {
			b.c.report(p, &protocol.Message{Type: protocol.TypeLive, Peer: parent})
		}
	}
}

// waitPlanned waits for the batched standby plan to have run.
func (b *batchTree) waitPlanned() {
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.c.mu.Lock()
		done := b.c.standby.dirty == nil && b.c.standby.timer == nil
		b.c.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatal("the batched standby plan never ran")
		}
		time.Sleep(time.Millisecond)
	}
}

// checkFresh fails unless each of ids holds the standby a plan made now
// gives it (unless that parent holds all the links it may), and returns
// how many hold one.
func (b *batchTree) checkFresh(what string, ids []string) int {
	b.t.Helper()
	c := b.c
	c.mu.Lock()
	defer c.mu.Unlock()
	fresh, held := make(standbyPlans), 0
	for _, id := range ids {
		want := c.planStandby(id, fresh)
		if got := c.standby.of[id]; got != want && want != "" {
			b.t.Fatalf("%s: %s's standby is %q, a plan now says %q", what, id, got, want)
		}
		if c.standby.of[id] != "" {
			held++
		}
	}
	return held
}

// TestStandbyBatchedBurst checks the batched standby plans of a burst of
// joins (standby_batch.go): while the batch waits the records keep every
// rule; once its timer fired every peer of the burst holds the standby a
// plan made now gives it; and a relay that crashes right after a burst,
// before its batch is planned, sends each orphan to the standby link it
// holds, even one a plan made now would not name, when that parent still
// has room for it, and leaves nothing waiting.
func TestStandbyBatchedBurst(t *testing.T) {
	lightTest(t)
	b := newBatchTree(t, 40, 40) // 162 slots for 140 peers
	c := b.c
	b.waitPlanned()
	if err := c.checkStandbys(); err != nil {
		t.Fatal(err)
	}

	// A burst on the real timer.
	var burst []string
	for range 30 {
		burst = append(burst, b.join(protocol.RoleViewer, 0).id)
		if err := c.checkStandbys(); err != nil {
			t.Fatalf("during the burst: %v", err)
		}
	}
	b.live() // the burst plays: relays on trial take their full capacity
	b.waitPlanned()
	if err := c.checkStandbys(); err != nil {
		t.Fatal(err)
	}
	if n := b.checkFresh("after the burst", burst); n == 0 {
		t.Fatal("no peer of the burst holds a standby: the tree is too shallow to test anything")
	}

	// A second burst whose batch waits (a timer that never fires here),
	// then a relay crashes.
	c.mu.Lock()
	c.standby.delay = time.Hour
	c.mu.Unlock()
	burst = burst[:0]
	for range 30 {
		burst = append(burst, b.join(protocol.RoleViewer, 0).id)
	}
	c.mu.Lock()
	waiting := len(c.standby.dirty)
	var victim string
	var via map[string]string
	room := map[string]int{} // free slots of each standby parent named in via
	for id := range b.peers {
		if id == c.source.id {
			continue
		}
		v := c.standbysOfChildren(id)
		free := map[string]int{}
		fits := 0
		for _, s := range v {
			if _, ok := free[s]; !ok {
				free[s] = c.tree.Free(s)
			}
			if free[s] > 0 {
				fits++
			}
		}
		if fits > 0 && len(v) > len(via) {
			victim, via, room = id, v, free
		}
	}
	// One orphan's link goes stale: it holds a standby parent that is not
	// where a plan made now sends it, but that still has room for it.
	plan := c.tree.StandbysOf(victim)
	stale, staleTo := "", ""
	for k := range via {
		for id, q := range b.peers {
			if id == victim || id == c.source.id || id == k || id == plan[k] || id == via[k] || c.tree.Under(id, k) || c.tree.Under(id, victim) ||
				c.tree.Depth(id) > c.tree.Depth(plan[k]) || // no deeper than a plan would go
				!standbyCapable(q) || c.tree.Free(id) <= room[id] || len(c.standby.held[id]) >= standbyPerSlot*c.tree.Capacity(id) {
				continue
			}
			c.restandby(k, id)
			stale, staleTo, via[k] = k, id, id
			room[id] = c.tree.Free(id)
			break
		}
		if stale != "" {
			break
		}
	}
	c.mu.Unlock()
	if stale == "" {
		t.Fatal("found no parent with room to make a stale standby link")
	}
	if waiting == 0 {
		t.Fatal("the second burst left no batch waiting")
	}
	if err := c.checkStandbys(); err != nil {
		t.Fatalf("with the batch waiting: %v", err)
	}
	if victim == "" {
		t.Fatal("no relay has a child whose standby parent has room: the tree is too full to test anything")
	}
	c.gone(b.peers[victim], "crash")
	delete(b.peers, victim)

	c.mu.Lock()
	left := c.standby.dirty != nil || c.standby.timer != nil
	moved := 0
	for k, s := range via {
		if parent, _ := c.tree.Parent(k); parent == s {
			moved++
		}
	}
	staleAt, _ := c.tree.Parent(stale)
	treeErr := c.tree.Check()
	c.mu.Unlock()
	if left {
		t.Error("the departure left the batch waiting")
	}
	if staleAt != staleTo {
		t.Errorf("the orphan %s holding a stale standby %s went to %q instead", stale, staleTo, staleAt)
	}
	if treeErr != nil {
		t.Fatal(treeErr)
	}
	if err := c.checkStandbys(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for id := range b.peers {
		ids = append(ids, id)
	}
	b.checkFresh("after the departure", burst)
	t.Logf("%d peers; the second burst left %d peers to plan; %s's %d orphans with a standby, %d moved to it", len(ids), waiting, victim, len(via), moved)
}

// BenchmarkCoordinatorRamp measures what a join costs the coordinator in a
// ramp shaped like `client load`'s: Go peers, 2 % of them relays of
// capacity 64, each reporting its parent's media right after it is placed
// (so relays prove themselves and take queued peers), standby plans
// included. "each" plans standbys at every join and live report, as before
// batching; "batchedN" plans them once every N joins (at 400 joins/s a
// 25 ms batch holds 10). Run with -benchtime=5000x: the tree grows with
// b.N (and the search for peers with a new parent is quadratic, outside
// the timer).
func BenchmarkCoordinatorRamp(b *testing.B) {
	for _, every := range []int{0, 10, 100} {
		name := "each"
		if every > 0 {
			name = fmt.Sprintf("batched%d", every)
		}
		b.Run(name, func(b *testing.B) { benchRamp(b, every) })
	}
}

func benchRamp(b *testing.B, every int) {
	c := newCoordinator("ramp", tree.Config{SourceCapacity: 8}, testLogger(), nil)
	c.standby.delay = 0
	if every > 0 {
		c.standby.delay = time.Hour // flushed below
	}
	mk := func(role protocol.Role, capacity int) *peerConn {
		hello := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role, Kind: protocol.KindGo, Stream: "ramp", Capacity: capacity}
		if role == protocol.RoleSource {
			hello.Tracks = []protocol.Track{{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}}
		}
		return newTestPeer(hello)
	}
	src := mk(protocol.RoleSource, 8)
	if err := c.join(src, src.hello); err != nil {
		b.Fatal(err)
	}
	peers := make([]*peerConn, b.N)
	for i := range peers {
		if i%50 == 0 {
			peers[i] = mk(protocol.RoleRelay, 64)
		} else {
			peers[i] = mk(protocol.RoleViewer, 0)
		}
	}
	reported := map[string]string{} // the parent each peer last reported live
	live := func(joined []*peerConn) {
		b.StopTimer()
		var due []*peerConn
		var at []string
		c.mu.Lock()
		for _, p := range joined {
			if parent, placed := c.tree.Parent(p.id); placed && parent != "" && reported[p.id] != parent {
				due, at = append(due, p), append(at, parent)
				reported[p.id] = parent
			}
		}
		c.mu.Unlock()
		b.StartTimer()
		for i, p := range due {
			c.report(p, &protocol.Message{Type: protocol.TypeLive, Peer: at[i]})
		}
	}
	b.ResetTimer()
	for i, p := range peers {
		if err := c.join(p, p.hello); err != nil {
			b.Fatal(err)
		}
		live(peers[:i+1])
		if every > 0 && i%every == every-1 {
			c.mu.Lock()
			c.flushStandbys()
			c.mu.Unlock()
		}
		if i%64 == 63 { // peers read their messages: queues stay short
			b.StopTimer()
			for _, q := range append(peers[:i+1:i+1], src) {
				q.conn.(*recordConn).take(q)
			}
			b.StartTimer()
		}
	}
	c.mu.Lock()
	c.flushStandbys()
	queued := c.tree.QueueLen()
	links := len(c.standby.of)
	c.mu.Unlock()
	b.StopTimer()
	b.ReportMetric(float64(links), "standby-links")
	b.ReportMetric(float64(queued), "queued")
}
