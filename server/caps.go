package main

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Server-wide caps and the names kept for sources whose connection
// dropped. The per-address limits are in limits.go and listener.go.
var (
	// errTooManyStreams means the server hosts its -max-streams already; a
	// new stream is refused (code full), joins to existing ones go on.
	errTooManyStreams = errors.New("the server hosts its limit of streams")
	// errTooManyPeers means the server holds its -max-peers signaling
	// connections; a new one is told so (code full) and closed.
	errTooManyPeers = errors.New("the server is at its limit of peers")
	// errReserved means a source's hello names a stream whose source just
	// dropped and presents neither that source's reclaim secret nor a
	// publish token: the name is kept for the source (code stream_taken).
	errReserved = errors.New("the stream's source dropped and may come back; its name is kept for it")
)

// peerSlots counts the server's signaling connections against a cap.
type peerSlots struct {
	max int // negative: no cap
	n   atomic.Int64
}

// acquire takes a slot; release gives it back once.
func (p *peerSlots) acquire() (release func(), ok bool) {
	if p.max >= 0 && p.n.Add(1) > int64(p.max) {
		p.n.Add(-1)
		return nil, false
	}
	if p.max < 0 {
		p.n.Add(1)
	}
	var once sync.Once
	return func() { once.Do(func() { p.n.Add(-1) }) }, true
}

// nameHolds keeps the names of streams whose source's connection dropped,
// for that source, for a grace period. In dev mode, where anyone may
// publish, that gap was the moment to hijack a stream: the next hello
// became its source and every returning viewer watched the impostor. Its
// own lock, never held while taking another.
type nameHolds struct {
	grace time.Duration
	now   func() time.Time

	mu    sync.Mutex
	holds map[string]nameHold
}

type nameHold struct {
	secret string
	until  time.Time
}

func newNameHolds(grace time.Duration) *nameHolds {
	return &nameHolds{grace: grace, now: time.Now, holds: make(map[string]nameHold)}
}

// newReclaimSecret is a fresh secret for a source's welcome: 128 bits, so
// it cannot be guessed within a grace period.
func newReclaimSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// hold keeps stream for the source that held secret, for the grace period.
func (n *nameHolds) hold(stream, secret string) {
	if secret == "" || n.grace <= 0 {
		return
	}
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	for s, h := range n.holds {
		if now.After(h.until) {
			delete(n.holds, s)
		}
	}
	n.holds[stream] = nameHold{secret: secret, until: now.Add(n.grace)}
}

// check lets a source's hello for stream through, or says the name is
// kept: it passes when nothing is held, the hold expired, the hello
// presents the held secret, or its grant may publish the stream (with
// auth on, a publish token is the proof, as it was the first time).
func (n *nameHolds) check(stream, secret string, g *grant) error {
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	h, ok := n.holds[stream]
	switch {
	case !ok:
		return nil
	case now.After(h.until):
		delete(n.holds, stream)
		return nil
	case secret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(h.secret)) == 1:
		return nil
	case g.covers(stream) && g.publish:
		return nil
	}
	return fmt.Errorf("%w for another %s", errReserved, h.until.Sub(now).Round(100*time.Millisecond))
}

// release drops the hold on stream once a source has its name back.
func (n *nameHolds) release(stream string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.holds, stream)
}
