package mesh

import (
	"math/rand/v2"
	"time"
)

// Re-dial delays, the same as the browser client's (static/js/backoff.js).
const (
	// DefaultBackoffBase is the delay before the first retry.
	DefaultBackoffBase = 500 * time.Millisecond
	// DefaultBackoffMax is the longest delay between retries.
	DefaultBackoffMax = 10 * time.Second
	// DefaultBackoffJitter is the fraction of a delay that jitter may take
	// away, so that many peers dropped at once do not return in step.
	DefaultBackoffJitter = 0.25
)

// Backoff is a jittered exponential back-off for re-dialing the server.
// The zero value uses the defaults above. Call Reset once a node has been
// live, so a peer that played for an hour returns as fast as a new one.
type Backoff struct {
	Base, Max time.Duration
	Jitter    float64
	attempt   int
}

// Next returns the delay before the next retry and counts the retry: Base
// doubled per retry up to Max, shortened by up to Jitter of itself.
func (b *Backoff) Next() time.Duration {
	base, limit, jitter := b.Base, b.Max, b.Jitter
	if base <= 0 {
		base = DefaultBackoffBase
	}
	if limit <= 0 {
		limit = DefaultBackoffMax
	}
	if jitter <= 0 || jitter > 1 {
		jitter = DefaultBackoffJitter
	}
	d := limit
	if b.attempt < 30 && base<<b.attempt < limit {
		d = base << b.attempt
	}
	b.attempt++
	return time.Duration(float64(d) * (1 - jitter*rand.Float64()))
}

// Reset starts the schedule over.
func (b *Backoff) Reset() { b.attempt = 0 }
