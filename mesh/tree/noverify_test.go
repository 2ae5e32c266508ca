package tree

import (
	"fmt"
	"slices"
	"testing"

	"canopy/mesh/protocol"
)

// feedsOK reports whether parent may feed a strict child: it strips, or it
// is a browser that re-encodes.
func feedsOK(tr *Tree, parent string) bool {
	p := tr.nodes[parent]
	return p != nil && (p.strips || p != tr.root && reencodes(p))
}

func mustJoin(t *testing.T, tr *Tree, id string, role Role, kind Kind, capacity int, o JoinOptions) []Change {
	t.Helper()
	ch, err := tr.JoinWith(id, role, kind, capacity, o)
	if err != nil {
		t.Fatalf("join %s: %v", id, err)
	}
	if err := tr.Check(); err != nil {
		t.Fatalf("after join %s: %v", id, err)
	}
	return ch
}

func mustCheck(t *testing.T, tr *Tree, what string) {
	t.Helper()
	if err := tr.Check(); err != nil {
		t.Fatalf("after %s: %v\n%s", what, err, layoutAll(tr))
	}
}

// signedTree: a source of capacity 3 feeding Go relays r1 and r2 and the
// server's relay h (which strips), and browsers that verify below them.
func signedTree(t *testing.T) *Tree {
	t.Helper()
	tr := New(Config{SourceCapacity: 3})
	if _, err := tr.SetSource("src", 3); err != nil {
		t.Fatal(err)
	}
	tr.SetSigned(true)
	for _, id := range []string{"r1", "r2", "h"} {
		mustJoin(t, tr, id, protocol.RoleRelay, protocol.KindGo, 2, JoinOptions{})
	}
	if _, err := tr.SetStrips("h"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		mustJoin(t, tr, fmt.Sprintf("b%d", i), protocol.RoleViewer, protocol.KindBrowser, 0, JoinOptions{})
	}
	return tr
}

// TestNoVerifyPlacedBelowStripper: on a signed stream a browser that
// cannot verify hangs below the server's relay even when Go relays have
// shallower room; normal browsers around it are placed as ever; the tree
// API marks it unverified.
func TestNoVerifyPlacedBelowStripper(t *testing.T) {
	tr := signedTree(t)
	mustJoin(t, tr, "nv", protocol.RoleViewer, protocol.KindBrowser, 0, JoinOptions{NoVerify: true})
	if p, _ := tr.Parent("nv"); p != "h" {
		t.Fatalf("nv below %q, want h\n%s", p, layoutAll(tr))
	}
	// The relay is full now (b2 and nv, or b-something): another one that
	// cannot verify takes the place of a normal leaf, which moves on.
	mustJoin(t, tr, "nv2", protocol.RoleViewer, protocol.KindBrowser, 0, JoinOptions{NoVerify: true})
	for _, id := range []string{"nv", "nv2"} {
		if p, _ := tr.Parent(id); p != "h" {
			t.Fatalf("%s below %q, want h\n%s", id, p, layoutAll(tr))
		}
	}
	for _, n := range tr.Snapshot() {
		switch n.ID {
		case "nv", "nv2":
			if !n.Unverified || !n.NoVerify {
				t.Errorf("%s: unverified %v noVerify %v, want both", n.ID, n.Unverified, n.NoVerify)
			}
		case "h":
			if !n.Strips {
				t.Errorf("h does not strip in the snapshot")
			}
		default:
			if n.Unverified || n.Queued {
				t.Errorf("%s: unverified %v queued %v", n.ID, n.Unverified, n.Queued)
			}
		}
	}
	// A third finds the relay full of nodes that cannot verify: it waits.
	mustJoin(t, tr, "nv3", protocol.RoleViewer, protocol.KindBrowser, 0, JoinOptions{NoVerify: true})
	if !tr.Queued("nv3") {
		t.Fatalf("nv3 placed below a parent that forwards signatures\n%s", layoutAll(tr))
	}
	// A browser that re-encodes may feed it: its output carries no signature.
	mustJoin(t, tr, "ff", protocol.RoleViewer, protocol.KindBrowser, 2, JoinOptions{})
	if p, ok := tr.Parent("nv3"); !ok || p != "ff" {
		t.Fatalf("nv3 below %q (placed %v), want the re-encoding ff\n%s", p, ok, layoutAll(tr))
	}
}

// TestNoVerifyUnsignedPlacedNormally: on an unsigned stream nothing
// constrains it; when the stream becomes signed it moves to the stripper,
// and back on an unsigned one nothing moves.
func TestNoVerifyUnsignedPlacedNormally(t *testing.T) {
	tr := New(Config{SourceCapacity: 2})
	if _, err := tr.SetSource("src", 2); err != nil {
		t.Fatal(err)
	}
	mustJoin(t, tr, "r1", protocol.RoleRelay, protocol.KindGo, 4, JoinOptions{})
	mustJoin(t, tr, "h", protocol.RoleRelay, protocol.KindGo, 4, JoinOptions{})
	if _, err := tr.SetStrips("h"); err != nil {
		t.Fatal(err)
	}
	mustJoin(t, tr, "nv", protocol.RoleViewer, protocol.KindBrowser, 0, JoinOptions{NoVerify: true})
	if p, _ := tr.Parent("nv"); p != "r1" {
		t.Fatalf("unsigned: nv below %q, want r1 (the oldest free slot)\n%s", p, layoutAll(tr))
	}
	if n := tr.Snapshot(); !n[slicesIndex(n, "nv")].Unverified {
		t.Errorf("nv not marked unverified")
	}
	ch := tr.SetSigned(true)
	mustCheck(t, tr, "signed")
	if p, _ := tr.Parent("nv"); p != "h" {
		t.Fatalf("signed: nv below %q, want h (changes %v)\n%s", p, ch, layoutAll(tr))
	}
	found := false
	for _, c := range ch {
		if c.Node == "nv" && c.To == "h" && c.From != "" {
			found = true // From set: the server keeps the old edge until it plays (make before break)
		}
	}
	if !found {
		t.Errorf("no change moving nv to h from its old parent: %v", ch)
	}
	if ch := tr.SetSigned(false); len(ch) != 0 {
		t.Errorf("unsigned again moved %v", ch)
	}
	mustCheck(t, tr, "unsigned")
}

// TestNoVerifySignedBeforeStripper: the stream turns signed while no
// parent could feed the node that cannot verify: it keeps its parent and
// plays (misplaced) rather than be cut off, and moves, from that parent
// (make before break), once a stripping relay joins.
func TestNoVerifySignedBeforeStripper(t *testing.T) {
	tr := New(Config{SourceCapacity: 1})
	if _, err := tr.SetSource("src", 1); err != nil {
		t.Fatal(err)
	}
	mustJoin(t, tr, "r1", protocol.RoleRelay, protocol.KindGo, 4, JoinOptions{})
	mustJoin(t, tr, "nv", protocol.RoleViewer, protocol.KindBrowser, 0, JoinOptions{NoVerify: true})
	if ch := tr.SetSigned(true); len(ch) != 0 {
		t.Fatalf("signed with nowhere to go moved %v", ch)
	}
	mustCheck(t, tr, "signed")
	if p, _ := tr.Parent("nv"); p != "r1" || !slices.Equal(tr.Misplaced(), []string{"nv"}) {
		t.Fatalf("nv below %q, misplaced %v; want it kept below r1 and listed", p, tr.Misplaced())
	}
	mustJoin(t, tr, "h", protocol.RoleRelay, protocol.KindGo, 4, JoinOptions{})
	ch, err := tr.SetStrips("h")
	if err != nil {
		t.Fatal(err)
	}
	mustCheck(t, tr, "strips")
	if p, _ := tr.Parent("nv"); p != "h" || len(tr.Misplaced()) != 0 {
		t.Fatalf("nv below %q, misplaced %v after h joined (changes %v)", p, tr.Misplaced(), ch)
	}
	if !slices.Contains(ch, Change{Node: "nv", From: "r1", To: "h"}) {
		t.Fatalf("no move r1 → h for nv: %v", ch)
	}
}

func slicesIndex(ns []NodeInfo, id string) int {
	for i, n := range ns {
		if n.ID == id {
			return i
		}
	}
	return -1
}

// TestNoVerifyHealAndStandby: when the stripping relay leaves, its child
// that cannot verify never goes to a Go relay: it takes the other
// stripping relay, which its standby names beforehand, and with none left
// it waits in the queue until a stripper joins.
func TestNoVerifyHealAndStandby(t *testing.T) {
	tr := New(Config{SourceCapacity: 4})
	if _, err := tr.SetSource("src", 4); err != nil {
		t.Fatal(err)
	}
	tr.SetSigned(true)
	for _, id := range []string{"r1", "h1", "h2"} {
		mustJoin(t, tr, id, protocol.RoleRelay, protocol.KindGo, 3, JoinOptions{})
	}
	for _, id := range []string{"h1", "h2"} {
		if _, err := tr.SetStrips(id); err != nil {
			t.Fatal(err)
		}
	}
	mustJoin(t, tr, "nv", protocol.RoleViewer, protocol.KindBrowser, 0, JoinOptions{NoVerify: true})
	first, _ := tr.Parent("nv")
	other := map[string]string{"h1": "h2", "h2": "h1"}[first]
	if other == "" {
		t.Fatalf("nv below %q, want h1 or h2", first)
	}
	// Fill the rest so a Go relay has the shallowest room.
	for i := range 4 {
		mustJoin(t, tr, fmt.Sprintf("b%d", i), protocol.RoleViewer, protocol.KindBrowser, 0, JoinOptions{})
	}
	if sb := tr.Standby("nv"); sb != other {
		t.Fatalf("standby of nv %q, want the other stripper %q\n%s", sb, other, layoutAll(tr))
	}
	if sbs := tr.StandbysOf(first); sbs["nv"] != other {
		t.Fatalf("StandbysOf(%s)[nv] = %q, want %q", first, sbs["nv"], other)
	}
	if _, err := tr.Adopt("nv", "r1"); err == nil {
		t.Fatalf("Adopt put nv below the Go relay r1")
	}
	tr.Leave(first)
	mustCheck(t, tr, "leave "+first)
	if p, _ := tr.Parent("nv"); p != other {
		t.Fatalf("after %s left nv below %q, want %q\n%s", first, p, other, layoutAll(tr))
	}
	// Reattach (a broken path, or a tampering report) keeps the rule.
	if _, err := tr.Reattach("nv"); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, tr, "reattach")
	if p, ok := tr.Parent("nv"); ok && !feedsOK(tr, p) {
		t.Fatalf("reattach put nv below %q", p)
	}
	if sb := tr.Standby("nv"); sb != "" && !feedsOK(tr, sb) {
		t.Fatalf("standby of nv is %q, which forwards signatures", sb)
	}
	tr.Leave(other)
	mustCheck(t, tr, "leave "+other)
	if !tr.Queued("nv") {
		p, _ := tr.Parent("nv")
		t.Fatalf("no stripper left, but nv is below %q\n%s", p, layoutAll(tr))
	}
	mustJoin(t, tr, "h3", protocol.RoleRelay, protocol.KindGo, 3, JoinOptions{})
	ch, err := tr.SetStrips("h3")
	if err != nil {
		t.Fatal(err)
	}
	mustCheck(t, tr, "strips h3")
	if p, _ := tr.Parent("nv"); p != "h3" {
		t.Fatalf("nv below %q after h3 joined, want h3 (changes %v)", p, ch)
	}
}

// TestNoVerifyRejects: only a browser declares it, and it never passes
// frames through; only a Go node strips.
func TestNoVerifyRejects(t *testing.T) {
	tr := New(Config{})
	if _, err := tr.JoinWith("g", protocol.RoleRelay, protocol.KindGo, 2, JoinOptions{NoVerify: true}); err == nil {
		t.Error("a Go node declared noVerify")
	}
	mustJoin(t, tr, "nv", protocol.RoleViewer, protocol.KindBrowser, 2, JoinOptions{NoVerify: true})
	if _, err := tr.SetPassthrough("nv"); err == nil {
		t.Error("a browser that cannot verify was made pass-through")
	}
	if _, err := tr.SetStrips("nv"); err == nil {
		t.Error("a browser was made to strip")
	}
}

// TestRandomOperationsWithNoVerify runs the random operation mix with a
// share of browsers that cannot verify, Go relays that strip, and the
// stream turning signed and unsigned, checking every invariant (the strict
// rule included: Check) after each operation, and that every standby
// named for a strict node may feed it.
func TestRandomOperationsWithNoVerify(t *testing.T) {
	ops := 30_000
	if testing.Short() {
		ops = 5_000
	}
	for _, cfg := range []Config{{}, {SourceCapacity: 2, BrowserMaxCapacity: 3, GoMaxCapacity: 4, MaxBrowserHops: 1}, {Prove: true}} {
		s := newSim(t, cfg, 5)
		if _, err := s.tr.SetSource("src0", 0); err != nil {
			t.Fatal(err)
		}
		s.tr.SetSigned(true)
		strictPlaced, standbys := 0, 0
		for i := range ops {
			var what string
			switch r := s.rng.IntN(20); {
			case r == 0:
				s.tr.SetSigned(!s.tr.Signed())
				what = fmt.Sprintf("signed %v", s.tr.Signed())
			case r < 3:
				s.next++
				id := fmt.Sprintf("n%d", s.next)
				if _, err := s.tr.JoinWith(id, protocol.RoleViewer, protocol.KindBrowser, s.rng.IntN(3), JoinOptions{NoVerify: true}); err != nil {
					t.Fatal(err)
				}
				s.ids = append(s.ids, id)
				what = "join noverify " + id
			case r < 4:
				s.next++
				id := fmt.Sprintf("n%d", s.next)
				if _, err := s.tr.Join(id, protocol.RoleRelay, protocol.KindGo, 1+s.rng.IntN(4)); err != nil {
					t.Fatal(err)
				}
				if _, err := s.tr.SetStrips(id); err != nil {
					t.Fatal(err)
				}
				s.ids = append(s.ids, id)
				what = "join stripper " + id
			default:
				what = s.step(150)
			}
			s.mustCheck(what, i)
			if i%50 == 0 {
				for n := range s.tr.noverify {
					if !s.tr.strict(n) || !n.placed {
						continue
					}
					strictPlaced++
					if sb := s.tr.Standby(n.id); sb != "" {
						standbys++
						if !feedsOK(s.tr, sb) {
							t.Fatalf("op %d: standby of %s is %s, which forwards signatures", i, n.id, sb)
						}
					}
				}
			}
		}
		t.Logf("%+v: %d nodes, %d queued; %d strict placements and %d of their standbys checked", cfg, s.tr.Len(), s.tr.QueueLen(), strictPlaced, standbys)
	}
}
