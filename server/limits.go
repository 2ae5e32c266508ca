package main

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Errors of the per-IP limiter; both map to HTTP 429.
var (
	// errTooManyConns means the IP already holds its quota of signaling connections.
	errTooManyConns = errors.New("too many connections from this address")
	// errJoinRate means the IP opens connections faster than its join rate.
	errJoinRate = errors.New("too many joins from this address; slow down")
)

// Limits bounds what one connection and one client address may do. Zero
// fields take the defaults below; a negative rate or count disables that
// limit. The defaults let a campus NAT with a few hundred viewers through
// and the tests, which open dozens of connections from 127.0.0.1 in a
// second, pass.
type Limits struct {
	// MaxConnsPerIP bounds concurrent signaling connections per address
	// (per /64 for IPv6).
	MaxConnsPerIP int
	// JoinRate and JoinBurst bound new signaling connections per address:
	// a token bucket refilled at JoinRate per second.
	JoinRate  float64
	JoinBurst int
	// MessageRate and MessageBurst bound the messages one connection may
	// send, except signals to its tree neighbours (budget.go); past them a
	// message is refused with a rate_limited error and counts as bad.
	MessageRate  float64
	MessageBurst int
	// CeilingRate and CeilingBurst bound every message one connection
	// sends, signals to its neighbours included: a hard ceiling against a
	// flood, far above what serving children needs.
	CeilingRate  float64
	CeilingBurst int
	// PingInterval, PongTimeout: the server pings every PingInterval and
	// drops a peer it has not heard a pong (or message) from in PongTimeout.
	PingInterval time.Duration
	PongTimeout  time.Duration
	// WriteTimeout bounds one write to a peer's socket.
	WriteTimeout time.Duration
	// HelloTimeout is how long a new connection may wait before its hello.
	HelloTimeout time.Duration
	// MaxStreams and MaxPeers cap the streams the server hosts and its
	// signaling connections in all (see caps.go).
	MaxStreams int
	MaxPeers   int
	// ReclaimGrace is how long a stream's name is kept for a source whose
	// connection dropped (see caps.go).
	ReclaimGrace time.Duration
}

// Default limits.
const (
	DefaultMaxConnsPerIP = 256
	DefaultJoinRate      = 20
	DefaultJoinBurst     = 100
	DefaultMessageRate   = 100
	DefaultMessageBurst  = 400
	DefaultPingInterval  = 10 * time.Second
	DefaultPongTimeout   = 30 * time.Second
	DefaultWriteTimeout  = 5 * time.Second
	DefaultHelloTimeout  = 10 * time.Second
	// DefaultMaxStreams: each stream is a coordinator and a row of every
	// /api/streams answer (~60 bytes; the stream list polls it); a thousand
	// is more than one directory serves, and bounds what dev mode, where
	// anyone may publish, lets an address-hopping client create.
	DefaultMaxStreams = 1000
	// DefaultMaxPeers: an idle viewer's connection costs ~16 KB of heap and
	// stacks (~24 KB resident; `client load`, README "Load"; ~46 KB before
	// the send queue), so 20 000 is ~0.5 GB, and re-joining them all after a
	// restart takes ~7 s at the measured ~3 k joins/s.
	DefaultMaxPeers = 20_000
	// DefaultReclaimGrace covers a source's reconnect back-off (0.5, 1, 2,
	// 4 s) and the demo's restart, while the name of a source that is gone
	// for good frees up within seconds.
	DefaultReclaimGrace = 10 * time.Second
)

// withDefaults fills zero fields.
func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	deff := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxConnsPerIP, DefaultMaxConnsPerIP)
	deff(&l.JoinRate, DefaultJoinRate)
	def(&l.JoinBurst, DefaultJoinBurst)
	deff(&l.MessageRate, DefaultMessageRate)
	def(&l.MessageBurst, DefaultMessageBurst)
	deff(&l.CeilingRate, DefaultCeilingRate)
	def(&l.CeilingBurst, DefaultCeilingBurst)
	defd(&l.PingInterval, DefaultPingInterval)
	defd(&l.PongTimeout, DefaultPongTimeout)
	defd(&l.WriteTimeout, DefaultWriteTimeout)
	defd(&l.HelloTimeout, DefaultHelloTimeout)
	def(&l.MaxStreams, DefaultMaxStreams)
	def(&l.MaxPeers, DefaultMaxPeers)
	if l.ReclaimGrace == 0 {
		l.ReclaimGrace = DefaultReclaimGrace // negative: keep no names
	}
	return l
}

// messageLimiter returns a per-connection limiter, nil when unlimited.
func (l Limits) messageLimiter() *rate.Limiter {
	if l.MessageRate < 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(l.MessageRate), max(l.MessageBurst, 1))
}

// maxTrackedIPs bounds the limiter's table; past it idle entries are swept
// and, if it is still full, new addresses are refused rather than letting
// the table grow without bound.
const maxTrackedIPs = 1 << 16

// ipState is one address's join bucket and open connections.
type ipState struct {
	join  *rate.Limiter
	conns int
}

// ipLimiter enforces the per-address limits. One mutex; every operation is
// a map lookup.
type ipLimiter struct {
	lim Limits

	mu        sync.Mutex
	ips       map[netip.Prefix]*ipState
	lastSweep time.Time
}

func newIPLimiter(l Limits) *ipLimiter {
	return &ipLimiter{lim: l, ips: make(map[netip.Prefix]*ipState)}
}

// clientKey is the limiter's key for a remote address: the IPv4 address, or
// the /64 of an IPv6 one (one subscriber usually holds a whole /64).
func clientKey(remoteAddr string) netip.Prefix {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{} // unknown transports share one bucket
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// acquire admits a new connection from key, or says why not. release must
// be called once when the admitted connection ends.
func (l *ipLimiter) acquire(key netip.Prefix) (release func(), err error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > time.Minute {
		l.sweep(now)
	}
	st := l.ips[key]
	if st == nil {
		if len(l.ips) >= maxTrackedIPs {
			l.sweep(now)
			if len(l.ips) >= maxTrackedIPs {
				return nil, errJoinRate
			}
		}
		st = &ipState{}
		if l.lim.JoinRate >= 0 {
			st.join = rate.NewLimiter(rate.Limit(l.lim.JoinRate), max(l.lim.JoinBurst, 1))
		}
		l.ips[key] = st
	}
	if l.lim.MaxConnsPerIP >= 0 && st.conns >= l.lim.MaxConnsPerIP {
		return nil, errTooManyConns
	}
	if st.join != nil && !st.join.AllowN(now, 1) {
		return nil, errJoinRate
	}
	st.conns++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			st.conns--
			l.mu.Unlock()
		})
	}, nil
}

// arrive charges one join to key's bucket without holding a connection:
// a WHIP or WHEP POST starts a session, and pays as a /ws join does.
func (l *ipLimiter) arrive(key netip.Prefix) error {
	release, err := l.acquire(key)
	if err != nil {
		return err
	}
	release() // the session's own quota is the whip package's
	return nil
}

// sweep drops addresses with no connection whose bucket has refilled:
// forgetting them changes nothing. Runs under mu.
func (l *ipLimiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, st := range l.ips {
		if st.conns == 0 && (st.join == nil || st.join.TokensAt(now) >= float64(st.join.Burst())) {
			delete(l.ips, k)
		}
	}
}
