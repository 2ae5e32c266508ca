package tree_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// BenchmarkStandbysOfWide plans every family's standbys (StandbysOf of
// every node with children) in a tree shaped like a `client load` run's:
// source capacity 4, 2 % Go relays of capacity 64, the rest Go viewers of
// capacity 0, trust at random (relays earning their slots), 5 000 peers.
// A join's standby replan runs a few of these plans.
func BenchmarkStandbysOfWide(b *testing.B) {
	t := tree.New(tree.Config{})
	if _, err := t.SetSource("src", 4); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	trusts := []tree.Trust{tree.TrustNew, tree.TrustPlayed, tree.TrustProven, tree.TrustProven}
	var ids []string
	for i := range 5000 {
		id := fmt.Sprintf("n%d", i)
		role, capacity := protocol.RoleViewer, 0
		if rng.IntN(50) == 0 {
			role, capacity = protocol.RoleRelay, 64
		}
		if _, err := t.Join(id, role, protocol.KindGo, capacity); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
		if rng.IntN(3) == 0 {
			if _, err := t.SetTrust(ids[rng.IntN(len(ids))], trusts[rng.IntN(len(trusts))]); err != nil {
				b.Fatal(err)
			}
		}
	}
	var families []string
	for _, id := range ids {
		if len(t.Children(id)) > 0 {
			families = append(families, id)
		}
	}
	b.ResetTimer()
	for range b.N {
		for _, id := range families {
			_ = t.StandbysOf(id)
		}
	}
	b.ReportMetric(float64(len(families)), "families")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(families))/1000, "µs/plan")
}
