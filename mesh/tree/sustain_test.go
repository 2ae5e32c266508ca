package tree

import (
	"slices"
	"testing"
)

// TestSustainSheds: a relay whose measured upload sustains fewer children
// than it feeds keeps that many, its viewers moving first (a relay child
// ranks above them), to another relay's free slots; its declared capacity
// stays, and lifting the bound lets it take more again.
func TestSustainSheds(t *testing.T) {
	tr := build(t, Config{}, 2,
		joinSpec{"r", goK, 4}, joinSpec{"q", goK, 4},
		joinSpec{"v1", brK, 0}, joinSpec{"v2", brK, 0}, joinSpec{"v3", brK, 0}, joinSpec{"v4", brK, 0},
	)
	if n := len(tr.Children("r")); n != 4 {
		t.Fatalf("setup: r feeds %d, want 4", n)
	}
	ch, err := tr.SetSustain("r", 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
	kids := tr.Children("r")
	if len(kids) != 2 || tr.Usable("r") != 2 || tr.Capacity("r") != 4 || tr.Sustain("r") != 2 {
		t.Fatalf("r: children %v usable %d capacity %d sustain %d; want 2, 2, 4, 2", kids, tr.Usable("r"), tr.Capacity("r"), tr.Sustain("r"))
	}
	if len(ch) != 2 || len(tr.Children("q")) != 2 {
		t.Fatalf("changes %+v; q feeds %v", ch, tr.Children("q"))
	}
	for _, c := range ch {
		if c.From != "r" || c.To != "q" {
			t.Fatalf("unexpected change %+v", c)
		}
	}
	// No bound: r may feed up to its declaration again.
	if _, err := tr.SetSustain("r", -1); err != nil {
		t.Fatal(err)
	}
	if tr.Usable("r") != 4 || tr.Sustain("r") != -1 {
		t.Fatalf("lifted: usable %d sustain %d", tr.Usable("r"), tr.Sustain("r"))
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestSustainShedsViewersFirst: of a bounded relay's children, a relay
// child stays and viewers move (here, below that relay child), as many as
// find a place.
func TestSustainShedsViewersFirst(t *testing.T) {
	tr := build(t, Config{}, 1,
		joinSpec{"r", goK, 4}, joinSpec{"g", goK, 2},
		joinSpec{"v1", brK, 0}, joinSpec{"v2", brK, 0}, joinSpec{"v3", brK, 0},
	)
	if p, _ := tr.Parent("g"); p != "r" || len(tr.Children("r")) != 4 {
		t.Fatalf("setup: %s", layout(tr, "r", "g", "v1", "v2", "v3"))
	}
	if _, err := tr.SetSustain("r", 1); err != nil {
		t.Fatal(err)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
	// g has room for two of the three viewers; the third stays with r
	// rather than be queued (detached): the bound applied is 2.
	got := layout(tr, "r", "g", "v1", "v2", "v3")
	if kids := tr.Children("r"); len(kids) != 2 || !slices.Contains(kids, "g") || tr.Sustain("r") != 2 {
		t.Fatalf("r keeps %v with sustain %d, want g and one viewer, 2: %s", kids, tr.Sustain("r"), got)
	}
	if n := len(tr.Children("g")); n != 2 || tr.QueueLen() != 0 {
		t.Fatalf("g feeds %d of the shed viewers (want 2), %d queued: %s", n, tr.QueueLen(), got)
	}
}

// TestSustainZeroSinks: a relay that cannot sustain even one child moves
// down the tree: its best child takes its place, with every subtree intact,
// and the relay becomes a leaf.
func TestSustainZeroSinks(t *testing.T) {
	tr := build(t, Config{}, 1,
		joinSpec{"r", goK, 3},
		joinSpec{"a", goK, 3}, joinSpec{"v1", brK, 0}, joinSpec{"v2", brK, 0},
	)
	if p, _ := tr.Parent("a"); p != "r" {
		t.Fatalf("setup: %s", layout(tr, "r", "a", "v1", "v2"))
	}
	ch, err := tr.SetSustain("r", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
	got := layout(tr, "r", "a", "v1", "v2")
	if p, _ := tr.Parent("a"); p != "src" {
		t.Fatalf("the heir did not take r's place: %s", got)
	}
	if len(tr.Children("r")) != 0 || tr.Depth("r") < 2 {
		t.Fatalf("r still feeds children or sits high: %s", got)
	}
	for _, v := range []string{"v1", "v2"} {
		if p, ok := tr.Parent(v); !ok || p == "r" {
			t.Fatalf("%s not re-placed: %s", v, got)
		}
	}
	seen := map[string]bool{}
	for _, c := range ch {
		seen[c.Node] = true
	}
	if !seen["a"] || !seen["r"] {
		t.Fatalf("changes %+v miss the heir or r", ch)
	}
	t.Logf("after: %s", got)
}

// TestSlotsPreferUnheld: of two relays at the same depth with free slots,
// a new node goes to the one whose measured upload does not hold it below
// its declaration, even when the held one is older.
func TestSlotsPreferUnheld(t *testing.T) {
	tr := build(t, Config{}, 2, joinSpec{"old", goK, 4}, joinSpec{"new", goK, 4})
	if _, err := tr.SetSustain("old", 3); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Join("v", view, brK, 0); err != nil {
		t.Fatal(err)
	}
	if p, _ := tr.Parent("v"); p != "new" {
		t.Fatalf("v went below %q, want new: %s", p, layout(tr, "old", "new", "v"))
	}
	// Without the bound, the oldest parent's slot comes first, as before.
	if _, err := tr.SetSustain("old", -1); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Join("w", view, brK, 0); err != nil {
		t.Fatal(err)
	}
	if p, _ := tr.Parent("w"); p != "old" {
		t.Fatalf("w went below %q, want old", p)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
}
