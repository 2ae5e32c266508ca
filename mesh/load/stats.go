package load

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// maxSamples bounds each latency sample set (a reservoir): percentiles of
// 10⁵ joins are as good from 2¹⁶ samples, and memory stays flat in a soak.
const maxSamples = 1 << 16

// samples is a bounded reservoir of durations.
type samples struct {
	mu   sync.Mutex
	n    int
	keep []time.Duration
	seed uint64
}

func (s *samples) add(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	if len(s.keep) < maxSamples {
		s.keep = append(s.keep, d)
		return
	}
	// xorshift: a cheap index into the reservoir (Algorithm R).
	s.seed ^= s.seed<<13 + 0x9e3779b97f4a7c15
	s.seed ^= s.seed >> 7
	s.seed ^= s.seed << 17
	if i := int(s.seed % uint64(s.n)); i < maxSamples {
		s.keep[i] = d
	}
}

// Latency summarises one sample set, in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50Ms"`
	P99   float64 `json:"p99Ms"`
	Max   float64 `json:"maxMs"`
}

func (s *samples) summary() Latency {
	s.mu.Lock()
	sorted := slices.Clone(s.keep)
	n := s.n
	s.mu.Unlock()
	if len(sorted) == 0 {
		return Latency{}
	}
	slices.Sort(sorted)
	at := func(q float64) float64 {
		i := int(q * float64(len(sorted)-1))
		return ms(sorted[i])
	}
	return Latency{Count: n, P50: at(0.5), P99: at(0.99), Max: ms(sorted[len(sorted)-1])}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// counters is what every simulated peer adds to.
type counters struct {
	dialed, placed, moves, answers, offline atomic.Int64

	joinLat, offerLat, reparentLat samples

	mu          sync.Mutex
	errs        map[string]int
	lastErr     map[string]string
	firstPlaced time.Time
	lastPlaced  time.Time
}

func newCounters() *counters {
	return &counters{errs: make(map[string]int), lastErr: make(map[string]string)}
}

func (c *counters) joined(now time.Time, d time.Duration) {
	c.placed.Add(1)
	c.joinLat.add(d)
	c.mu.Lock()
	if c.firstPlaced.IsZero() {
		c.firstPlaced = now
	}
	c.lastPlaced = now
	c.mu.Unlock()
}

func (c *counters) firstOffer(d time.Duration) { c.offerLat.add(d) }
func (c *counters) reparent(d time.Duration)   { c.reparentLat.add(d) }

// errorf counts one error by code and keeps the last message of each.
func (c *counters) errorf(code, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs[code]++
	c.lastErr[code] = fmt.Sprintf(format, args...)
}

// ErrorCount is one error code and how often it came.
type ErrorCount struct {
	Code  string `json:"code"`
	Count int    `json:"count"`
	Last  string `json:"last"`
}

func (c *counters) errors() []ErrorCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ErrorCount, 0, len(c.errs))
	for code, n := range c.errs {
		out = append(out, ErrorCount{Code: code, Count: n, Last: c.lastErr[code]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Count > out[j].Count })
	return out
}
