package tree

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// bound is ⌈log_k n⌉+1.
func bound(k, n int) int {
	return int(math.Ceil(math.Log(float64(n))/math.Log(float64(k))-1e-9)) + 1
}

// TestDepthVersusN grows trees of N Go peers of capacity k=4 below a source
// of capacity 4, then lets half of them leave at random, and compares the
// depth with ⌈log_k N⌉+1 each time.
func TestDepthVersusN(t *testing.T) {
	sizes := []int{10, 100, 1000, 100_000}
	if testing.Short() {
		sizes = sizes[:3]
	}
	const k = 4
	for _, n := range sizes {
		tr := New(Config{SourceCapacity: k})
		if _, err := tr.SetSource("src", k); err != nil {
			t.Fatal(err)
		}
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("n%d", i)
			if _, err := tr.Join(ids[i], rel, goK, k); err != nil {
				t.Fatal(err)
			}
		}
		if err := tr.Check(); err != nil {
			t.Fatal(err)
		}
		grown := tr.MaxDepth()
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		for _, id := range ids[:n/2] {
			tr.Leave(id)
		}
		if err := tr.Check(); err != nil {
			t.Fatal(err)
		}
		churned := tr.MaxDepth()
		t.Logf("N=%-6d depth %d (bound %d); after %d random leaves N=%-6d depth %d (bound %d)",
			n, grown, bound(k, n), n/2, n-n/2, churned, bound(k, n-n/2))
		if grown > bound(k, n) || churned > bound(k, n-n/2) {
			t.Errorf("N=%d: depth over ⌈log_k N⌉+1", n)
		}
	}
}

// TestDepthMixed logs depth for a realistic mix: a few Go relays of
// capacity 16, browsers of capacity 0–2, in join order.
func TestDepthMixed(t *testing.T) {
	for _, n := range []int{100, 1000, 10_000} {
		s := newSim(t, Config{}, uint64(n))
		if _, err := s.tr.SetSource("src", 0); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if i%50 == 0 {
				s.join(rel, goK, 16)
			} else {
				s.join(view, brK, s.rng.IntN(3))
			}
		}
		if err := s.tr.Check(); err != nil {
			t.Fatal(err)
		}
		t.Logf("N=%-6d (2%% Go relays k=16, browsers k=0..2): max depth %d, queued %d", n, s.tr.MaxDepth(), s.tr.QueueLen())
	}
}
