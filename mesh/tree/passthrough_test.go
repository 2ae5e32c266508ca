package tree

import (
	"errors"
	"fmt"
	"testing"

	"canopy/mesh/protocol"
)

// chain joins n browsers of capacity 1 below a source of capacity 1, marking
// each as pass-through when pass says so, and returns their ids.
func chain(t *testing.T, tr *Tree, n int, pass func(i int) bool) []string {
	t.Helper()
	if _, err := tr.SetSource("src", 1); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range n {
		id := fmt.Sprintf("b%d", i)
		if _, err := tr.Join(id, protocol.RoleViewer, protocol.KindBrowser, 1); err != nil {
			t.Fatal(err)
		}
		if pass(i) {
			if _, err := tr.SetPassthrough(id); err != nil {
				t.Fatal(err)
			}
		}
		if err := tr.Check(); err != nil {
			t.Fatalf("after %s: %v", id, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestPassthroughHopsDoNotCount: with a bound of one re-encode, re-encoding
// browsers form a chain of two and the third waits; pass-through browsers
// chain as deep as capacity allows, each with no re-encode above it.
func TestPassthroughHopsDoNotCount(t *testing.T) {
	cfg := Config{SourceCapacity: 1, BrowserMaxCapacity: 1, MaxBrowserHops: 1}

	re := New(cfg)
	ids := chain(t, re, 4, func(int) bool { return false })
	if re.Depth(ids[1]) != 2 || re.Hops(ids[1]) != 1 {
		t.Errorf("re-encode chain: %s depth %d hops %d, want 2/1", ids[1], re.Depth(ids[1]), re.Hops(ids[1]))
	}
	if !re.Queued(ids[2]) || !re.Queued(ids[3]) {
		t.Errorf("re-encode chain: a third and fourth browser should wait, got depth %d, %d", re.Depth(ids[2]), re.Depth(ids[3]))
	}

	pt := New(cfg)
	ids = chain(t, pt, 6, func(int) bool { return true })
	for i, id := range ids {
		if pt.Depth(id) != i+1 || pt.Hops(id) != 0 {
			t.Errorf("pass-through chain: %s depth %d hops %d, want %d/0", id, pt.Depth(id), pt.Hops(id), i+1)
		}
	}

	// Mixed: pass-through, re-encode, pass-through: only b1 counts.
	mix := New(Config{SourceCapacity: 1, BrowserMaxCapacity: 1, MaxBrowserHops: 2})
	ids = chain(t, mix, 5, func(i int) bool { return i != 1 })
	want := []int{0, 0, 1, 1, 1}
	for i, id := range ids {
		if mix.Hops(id) != want[i] {
			t.Errorf("mixed chain: %s hops %d, want %d", id, mix.Hops(id), want[i])
		}
	}
	for _, n := range mix.Snapshot() {
		if n.Kind == protocol.KindBrowser && n.Passthrough != (n.ID != "b1") {
			t.Errorf("snapshot of %s says passthrough %v", n.ID, n.Passthrough)
		}
	}
}

// TestSetPassthroughPlacesWaitingNodes: marking a relay pass-through lowers
// the re-encode count below it, and a browser that waited for a slot within
// the bound is placed at once.
func TestSetPassthroughPlacesWaitingNodes(t *testing.T) {
	tr := New(Config{SourceCapacity: 1, BrowserMaxCapacity: 1, MaxBrowserHops: 1})
	ids := chain(t, tr, 3, func(int) bool { return false })
	if !tr.Queued(ids[2]) {
		t.Fatalf("%s should wait", ids[2])
	}
	ch, err := tr.SetPassthrough(ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if len(ch) != 1 || ch[0] != (Change{Node: ids[2], To: ids[1]}) {
		t.Errorf("changes %v, want %s placed below %s", ch, ids[2], ids[1])
	}
	if tr.Hops(ids[2]) != 1 {
		t.Errorf("%s has %d re-encodes above it, want 1 (only b0)", ids[2], tr.Hops(ids[2]))
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
	if ch, err := tr.SetPassthrough(ids[1]); err != nil || len(ch) != 0 {
		t.Errorf("second SetPassthrough: %v, %v; want a no-op", ch, err)
	}
}

func TestSetPassthroughRejects(t *testing.T) {
	tr := New(Config{})
	if _, err := tr.SetSource("src", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Join("g", protocol.RoleRelay, protocol.KindGo, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.SetPassthrough("nobody"); !errors.Is(err, ErrUnknown) {
		t.Errorf("unknown id: %v, want ErrUnknown", err)
	}
	for _, id := range []string{"g", "src"} {
		if _, err := tr.SetPassthrough(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("Go node %s: %v, want ErrInvalid", id, err)
		}
	}
}

// TestRandomOperationsWithPassthrough runs the random operation mix with a
// share of the browsers marked pass-through (some at once, some later, some
// while queued), checking every invariant after each operation: hops count
// only re-encoding browsers, and the bound holds.
func TestRandomOperationsWithPassthrough(t *testing.T) {
	ops := 30_000
	if testing.Short() {
		ops = 5_000
	}
	for _, cfg := range []Config{{}, {SourceCapacity: 2, BrowserMaxCapacity: 3, GoMaxCapacity: 4, MaxBrowserHops: 1}} {
		s := newSim(t, cfg, 3)
		if _, err := s.tr.SetSource("src0", 0); err != nil {
			t.Fatal(err)
		}
		deep := 0
		for i := range ops {
			what := s.step(150)
			if len(s.ids) > 0 && s.rng.IntN(3) == 0 {
				id := s.ids[s.rng.IntN(len(s.ids))]
				if n := s.tr.nodes[id]; n.kind == protocol.KindBrowser {
					if _, err := s.tr.SetPassthrough(id); err != nil {
						t.Fatalf("op %d: SetPassthrough %s: %v", i, id, err)
					}
					what += "; passthrough " + id
				}
			}
			s.mustCheck(what, i)
			if d := s.tr.MaxDepth(); d > deep {
				deep = d
			}
		}
		t.Logf("%+v: %d nodes, %d queued, deepest %d", cfg, s.tr.Len(), s.tr.QueueLen(), deep)
	}
}
