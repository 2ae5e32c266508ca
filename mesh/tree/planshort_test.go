package tree

import (
	"fmt"
	"maps"
	"testing"

	"canopy/mesh/protocol"
)

// referenceStandbys is StandbysOf by the plain algorithms: the whole
// departure plan, every heap popped in order.
func (t *Tree) referenceStandbys(id string) map[string]string {
	n := t.nodes[id]
	if n == nil || !n.placed || n == t.root || len(n.children) == 0 {
		return nil
	}
	p := newPlanner(t)
	p.reference = true
	p.setGone(n)
	p.move(n, nil)
	orphans := t.rank(n.children)
	for _, o := range orphans {
		p.setPending(o, true)
	}
	heir := orphans[0]
	p.setPending(heir, false)
	p.move(heir, n.parent)
	p.placeAll(orphans[1:], heir)
	out := make(map[string]string, len(n.children))
	for _, c := range n.children {
		to, _ := p.planned(c)
		out[c.id] = idOf(to)
	}
	return out
}

// TestStandbyShortcutsMatchReference: the standby plans stop once the
// orphans are placed and scan heaps rather than pop them (planOrphans,
// search); in random trees shaped like a load run's (a few wide Go relays
// earning their slots, many leaves, random trust, leaves and crashes) and
// in the property test's mixed trees, every node's plan equals the plain
// algorithms'.
func TestStandbyShortcutsMatchReference(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("wide", seed), func(t *testing.T) {
			s := newSim(t, Config{}, seed+100)
			if _, err := s.tr.SetSource("src", 4); err != nil {
				t.Fatal(err)
			}
			compared := 0
			for i := range 3000 {
				switch r := s.rng.IntN(100); {
				case r < 2:
					s.join(protocol.RoleRelay, protocol.KindGo, 64)
				case r < 75 || len(s.ids) < 10:
					s.join(protocol.RoleViewer, protocol.KindGo, 0)
				case r < 90:
					id := s.ids[s.rng.IntN(len(s.ids))]
					if _, err := s.tr.SetTrust(id, s.randomTrust()); err != nil {
						t.Fatal(err)
					}
				default:
					s.leave(s.rng.IntN(len(s.ids)))
				}
				if i%150 == 149 {
					compared += compareStandbys(t, s.tr, i)
				}
			}
			t.Logf("%d nodes, %d plans compared", s.tr.Len(), compared)
		})
		t.Run(fmt.Sprint("mixed", seed), func(t *testing.T) {
			s := newSim(t, Config{}, seed+200)
			if _, err := s.tr.SetSource("src", 4); err != nil {
				t.Fatal(err)
			}
			compared := 0
			for i := range 3000 {
				s.step(300)
				if i%100 == 99 {
					compared += compareStandbys(t, s.tr, i)
				}
			}
			t.Logf("%d nodes, %d plans compared", s.tr.Len(), compared)
		})
	}
}

func compareStandbys(t *testing.T, tr *Tree, op int) int {
	t.Helper()
	n := 0
	for id := range tr.nodes {
		got, want := tr.StandbysOf(id), tr.referenceStandbys(id)
		if !maps.Equal(got, want) {
			t.Fatalf("op %d: StandbysOf(%s) = %v, the reference plan says %v", op, id, got, want)
		}
		if got != nil {
			n++
		}
	}
	return n
}
