package tree

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"canopy/mesh/protocol"
)

// sim drives a Tree with random operations and checks it after each one.
type sim struct {
	t     testing.TB
	tr    *Tree
	rng   *rand.Rand
	ids   []string // live ids except the source, in join order
	next  int
	src   int
	check bool
}

func newSim(tb testing.TB, cfg Config, seed uint64) *sim {
	return &sim{t: tb, tr: New(cfg), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), check: true}
}

func (s *sim) join(role Role, kind Kind, capacity int) string {
	s.next++
	id := fmt.Sprintf("n%d", s.next)
	if _, err := s.tr.Join(id, role, kind, capacity); err != nil {
		s.t.Fatalf("join %s: %v", id, err)
	}
	s.ids = append(s.ids, id)
	return id
}

func (s *sim) randomJoin() string {
	switch r := s.rng.IntN(10); {
	case r < 2:
		return s.join(protocol.RoleRelay, protocol.KindGo, 1+s.rng.IntN(8))
	case r < 3:
		return s.join(protocol.RoleViewer, protocol.KindGo, 0)
	default:
		return s.join(protocol.RoleViewer, protocol.KindBrowser, s.rng.IntN(3))
	}
}

// randomTrust favours the way up (new, played, proven), as the server
// drives it, with some holds and bars.
func (s *sim) randomTrust() Trust {
	switch r := s.rng.IntN(10); {
	case r < 3:
		return TrustPlayed
	case r < 6:
		return TrustProven
	case r < 7:
		return TrustNew
	case r < 8:
		return TrustHeld
	}
	return TrustBarred
}

func (s *sim) leave(i int) (string, []Change) {
	id := s.ids[i]
	s.ids = slices.Delete(s.ids, i, i+1)
	return id, s.tr.Leave(id)
}

// step applies one random operation; popTarget steers the population.
func (s *sim) step(popTarget int) string {
	op := s.rng.IntN(100)
	switch {
	case op < 2:
		if s.tr.Source() != "" {
			s.tr.RemoveSource()
			return "remove-source"
		}
		s.src++
		if _, err := s.tr.SetSource(fmt.Sprintf("src%d", s.src), 1+s.rng.IntN(6)); err != nil {
			s.t.Fatalf("set source: %v", err)
		}
		return "set-source"
	case op < 8 && len(s.ids) > 0:
		id := s.ids[s.rng.IntN(len(s.ids))]
		if _, err := s.tr.SetCapacity(id, s.rng.IntN(10)); err != nil {
			s.t.Fatalf("set capacity %s: %v", id, err)
		}
		return "capacity " + id
	case op < 14 && len(s.ids) > 0:
		id := s.ids[s.rng.IntN(len(s.ids))]
		tr := s.randomTrust()
		if _, err := s.tr.SetTrust(id, tr); err != nil {
			s.t.Fatalf("set trust %s %s: %v", id, tr, err)
		}
		return "trust " + id + " " + tr.String()
	case op < 16 && len(s.ids) > 0:
		id := s.ids[s.rng.IntN(len(s.ids))]
		old, _ := s.tr.Parent(id)
		ch, err := s.tr.Reattach(id)
		if err != nil {
			s.t.Fatalf("reattach %s: %v", id, err)
		}
		for _, c := range ch {
			if c.Node == id && c.To == old {
				s.t.Fatalf("reattach %s put it back below %s", id, old)
			}
		}
		return "reattach " + id
	case op < 18 && s.tr.Source() != "":
		if _, err := s.tr.SetCapacity(s.tr.Source(), s.rng.IntN(6)); err != nil {
			s.t.Fatalf("source capacity: %v", err)
		}
		return "source-capacity"
	case op < 21 && len(s.ids) > 0:
		id := s.ids[s.rng.IntN(len(s.ids))]
		k := s.rng.IntN(6) - 1 // -1: the bound lifted
		trust, _ := s.tr.Trust(id)
		// Shed by trust or capacity, not by sustain; or "" is the vacant root.
		mayQueue := trust != TrustProven || s.tr.Capacity(id) < len(s.tr.Children(id)) || s.tr.Source() == ""
		before := layoutAll(s.tr)
		ch, err := s.tr.SetSustain(id, k)
		if err != nil {
			s.t.Fatalf("set sustain %s %d: %v", id, k, err)
		}
		// The bound applied is k, or more where shedding would queue.
		if b, u := s.tr.Sustain(id), s.tr.Usable(id); k >= 0 && id != s.tr.Source() && (b < k || u > b) {
			s.t.Fatalf("sustain %s %d: bound %d, usable %d", id, k, b, u)
		}
		for _, c := range ch {
			if c.From == id && c.To == "" && !mayQueue {
				s.t.Fatalf("sustain %s %d queued its child %s: %+v\nbefore %s\nafter %s", id, k, c.Node, ch, before, layoutAll(s.tr))
			}
		}
		return fmt.Sprintf("sustain %s %d", id, k)
	case len(s.ids) > 0 && (len(s.ids) >= popTarget || op < 40):
		id, ch := s.leave(s.rng.IntN(len(s.ids)))
		for _, c := range ch {
			if c.Node == id {
				s.t.Fatalf("leave %s reported a change for itself", id)
			}
		}
		return "leave " + id
	default:
		return "join " + s.randomJoin()
	}
}

func (s *sim) mustCheck(what string, i int) {
	if err := s.tr.Check(); err != nil {
		s.t.Fatalf("after op %d (%s): %v", i, what, err)
	}
}

// TestRandomOperations runs 10^5 random joins, leaves, capacity changes and
// source departures and returns, verifying every invariant after each.
func TestRandomOperations(t *testing.T) {
	ops := 100_000
	if testing.Short() {
		ops = 10_000
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		pop  int
	}{
		{"default", Config{}, 300},
		{"tight", Config{SourceCapacity: 2, BrowserMaxCapacity: 3, GoMaxCapacity: 4, MaxBrowserHops: 1}, 120},
		{"no-browser-relay", Config{BrowserMaxCapacity: -1, GoMaxCapacity: 3}, 100},
		{"prove", Config{Prove: true}, 300},
		{"prove-tight", Config{Prove: true, SourceCapacity: 2, BrowserMaxCapacity: 3, GoMaxCapacity: 4, MaxBrowserHops: 1}, 120},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, tc.cfg, 1)
			if _, err := s.tr.SetSource("src0", 0); err != nil {
				t.Fatal(err)
			}
			n := ops / 3
			for i := range n {
				what := s.step(tc.pop)
				s.mustCheck(what, i)
			}
			t.Logf("%d ops: %d nodes, %d queued, max depth %d", n, s.tr.Len(), s.tr.QueueLen(), s.tr.MaxDepth())
		})
	}
}

// TestStandbyMatchesLeave checks, at random moments, that Standby predicts
// where Leave of the parent puts each child.
func TestStandbyMatchesLeave(t *testing.T) {
	s := newSim(t, Config{}, 7)
	if _, err := s.tr.SetSource("src", 4); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for i := range 5000 {
		s.step(200)
		if i%10 != 0 || len(s.ids) == 0 {
			continue
		}
		victim := s.ids[s.rng.IntN(len(s.ids))]
		if s.tr.Depth(victim) <= 0 {
			continue
		}
		want := map[string]string{}
		for _, c := range s.tr.Children(victim) {
			want[c] = s.tr.Standby(c)
		}
		// Leave applies the plan, then settles: compare with the plan's step
		// by replaying the reported changes up to the first one that is not
		// a re-attachment of a child of the victim.
		idx := slices.Index(s.ids, victim)
		_, ch := s.leave(idx)
		got := map[string]string{}
		for _, c := range ch {
			if c.From == victim {
				got[c.Node] = c.To
			}
		}
		for c, w := range want {
			g, moved := got[c]
			if !moved {
				g = "" // unchanged parent can only mean a move to the vacant root
			}
			if g != w {
				t.Fatalf("op %d: child %s of %s: Standby said %q, Leave gave %q (changes %v)", i, c, victim, w, g, ch)
			}
			checked++
		}
		s.mustCheck("leave "+victim, i)
	}
	t.Logf("%d standby predictions verified", checked)
}

func layoutAll(tr *Tree) string {
	var out []string
	for _, n := range tr.Snapshot() {
		out = append(out, fmt.Sprintf("%s<%s(%s,%s,cap%d,use%d,q%v)", n.ID, n.Parent, n.Kind, n.Trust, n.Capacity, n.Usable, n.Queued))
	}
	return strings.Join(out, " ")
}
