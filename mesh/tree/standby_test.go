package tree

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"
)

func TestAdopt(t *testing.T) {
	tr := build(t, Config{}, 1,
		joinSpec{"r", goK, 2}, joinSpec{"r1", goK, 3}, joinSpec{"r2", goK, 1}, joinSpec{"x", brK, 0})
	// src → r → {r1 → x, r2}
	if got := layout(tr, "r", "r1", "r2", "x"); got != "r@1<src r1@2<r r2@2<r x@3<r1" {
		t.Fatalf("layout %s", got)
	}
	for _, c := range []struct {
		id, parent string
		err        error
	}{
		{"r", "x", ErrInvalid},  // below its own descendant
		{"r1", "x", ErrInvalid}, // ditto
		{"r", "r", ErrInvalid},  // itself
		{"x", "src", ErrNoSlot}, // the source is full
		{"nobody", "r", ErrUnknown},
		{"src", "r1", ErrInvalid}, // the root never moves
	} {
		if _, err := tr.Adopt(c.id, c.parent); !errors.Is(err, c.err) {
			t.Errorf("Adopt(%s, %s) = %v, want %v", c.id, c.parent, err, c.err)
		}
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Adopt("x", "r2")
	if err != nil {
		t.Fatal(err)
	}
	if len(ch) == 0 || ch[0] != (Change{"x", "r1", "r2"}) {
		t.Fatalf("changes %v", ch)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
	if !tr.Under("x", "r") || tr.Under("x", "r1") || !tr.Under("r", "r") || tr.Under("r", "x") {
		t.Error("Under disagrees with the layout")
	}
	if tr.Free("r2") != 0 || tr.Free("r1") != 3 {
		t.Errorf("free r2 %d, r1 %d", tr.Free("r2"), tr.Free("r1"))
	}
}

// TestAdoptStandbyKeepsInvariants: at random moments a random node adopts
// its standby parent; the tree stays valid, and the standby is never the
// node's own descendant.
func TestAdoptStandbyKeepsInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 13))
	tr := New(Config{SourceCapacity: 3})
	if _, err := tr.SetSource("src", 3); err != nil {
		t.Fatal(err)
	}
	var ids []string
	adopted := 0
	for i := range 2000 {
		switch op := rng.IntN(10); {
		case op < 5 || len(ids) < 5:
			id := "n" + strconv.Itoa(i)
			kind := goK
			if rng.IntN(2) == 0 {
				kind = brK
			}
			if _, err := tr.Join(id, "viewer", kind, rng.IntN(4)); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		case op < 7:
			k := rng.IntN(len(ids))
			tr.Leave(ids[k])
			ids = append(ids[:k], ids[k+1:]...)
		default:
			id := ids[rng.IntN(len(ids))]
			s := tr.Standby(id)
			if parent, _ := tr.Parent(id); tr.StandbysOf(parent)[id] != s {
				t.Fatalf("op %d: StandbysOf(%s)[%s] = %q, Standby = %q", i, parent, id, tr.StandbysOf(parent)[id], s)
			}
			if s == "" {
				continue
			}
			if tr.Under(s, id) {
				t.Fatalf("op %d: standby %s of %s is its own descendant", i, s, id)
			}
			if _, err := tr.Adopt(id, s); err == nil {
				adopted++
			} else if !errors.Is(err, ErrNoSlot) {
				t.Fatalf("op %d: Adopt(%s, standby %s): %v", i, id, s, err)
			}
		}
		if err := tr.Check(); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
	t.Logf("%d standby adoptions", adopted)
}
