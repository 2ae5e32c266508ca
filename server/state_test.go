package main

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
	"canopy/server/cluster"
)

// stateCopyOf applies entries to a copy, as another server does.
func stateCopyOf(m map[string][]byte, es []cluster.Entry) {
	for _, e := range es {
		if e.Value == nil {
			delete(m, e.Key)
		} else {
			m[e.Key] = e.Value
		}
	}
}

func allOf(src clusterState) map[string][]byte {
	m := make(map[string][]byte)
	stateCopyOf(m, src.All())
	return m
}

func sameEntries(a, b map[string][]byte) (string, bool) {
	for k, v := range b {
		if w, ok := a[k]; !ok || string(w) != string(v) {
			return fmt.Sprintf("%s: copy %s, state %s", k, w, v), false
		}
	}
	for k, v := range a {
		if _, ok := b[k]; !ok {
			return fmt.Sprintf("%s: in the copy only (%s)", k, v), false
		}
	}
	return "", true
}

// TestStateDeltasKeepACopy runs random joins, crashes, capacity changes,
// plays (trust) and bars through a coordinator whose state a cluster
// takes (no WebRTC), and keeps a copy from its deltas alone: after every
// operation the copy equals the whole state, and each delta holds few
// entries (the operation's own, not the stream's). A new coordinator
// rebuilt from the copy has the same tree (it passes Check, every parent
// kept), the bars, and the barred relay barred in its session too.
func TestStateDeltasKeepACopy(t *testing.T) {
	lightTest(t)
	h := newHub(tree.Config{SourceCapacity: 2}, testLogger())
	h.mu.Lock()
	c := h.create("st")
	h.mu.Unlock()
	src := clusterState{h: h, stream: "st"}
	copyOf := allOf(src) // the first snapshot
	rng := rand.New(rand.NewPCG(5, 9))
	live := map[string]*peerConn{}
	mk := func(role protocol.Role, kind protocol.Kind, capacity int) *peerConn {
		hello := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role, Kind: kind, Stream: "st", Capacity: capacity}
		if role == protocol.RoleSource {
			hello.Tracks = []protocol.Track{{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}}
		}
		p := newTestPeer(hello)
		if err := c.join(p, hello); err != nil {
			t.Fatal(err)
		}
		live[p.id] = p
		return p
	}
	mk(protocol.RoleSource, protocol.KindGo, 2)
	var barred string
	entries, maxEntries := 0, 0
	const ops = 1500
	for op := range ops {
		ids := slices.Sorted(maps.Keys(live))
		p := live[ids[rng.IntN(len(ids))]]
		what := ""
		switch k := rng.IntN(20); {
		case k < 9 || len(ids) < 4:
			kind := protocol.KindGo
			if rng.IntN(3) == 0 {
				kind = protocol.KindBrowser
			}
			role := protocol.RoleViewer
			if rng.IntN(2) == 0 {
				role = protocol.RoleRelay
			}
			what = "join " + mk(role, kind, rng.IntN(5)).id
		case k < 13:
			if p.hello.Role == protocol.RoleSource || p.id == barred {
				continue
			}
			what = "crash " + p.id
			c.gone(p, "crash")
			delete(live, p.id)
		case k < 15:
			if p.hello.Role == protocol.RoleSource {
				continue
			}
			what = "capacity " + p.id
			c.setCapacity(p, rng.IntN(5))
		case k < 19:
			c.mu.Lock()
			parent, ok := c.tree.Parent(p.id)
			if ok && parent != "" {
				what = "live " + p.id
				c.onLive(p.id, parent)
			}
			c.mu.Unlock()
		default:
			if barred != "" || p.hello.Role != protocol.RoleRelay {
				continue
			}
			barred, what = p.id, "bar "+p.id
			c.mu.Lock()
			c.barForStream(p.id, time.Now())
			c.apply(c.rebar(p))
			c.mu.Unlock()
		}
		// The delta and the whole state are read under one hold of the
		// lock: a batched standby plan (standby_batch.go) may fire between
		// two holds, and its change belongs to the next delta.
		c.mu.Lock()
		d := changedEntries(c)
		whole := make(map[string][]byte)
		stateCopyOf(whole, allEntries(c))
		c.mu.Unlock()
		entries += len(d)
		maxEntries = max(maxEntries, len(d))
		stateCopyOf(copyOf, d)
		if diff, ok := sameEntries(copyOf, whole); !ok {
			t.Fatalf("op %d (%s): the copy differs from the state: %s", op, what, diff)
		}
		for _, q := range live {
			q.conn.(*recordConn).take(q)
		}
	}
	t.Logf("%d ops, %d peers: %.1f entries per delta on average, %d at most", ops, len(live), float64(entries)/ops, maxEntries)
	if barred == "" {
		t.Fatal("no relay barred: the run tests nothing of bars")
	}

	// A new owner rebuilds from the copy.
	h2 := newHub(tree.Config{SourceCapacity: 2}, testLogger())
	st := decodeState(copyOf)
	if err := h2.restore("st", st, 2); err != nil {
		t.Fatal(err)
	}
	c2 := h2.get("st")
	c.mu.Lock()
	want := c.tree.Snapshot()
	c.mu.Unlock()
	c2.mu.Lock()
	defer c2.mu.Unlock()
	if err := c2.tree.Check(); err != nil {
		t.Fatalf("rebuilt tree: %v", err)
	}
	for _, n := range want {
		if got, _ := c2.tree.Parent(n.ID); got != n.Parent {
			t.Errorf("%s: parent %q after the rebuild, %q before", n.ID, got, n.Parent)
		}
	}
	if _, ok := c2.bars[barPeer(barred)]; !ok {
		t.Errorf("the bar of %s is not in the rebuilt stream: %v", barred, c2.bars)
	}
	if !c2.signed.barred[barred] || c2.tree.Capacity(barred) != 0 {
		t.Errorf("%s rebuilt: barred %v, capacity %d; want barred, capacity 0", barred, c2.signed.barred[barred], c2.tree.Capacity(barred))
	}
	if tr, _ := c2.tree.Trust(barred); tr != tree.TrustBarred {
		t.Errorf("%s rebuilt with trust %v, want barred", barred, tr)
	}
}
