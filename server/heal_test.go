package main

import (
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestRelayCrashRecovers kills a mid-tree relay without a goodbye: every
// descendant plays complete frames again, and the orphaned relay's own
// children keep their parent (only the orphan's upstream changes).
func TestRelayCrashRecovers(t *testing.T) {
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	src := startSource(t, url, "crash", 2)
	var relays []*testViewer
	for range 3 {
		r := startPeer(t, url, "crash", protocol.RoleRelay, 10, nil)
		waitFor(t, 10*time.Second, "relay placed", func() bool { return r.node.Parent() != "" })
		relays = append(relays, r)
	}
	// The third relay sits under one of the first two: that one is mid-tree.
	// With it gone, the others still have room for everyone (2 + 10 + 10).
	var mid, orphan *testViewer
	for _, r := range relays[:2] {
		if relays[2].node.Parent() == r.node.ID() {
			mid, orphan = r, relays[2]
		}
	}
	if mid == nil {
		t.Fatalf("third relay placed under %s, not under a relay", relays[2].node.Parent())
	}
	viewers := startViewers(t, url, "crash", 20, 30, src)

	// Who is below the relay that will crash, and who are the orphan's children.
	var below []*testViewer
	orphanKids := map[string]bool{}
	for _, v := range viewers {
		switch v.node.Parent() {
		case mid.node.ID():
			below = append(below, v)
		case orphan.node.ID():
			below = append(below, v)
			orphanKids[v.node.ID()] = true
		}
	}
	if len(below) == 0 || len(orphanKids) == 0 {
		t.Fatalf("no viewers under the crashing relay (%d) or under its child relay (%d)", len(below), len(orphanKids))
	}
	t.Logf("killing relay %s: %d viewers below it, %d of them under relay %s", mid.node.ID(), len(below), len(orphanKids), orphan.node.ID())

	before := make([]int, len(viewers))
	for i, v := range viewers {
		before[i], _, _ = v.counts()
	}
	mid.node.Kill()

	deadline := time.Now().Add(30 * time.Second)
	for i, v := range viewers {
		for {
			f, mismatch, _ := v.counts()
			if f >= before[i]+60 {
				if mismatch != 0 {
					t.Errorf("viewer %s: %d corrupted frames", v.node.ID(), mismatch)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("viewer %s (parent %s, parents %v) has %d frames, %d before the crash: it did not play again",
					v.node.ID(), v.node.Parent(), v.parents(), f, before[i])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if p := orphan.node.Parent(); p == mid.node.ID() || p == "" {
		t.Errorf("orphaned relay still under %q", p)
	}
	for _, v := range viewers {
		if orphanKids[v.node.ID()] && v.node.Parent() != orphan.node.ID() {
			t.Errorf("viewer %s moved from the orphaned relay to %s: its subtree was not kept", v.node.ID(), v.node.Parent())
		}
	}
}

// TestGracefulLeaveLosesNoFrames closes a relay gracefully: its children
// move to a new parent before it stops feeding them, so not one video
// packet is missing, checked by sequence numbers.
func TestGracefulLeaveLosesNoFrames(t *testing.T) {
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	src := startSource(t, url, "graceful", 2)
	relay := startPeer(t, url, "graceful", protocol.RoleRelay, 4, nil)
	waitFor(t, 10*time.Second, "relay placed", func() bool { return relay.node.Parent() != "" })
	spare := startPeer(t, url, "graceful", protocol.RoleRelay, 4, nil)
	waitFor(t, 10*time.Second, "spare placed", func() bool { return spare.node.Parent() != "" })
	kids := startViewers(t, url, "graceful", 3, 30, src)
	var moved []*testViewer
	for _, v := range kids {
		if v.node.Parent() == relay.node.ID() {
			v.resetSeq()
			moved = append(moved, v)
		}
	}
	if len(moved) == 0 {
		t.Fatal("no viewer under the relay that leaves")
	}
	before := make([]int, len(moved))
	for i, v := range moved {
		before[i], _, _ = v.counts()
	}
	if err := relay.node.Close(); err != nil {
		t.Fatal(err)
	}
	for i, v := range moved {
		waitFor(t, 30*time.Second, "moved viewers keep playing", func() bool { f, _, _ := v.counts(); return f >= before[i]+60 })
		if v.node.Parent() == relay.node.ID() {
			t.Errorf("viewer %s still under the relay that left", v.node.ID())
		}
		missing, received := v.seqGaps()
		t.Logf("viewer %s: %d video packets across the move, %d missing", v.node.ID(), received, missing)
		if missing != 0 {
			t.Errorf("viewer %s lost %d video packets in a graceful leave", v.node.ID(), missing)
		}
	}
}

// TestSourceRestart stops the source: viewers are told the stream is
// offline; a new source on the same stream name plays to them again without
// anyone rejoining.
func TestSourceRestart(t *testing.T) {
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	src := startSource(t, url, "restart", 2)
	relay := startPeer(t, url, "restart", protocol.RoleRelay, 4, nil)
	waitFor(t, 10*time.Second, "relay placed", func() bool { return relay.node.Parent() != "" })
	viewers := startViewers(t, url, "restart", 4, 30, src)
	src.stop()
	for _, v := range viewers {
		waitFor(t, 10*time.Second, "viewers told offline", func() bool { return v.offlineCount() > 0 })
	}
	before := make([]int, len(viewers))
	for i, v := range viewers {
		before[i], _, _ = v.counts()
	}
	src2 := startSource(t, url, "restart", 2)
	for _, v := range viewers {
		v.checkAgainst(src2) // frames are checked against the new source from now on
	}
	for i, v := range viewers {
		waitFor(t, 30*time.Second, "viewers play the new source", func() bool { f, _, _ := v.counts(); return f >= before[i]+30 })
		if _, mismatch, _ := v.counts(); mismatch != 0 {
			t.Errorf("viewer %s: %d frames not from the new source", v.node.ID(), mismatch)
		}
	}
}

// TestHungRelayLosesItsChildren joins a relay that keeps its signaling
// alive and claims to play but never sends media (it ignores its offers).
// Its child on trial reports the stall, and the server moves it to a
// healthy relay, where it plays.
func TestHungRelayLosesItsChildren(t *testing.T) {
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	src := startSource(t, url, "hung", 2)
	hung := dialRaw(t, url)
	hung.sendText(`{"type":"hello","v":1,"role":"relay","kind":"go","stream":"hung","capacity":8}`)
	hungID := hung.next(protocol.TypeWelcome).ID
	// It lies that it plays, so it gets a child on trial (trust.go).
	hung.sendText(liveMsg(hung.next(protocol.TypeParent).Peer))
	_ = hung.conn.SetReadDeadline(time.Time{})
	go func() { // read (and so answer pings) but never act
		for {
			if _, _, err := hung.conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	healthy := startPeer(t, url, "hung", protocol.RoleRelay, 8, nil)
	waitFor(t, 10*time.Second, "healthy relay placed", func() bool { return healthy.node.Parent() == src.node.ID() })

	var viewers []*testViewer
	underHung := 0
	for range 4 {
		v := startPeer(t, url, "hung", protocol.RoleViewer, 0, src)
		waitFor(t, 10*time.Second, "viewer placed", func() bool { return v.node.Parent() != "" })
		if v.node.Parent() == hungID {
			underHung++
		}
		viewers = append(viewers, v)
	}
	if underHung == 0 {
		t.Fatal("placement put no viewer under the hung relay; the test needs one")
	}
	for _, v := range viewers {
		waitFor(t, 30*time.Second, "every viewer plays", func() bool { f, _, _ := v.counts(); return f >= 30 })
		if p := v.node.Parent(); p == hungID {
			t.Errorf("viewer %s still under the hung relay", v.node.ID())
		}
	}
	t.Logf("%d of %d viewers moved off the hung relay", underHung, len(viewers))
}

// TestCapacityChangeMovesChildren lowers a relay's capacity to zero (a
// browser turning relaying off): its children move to another parent and
// keep playing, and the relay itself keeps playing too.
func TestCapacityChangeMovesChildren(t *testing.T) {
	lightTest(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	src := startSource(t, url, "cap", 2)
	a := startPeer(t, url, "cap", protocol.RoleRelay, 4, src)
	waitFor(t, 10*time.Second, "relay a placed", func() bool { return a.node.Parent() == src.node.ID() })
	b := startPeer(t, url, "cap", protocol.RoleRelay, 4, src)
	waitFor(t, 10*time.Second, "relay b placed", func() bool { return b.node.Parent() == src.node.ID() })
	viewers := startViewers(t, url, "cap", 4, 30, src)
	var moved []*testViewer
	for _, v := range viewers {
		if v.node.Parent() == a.node.ID() {
			moved = append(moved, v)
		}
	}
	if len(moved) == 0 {
		t.Fatal("no viewer under relay a")
	}
	if err := a.node.SetCapacity(0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "relay a feeds nobody", func() bool { return a.node.Children() == 0 })
	fa, _, _ := a.counts()
	for _, v := range moved {
		f0, _, _ := v.counts()
		waitFor(t, 30*time.Second, "moved viewers keep playing", func() bool { f, _, _ := v.counts(); return f >= f0+30 })
		if p := v.node.Parent(); p == a.node.ID() {
			t.Errorf("viewer %s still under relay a", v.node.ID())
		}
	}
	waitFor(t, 10*time.Second, "relay a keeps playing", func() bool { f, _, _ := a.counts(); return f >= fa+30 })
	var tr treeResponse
	getJSON(t, url+"/api/streams/cap/tree", &tr)
	for _, n := range tr.Nodes {
		if n.ID == a.node.ID() && (n.Capacity != 0 || len(n.Children) != 0) {
			t.Errorf("relay a in the tree: capacity %d, children %v", n.Capacity, n.Children)
		}
	}
}
