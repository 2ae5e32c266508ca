package tree

import (
	"testing"
)

func mustTrust(t *testing.T, tr *Tree, id string, level Trust) []Change {
	t.Helper()
	ch, err := tr.SetTrust(id, level)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Check(); err != nil {
		t.Fatalf("after trust %s %s: %v", id, level, err)
	}
	return ch
}

// A peer earns its capacity: none before it plays (a relay: one child on
// trial), one child on trial, all of it once a child plays from it.
func TestTrustLadder(t *testing.T) {
	tr := build(t, Config{Prove: true}, 1, joinSpec{"w", brK, 2}, joinSpec{"x", brK, 0})
	if got := layout(tr, "w", "x"); got != "w@1<src x=queued" {
		t.Fatalf("before the browser plays: %s", got)
	}
	mustTrust(t, tr, "w", TrustPlayed)
	if got := layout(tr, "w", "x"); got != "w@1<src x@2<w" {
		t.Fatalf("browser on trial: %s", got)
	}

	tr = build(t, Config{Prove: true}, 1, joinSpec{"r", goK, 8}, joinSpec{"a", brK, 0}, joinSpec{"b", brK, 0}, joinSpec{"c", brK, 0})
	if got := layout(tr, "r", "a", "b", "c"); got != "r@1<src a@2<r b=queued c=queued" {
		t.Fatalf("before r plays: %s", got)
	}
	mustTrust(t, tr, "r", TrustPlayed)
	if got := layout(tr, "r", "a", "b", "c"); got != "r@1<src a@2<r b=queued c=queued" {
		t.Fatalf("r on trial: %s", got)
	}
	mustTrust(t, tr, "r", TrustProven)
	if got := layout(tr, "r", "a", "b", "c"); got != "r@1<src a@2<r b@2<r c@2<r" {
		t.Fatalf("r proven: %s", got)
	}
	if tr.Usable("r") != 8 {
		t.Errorf("proven r usable %d, want 8", tr.Usable("r"))
	}
	// Held (stall evidence): its children go, it keeps its place.
	mustTrust(t, tr, "r", TrustHeld)
	if got := layout(tr, "r", "a", "b", "c"); got != "r@1<src a=queued b=queued c=queued" {
		t.Fatalf("r held: %s", got)
	}
}

// Peers that never play (Go viewers claiming a capacity) take the source's slots; barring them hands each
// slot to a peer with nowhere else to go, and a barred peer never takes a
// place back from anyone.
func TestTrustBarredLeavesHandTheirPlace(t *testing.T) {
	tr := build(t, Config{Prove: true}, 2)
	for _, j := range []joinSpec{{"x", goK, 64}, {"y", goK, 64}, {"a", brK, 2}, {"b", goK, 0}} {
		if _, err := tr.Join(j.id, view, j.kind, j.cap); err != nil {
			t.Fatal(err)
		}
	}
	if got := layout(tr, "x", "y", "a", "b"); got != "x@1<src y@1<src a=queued b=queued" {
		t.Fatalf("black holes first: %s", got)
	}
	ch := mustTrust(t, tr, "x", TrustBarred)
	if got := layout(tr, "x", "y", "a", "b"); got != "x=queued y@1<src a@1<src b=queued" {
		t.Fatalf("x barred: %s (%v)", got, ch)
	}
	mustTrust(t, tr, "y", TrustBarred)
	if got := layout(tr, "x", "y", "a", "b"); got != "x=queued y=queued a@1<src b@1<src" {
		t.Fatalf("y barred: %s", got)
	}
	// a plays and gets one child: a barred peer waits behind nobody but
	// never displaces anyone, so it takes the free slot.
	mustTrust(t, tr, "a", TrustPlayed)
	if got := layout(tr, "x", "y", "a", "b"); got != "x@2<a y=queued a@1<src b@1<src" {
		t.Fatalf("a on trial: %s", got)
	}
	if tr.Join("c", view, brK, 0); tr.Check() != nil {
		t.Fatal(tr.Check())
	}
	if got := layout(tr, "x", "c"); got != "x=queued c@2<a" {
		t.Fatalf("c takes x's place: %s", got)
	}
}

// An unproven Go viewer is placed like any viewer, below a browser if need
// be; once a child plays from it, it is a relay and moves up to the Go part
// of the tree with its child.
func TestTrustGoViewerRisesOnceProven(t *testing.T) {
	tr := New(Config{Prove: true})
	if _, err := tr.SetSource("src", 1); err != nil {
		t.Fatal(err)
	}
	join := func(id string, role Role, kind Kind, c int) {
		t.Helper()
		if _, err := tr.Join(id, role, kind, c); err != nil {
			t.Fatal(err)
		}
		if err := tr.Check(); err != nil {
			t.Fatal(err)
		}
	}
	join("b", view, brK, 2)
	mustTrust(t, tr, "b", TrustProven)
	join("g", view, goK, 8)
	join("h", view, brK, 0)
	if got := layout(tr, "b", "g", "h"); got != "b@1<src g@2<b h@2<b" {
		t.Fatalf("g below the browser: %s", got)
	}
	mustTrust(t, tr, "g", TrustPlayed)
	if tr.relayClass(tr.nodes["g"]) {
		t.Fatal("an unproven Go viewer counts as a relay")
	}
	mustTrust(t, tr, "g", TrustProven)
	if got := layout(tr, "b", "g", "h"); got != "b@2<g g@1<src h@2<g" {
		t.Fatalf("proven g: %s", got)
	}
}
