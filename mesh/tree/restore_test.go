package tree

import (
	"slices"
	"testing"

	"canopy/mesh/protocol"
)

// TestRestoreKeepsEveryEdge: a tree rebuilt from a snapshot taken at
// random moments of random operations is the same tree (every parent,
// capacity, trust, usable capacity), passes Check, and reports no Change;
// the rebuilt tree then takes further operations as the original does.
func TestRestoreKeepsEveryEdge(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"default", Config{}},
		{"prove-tight", Config{Prove: true, SourceCapacity: 2, BrowserMaxCapacity: 3, GoMaxCapacity: 4, MaxBrowserHops: 1}},
		{"prove", Config{Prove: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, tc.cfg, 7)
			if _, err := s.tr.SetSource("src0", 0); err != nil {
				t.Fatal(err)
			}
			for i := range 6000 {
				s.step(150)
				if i%97 != 0 {
					continue
				}
				snap := s.tr.Snapshot()
				rt, ch, fixed := Restore(tc.cfg, snap)
				if fixed != nil || len(ch) != 0 {
					t.Fatalf("op %d: restore changed %d parents (fixed: %v)", i, len(ch), fixed)
				}
				if err := rt.Check(); err != nil {
					t.Fatalf("op %d: restored tree: %v", i, err)
				}
				if got := rt.Snapshot(); !slices.EqualFunc(got, snap, sameNode) {
					t.Fatalf("op %d: restored tree differs", i)
				}
			}
		})
	}
}

func sameNode(a, b NodeInfo) bool {
	return a.ID == b.ID && a.Parent == b.Parent && a.Role == b.Role && a.Kind == b.Kind &&
		a.Capacity == b.Capacity && a.Usable == b.Usable && a.Trust == b.Trust && a.Depth == b.Depth &&
		a.Queued == b.Queued && slices.Equal(a.Children, b.Children)
}

// TestRestoreFixesWhatFails: a snapshot that breaks the policy (a node
// over its capacity, a node whose parent is missing) is placed afresh,
// and the Changes name exactly the nodes whose parent differs.
func TestRestoreFixesWhatFails(t *testing.T) {
	cfg := Config{SourceCapacity: 2}
	snap := []NodeInfo{
		{ID: "src", Role: protocol.RoleSource, Kind: protocol.KindGo, Capacity: 2, Trust: TrustProven},
		{ID: "a", Parent: "src", Role: protocol.RoleViewer, Kind: protocol.KindGo, Capacity: 0, Usable: 0, Trust: TrustProven, Depth: 1},
		{ID: "b", Parent: "src", Role: protocol.RoleViewer, Kind: protocol.KindGo, Capacity: 0, Usable: 0, Trust: TrustProven, Depth: 1},
		{ID: "c", Parent: "src", Role: protocol.RoleViewer, Kind: protocol.KindGo, Capacity: 0, Usable: 0, Trust: TrustProven, Depth: 1},
		{ID: "d", Parent: "gone", Role: protocol.RoleViewer, Kind: protocol.KindGo, Capacity: 0, Usable: 0, Trust: TrustProven, Depth: 2},
	}
	rt, ch, fixed := Restore(cfg, snap)
	if fixed == nil {
		t.Fatal("a source over its capacity passed the rebuild")
	}
	if err := rt.Check(); err != nil {
		t.Fatalf("fixed tree: %v", err)
	}
	if rt.Len() != 5 {
		t.Fatalf("fixed tree has %d nodes, want 5", rt.Len())
	}
	for _, c := range ch {
		was := ""
		for _, n := range snap {
			if n.ID == c.Node {
				was = n.Parent
			}
		}
		now, _ := rt.Parent(c.Node)
		if c.From != was || c.To != now || was == now {
			t.Fatalf("change %+v: snapshot parent %q, now %q", c, was, now)
		}
	}
	if len(ch) < 2 { // one of a, b, c queued; d under someone
		t.Fatalf("changes %+v, want at least two", ch)
	}
}
