package tree

import (
	"testing"

	"canopy/mesh/protocol"
)

// Gather puts a whole audience under one node and lowers the capacities
// that would pull it back, in one step: nobody is queued, and compaction
// does not undo the moves.
func TestGather(t *testing.T) {
	tr := New(Config{SourceCapacity: 4})
	mustChanges(t)(tr.SetSource("s", 4))
	mustChanges(t)(tr.Join("r", protocol.RoleRelay, protocol.KindGo, 8))
	viewers := []string{"a", "b", "c", "d", "e"}
	for _, v := range viewers {
		mustChanges(t)(tr.Join(v, protocol.RoleViewer, protocol.KindBrowser, 2))
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
	caps := map[string]int{"s": 1}
	for _, v := range viewers {
		caps[v] = 0
	}
	ch, err := tr.Gather("r", viewers, caps)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
	for _, c := range ch {
		if c.To == "" {
			t.Errorf("%s was cut off: %+v", c.Node, c)
		}
	}
	for _, v := range viewers {
		if p, _ := tr.Parent(v); p != "r" {
			t.Errorf("%s under %q, want r", v, p)
		}
	}
	if kids := tr.Children("s"); len(kids) != 1 || kids[0] != "r" {
		t.Errorf("source's children %v, want [r]", kids)
	}
	// Without room below the relay, the rest stay where they are (the
	// source keeps what is left, KeepChildren; else compaction would pull
	// the moved leaf straight back).
	tr2 := New(Config{SourceCapacity: 4})
	mustChanges(t)(tr2.SetSource("s", 4))
	mustChanges(t)(tr2.Join("r", protocol.RoleRelay, protocol.KindGo, 1))
	for _, v := range []string{"a", "b"} {
		mustChanges(t)(tr2.Join(v, protocol.RoleViewer, protocol.KindBrowser, 0))
	}
	if _, err := tr2.Gather("r", []string{"a", "b", "r", "s", "nobody"}, map[string]int{"s": KeepChildren}); err != nil {
		t.Fatal(err)
	}
	if err := tr2.Check(); err != nil {
		t.Fatal(err)
	}
	under := 0
	for _, v := range []string{"a", "b"} {
		if p, _ := tr2.Parent(v); p == "r" {
			under++
		}
	}
	if under != 1 || len(tr2.Children("r")) != 1 {
		t.Errorf("%d viewers under a relay of capacity 1", under)
	}
	if _, err := tr2.Gather("nobody", nil, nil); err == nil {
		t.Error("gathered under an unknown node")
	}
	if _, err := tr2.Gather("r", nil, map[string]int{"a": -2}); err == nil {
		t.Error("a negative capacity accepted")
	}
}

func mustChanges(t *testing.T) func([]Change, error) {
	return func(_ []Change, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}
