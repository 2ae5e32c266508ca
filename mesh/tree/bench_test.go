package tree

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// population fills a tree with n peers: 2% Go relays of capacity 64, the
// rest browsers of capacity 0–2.
type population struct {
	tr   *Tree
	ids  []string
	next int
	rng  *rand.Rand
}

func newPopulation(b *testing.B, n int) *population {
	p := &population{tr: New(Config{}), rng: rand.New(rand.NewPCG(1, 2))}
	if _, err := p.tr.SetSource("src", 0); err != nil {
		b.Fatal(err)
	}
	for range n {
		p.join(b)
	}
	return p
}

func (p *population) join(b *testing.B) {
	p.next++
	id := fmt.Sprintf("n%d", p.next)
	var err error
	if p.next%50 == 1 {
		_, err = p.tr.Join(id, rel, goK, 64)
	} else {
		_, err = p.tr.Join(id, view, brK, p.rng.IntN(3))
	}
	if err != nil {
		b.Fatal(err)
	}
	p.ids = append(p.ids, id)
}

func (p *population) leaveRandom() {
	i := p.rng.IntN(len(p.ids))
	id := p.ids[i]
	p.ids[i] = p.ids[len(p.ids)-1]
	p.ids = p.ids[:len(p.ids)-1]
	p.tr.Leave(id)
}

// BenchmarkJoin joins peers into a tree that already holds 10^5.
func BenchmarkJoin(b *testing.B) {
	p := newPopulation(b, 100_000)
	for b.Loop() {
		p.join(b)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(p.tr.MaxDepth()), "depth")
}

// BenchmarkLeave removes random peers (inner nodes and leaves alike) from a
// tree of about 10^5, refilling it outside the timer.
func BenchmarkLeave(b *testing.B) {
	const n = 100_000
	p := newPopulation(b, n)
	for b.Loop() {
		if len(p.ids) < n*9/10 {
			b.StopTimer()
			for len(p.ids) < n {
				p.join(b)
			}
			b.StartTimer()
		}
		p.leaveRandom()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(p.tr.MaxDepth()), "depth")
}

// BenchmarkStandby computes a standby parent for random peers.
func BenchmarkStandby(b *testing.B) {
	p := newPopulation(b, 100_000)
	for b.Loop() {
		p.tr.Standby(p.ids[p.rng.IntN(len(p.ids))])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkDepth reports depth against ⌈log_4 N⌉+1 for Go peers of
// capacity 4.
func BenchmarkDepth(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var depth int
			for b.Loop() {
				tr := New(Config{SourceCapacity: 4})
				if _, err := tr.SetSource("src", 4); err != nil {
					b.Fatal(err)
				}
				for i := range n {
					if _, err := tr.Join(fmt.Sprintf("n%d", i), rel, goK, 4); err != nil {
						b.Fatal(err)
					}
				}
				depth = tr.MaxDepth()
			}
			b.ReportMetric(float64(depth), "depth")
			b.ReportMetric(float64(bound(4, n)), "bound")
		})
	}
}
