package tree

import (
	"slices"
	"testing"
)

// subtree returns n's descendants with their parents.
func subtree(tr *Tree, id string) map[string]string {
	out := map[string]string{}
	var walk func(string)
	walk = func(p string) {
		for _, c := range tr.Children(p) {
			out[c] = p
			walk(c)
		}
	}
	walk(id)
	return out
}

// TestOrphanSubtreesIntact leaves nodes with children at random and checks
// that each orphan keeps its subtree: the only edges that change inside it
// are the ones Leave reports, and those only move leaves (pulled up into a
// shallower slot, or queued to make room; a node whose children were all
// pulled away is a leaf too) or push a node down below a relay that takes
// its place — unless the orphan itself could not be placed. No orphan ends up below its own descendant.
func TestOrphanSubtreesIntact(t *testing.T) {
	for _, cfg := range []Config{{}, {SourceCapacity: 2, GoMaxCapacity: 3, BrowserMaxCapacity: 3, MaxBrowserHops: 2}} {
		s := newSim(t, cfg, 42)
		if _, err := s.tr.SetSource("src", 0); err != nil {
			t.Fatal(err)
		}
		leaves, orphans, moved, dissolvedN := 0, 0, 0, 0
		for i := range 20_000 {
			s.step(400)
			if i%5 != 0 {
				continue
			}
			// Pick a node with children.
			var victim string
			for _, id := range s.ids {
				if len(s.tr.Children(id)) > 0 && s.rng.IntN(4) == 0 {
					victim = id
					break
				}
			}
			if victim == "" {
				continue
			}
			before := map[string]map[string]string{}
			hadKids := map[string]bool{}
			for _, c := range s.tr.Children(victim) {
				before[c] = subtree(s.tr, c)
				for d := range before[c] {
					hadKids[d] = len(s.tr.Children(d)) > 0
				}
			}
			_, ch := s.leave(slices.Index(s.ids, victim))
			s.mustCheck("leave "+victim, i)
			leaves++
			reported := map[string]bool{}
			dissolved := map[string]bool{}
			for i, c := range ch {
				reported[c.Node] = true
				// Queued by the plan (the first change is the heir, which may
				// go to a vacant root, To == "" too).
				if c.From == victim && c.To == "" && i > 0 {
					dissolved[c.Node] = true
				}
			}
			for c, desc := range before {
				orphans++
				if dissolved[c] || s.tr.Queued(c) {
					dissolvedN++
					continue // no room for its subtree: its children were re-attached one by one
				}
				if p, ok := s.tr.Parent(c); ok {
					// Once its own children have all moved away the orphan is a
					// leaf, which compaction may pull up below a former child.
					if _, below := desc[p]; below && !allMoved(s.tr, desc, c, reported) {
						t.Fatalf("orphan %s attached below its descendant %s (changes %v)", c, p, ch)
					}
				}
				for d, p := range desc {
					got, _ := s.tr.Parent(d)
					if got == p {
						continue
					}
					if !reported[d] {
						t.Fatalf("%s in %s's subtree moved %s → %s without a Change", d, c, p, got)
					}
					// An inner node moves only when pushed one level down by a
					// relay taking its place (the relay is reported too), or
					// once its children have all moved away.
					if hadKids[d] && !reported[got] && !allMoved(s.tr, desc, d, reported) {
						t.Fatalf("inner node %s of %s's subtree moved %s → %s (%v)", d, c, p, got, ch)
					}
					moved++
				}
			}
		}
		t.Logf("%+v: %d leaves of inner nodes, %d orphans (%d without room for their subtree), %d nodes moved out of orphan subtrees",
			cfg, leaves, orphans, dissolvedN, moved)
	}
}

// allMoved reports whether every former child of d moved away.
func allMoved(tr *Tree, desc map[string]string, d string, reported map[string]bool) bool {
	for c, p := range desc {
		if p == d && !reported[c] {
			return false
		}
	}
	return true
}

// TestOrphanExample is the canonical case: an inner relay crashes and its
// children keep their subtrees.
func TestOrphanExample(t *testing.T) {
	tr := build(t, Config{}, 1,
		joinSpec{"r", goK, 2},
		joinSpec{"a", goK, 2}, joinSpec{"b", goK, 2},
		joinSpec{"a1", brK, 2}, joinSpec{"a2", brK, 0}, joinSpec{"b1", brK, 2}, joinSpec{"b2", brK, 0},
		joinSpec{"a11", brK, 0},
	)
	if got := layout(tr, "a", "b", "a1", "a2", "b1", "b2", "a11"); got != "a@2<r b@2<r a1@3<a a2@3<a b1@3<b b2@3<b a11@4<a1" {
		t.Fatalf("layout %s", got)
	}
	// a, the heir, takes r's slot. a is full and b is a relay, which may
	// only sit below Go: the leaf a2 makes room (it is queued, then placed
	// again at once below the browser a1), and b keeps b1 and b2.
	ch := tr.Leave("r")
	want := []Change{{"a", "r", "src"}, {"a2", "a", ""}, {"b", "r", "a"}, {"a2", "", "a1"}}
	if !slices.Equal(ch, want) {
		t.Fatalf("changes %v, want %v", ch, want)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
	if got := layout(tr, "a", "b", "a1", "a2", "b1", "b2", "a11"); got != "a@1<src b@2<a a1@2<a a2@3<a1 b1@3<b b2@3<b a11@3<a1" {
		t.Fatalf("layout %s", got)
	}
}
