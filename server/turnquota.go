package main

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// TURN allocation limits.
const (
	// DefaultTURNUserQuota is how many allocations one credential (one
	// peer) may hold. A browser holds a parent connection, a standby one
	// and a few children's, each allocating once per local interface:
	// about a dozen at most. A Go relay with more children than this gets
	// no relay candidate on the rest, and connects through its children's
	// own relay candidates (one side of a pair relaying is enough).
	DefaultTURNUserQuota = 32
	// DefaultTURNAddrQuota is how many allocations one client address (an
	// IPv4 address, an IPv6 /64) may hold, whatever its credentials: a
	// household or campus NAT with a few dozen TURN users gets through,
	// one attacker opening many signaling connections does not.
	DefaultTURNAddrQuota = 128
	// DefaultTURNIdleTimeout releases an allocation that relayed nothing
	// for this long, however long its lifetime. A relayed pair in use
	// carries ICE keepalives every few seconds (pion 2 s, consent checks
	// every 5 s in browsers), so only unused allocations age out: a
	// candidate ICE did not pick, or a flood that never sends.
	DefaultTURNIdleTimeout = 60 * time.Second
	// turnFDShare is the share of the process's file limit the relay may
	// hold as sockets (each UDP allocation is one): the rest stays for
	// the signaling WebSockets, HTTP, the in-process peers and files.
	turnFDShare = 4
	// minTURNAllocations and maxTURNAllocations bound the derived total.
	// The upper bound leaves the ephemeral port range (28 232 ports on
	// Linux by default) to everything else on the host.
	minTURNAllocations = 64
	maxTURNAllocations = 16384
	// turnDialTimeout bounds a relay's outbound TCP connection: pion dials
	// on the server's one read loop, so a slow dial stalls every client.
	turnDialTimeout = 3 * time.Second
)

// Reasons a TURN request is refused, the label of canopy_turn_refused_total.
const (
	refusedUserQuota = "user_quota" // the credential holds its quota
	refusedAddrQuota = "addr_quota" // the client address holds its quota
	refusedTotal     = "total"      // the server holds its total cap
	refusedPeer      = "peer"       // a permission, send or dial to a denied address
	refusedTCP       = "tcp"        // a TCP allocation (RFC 6062) on the UDP listener
)

var turnRefusalReasons = []string{refusedUserQuota, refusedAddrQuota, refusedTotal, refusedPeer, refusedTCP}

// Errors of the relay's socket accounting.
var (
	// errTURNFull means the relay holds as many sockets as its cap allows.
	errTURNFull = errors.New("turn: relay at its socket cap")
	// errTURNTCP means a TCP allocation was asked of a UDP listener.
	errTURNTCP = errors.New("turn: TCP relaying needs a TCP control connection (RFC 6062 §5.1)")
	// errTURNPeerDenied means the relay refused to reach a denied address.
	errTURNPeerDenied = errors.New("turn: peer address denied")
)

// DefaultTURNAllocations derives the relay's total cap from the process's
// file limit (RLIMIT_NOFILE, which Go raises to the hard limit at start):
// a quarter of it, within [64, 16384].
func DefaultTURNAllocations() int {
	n := fileLimit() / turnFDShare
	return min(max(n, minTURNAllocations), maxTURNAllocations)
}

// turnLimits keeps the relay's allocation counts by credential and client
// address, refuses what exceeds the quotas, and releases idle ones.
type turnLimits struct {
	userQuota, addrQuota, total int
	idle                        time.Duration
	policy                      *peerPolicy
	log                         *slog.Logger

	mu      sync.Mutex
	users   map[string]int
	addrs   map[netip.Prefix]int
	allocs  int
	sockets map[*relayConn]struct{}

	refused  map[string]*atomic.Uint64
	released atomic.Uint64 // idle allocations closed
	stop     chan struct{}
	stopOnce sync.Once

	allocDesc, refusedDesc, releasedDesc *prometheus.Desc
}

func newTURNLimits(cfg TURNConfig, policy *peerPolicy, log *slog.Logger) *turnLimits {
	l := &turnLimits{
		userQuota: cfg.UserQuota, addrQuota: cfg.AddrQuota, total: cfg.MaxAllocations, idle: cfg.IdleTimeout,
		policy: policy, log: log,
		users: make(map[string]int), addrs: make(map[netip.Prefix]int), sockets: make(map[*relayConn]struct{}),
		refused: make(map[string]*atomic.Uint64), stop: make(chan struct{}),
		allocDesc:    prometheus.NewDesc("canopy_turn_allocations", "TURN allocations held by the embedded relay.", nil, nil),
		refusedDesc:  prometheus.NewDesc("canopy_turn_refused_total", "TURN requests the embedded relay refused, by reason (user_quota, addr_quota, total, peer, tcp).", []string{"reason"}, nil),
		releasedDesc: prometheus.NewDesc("canopy_turn_idle_released_total", "TURN allocations released because they relayed nothing for the idle timeout.", nil, nil),
	}
	if l.userQuota == 0 {
		l.userQuota = DefaultTURNUserQuota
	}
	if l.addrQuota == 0 {
		l.addrQuota = DefaultTURNAddrQuota
	}
	if l.total <= 0 {
		l.total = DefaultTURNAllocations()
	}
	if l.idle <= 0 {
		l.idle = DefaultTURNIdleTimeout
	}
	for _, r := range turnRefusalReasons {
		l.refused[r] = new(atomic.Uint64)
	}
	go l.reap()
	return l
}

func (l *turnLimits) refuse(reason string, args ...any) {
	l.refused[reason].Add(1)
	l.log.Debug("turn: refused", append([]any{"reason", reason}, args...)...)
}

// quota is pion's QuotaHandler: it runs on the server's read loop before
// each allocation, which OnAllocationCreated then counts. A negative
// quota disables that check.
func (l *turnLimits) quota(user, _ string, src net.Addr) bool {
	key := clientKey(src.String())
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.allocs >= l.total:
		l.refuse(refusedTotal, "allocations", l.allocs)
	case l.userQuota > 0 && l.users[user] >= l.userQuota:
		l.refuse(refusedUserQuota, "user", user)
	case l.addrQuota > 0 && l.addrs[key] >= l.addrQuota:
		l.refuse(refusedAddrQuota, "addr", key.String())
	default:
		return true
	}
	return false
}

// events counts allocations as pion makes and deletes them (lifetime
// expiry, a Refresh of 0, a relay socket closed for idleness).
func (l *turnLimits) events() turn.EventHandler {
	return turn.EventHandler{
		OnAllocationCreated: func(src, _ net.Addr, _, user, _ string, _ net.Addr, _ int) {
			key := clientKey(src.String())
			l.mu.Lock()
			defer l.mu.Unlock()
			l.allocs++
			l.users[user]++
			l.addrs[key]++
		},
		OnAllocationDeleted: func(src, _ net.Addr, _, user, _ string) {
			key := clientKey(src.String())
			l.mu.Lock()
			defer l.mu.Unlock()
			l.allocs--
			if l.users[user]--; l.users[user] <= 0 {
				delete(l.users, user)
			}
			if l.addrs[key]--; l.addrs[key] <= 0 {
				delete(l.addrs, key)
			}
		},
	}
}

// count returns the allocations held.
func (l *turnLimits) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.allocs
}

// reap closes relay sockets idle longer than l.idle; pion's read loop on
// the socket then deletes the allocation.
func (l *turnLimits) reap() {
	tick := time.NewTicker(max(l.idle/4, 250*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case now := <-tick.C:
			var idle []*relayConn
			l.mu.Lock()
			for c := range l.sockets {
				if now.Sub(time.Unix(0, c.last.Load())) > l.idle {
					idle = append(idle, c)
				}
			}
			l.mu.Unlock()
			for _, c := range idle {
				l.released.Add(1)
				_ = c.Close()
			}
		}
	}
}

func (l *turnLimits) close() { l.stopOnce.Do(func() { close(l.stop) }) }

// Describe implements prometheus.Collector.
func (l *turnLimits) Describe(ch chan<- *prometheus.Desc) {
	ch <- l.allocDesc
	ch <- l.refusedDesc
	ch <- l.releasedDesc
}

// Collect implements prometheus.Collector.
func (l *turnLimits) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(l.allocDesc, prometheus.GaugeValue, float64(l.count()))
	for _, r := range turnRefusalReasons {
		ch <- prometheus.MustNewConstMetric(l.refusedDesc, prometheus.CounterValue, float64(l.refused[r].Load()), r)
	}
	ch <- prometheus.MustNewConstMetric(l.releasedDesc, prometheus.CounterValue, float64(l.released.Load()))
}

// guardedRelay wraps pion's relay address generator: every relay socket
// counts against the cap and is watched for idleness, every datagram and
// dial to a peer passes the address policy again, and TCP allocations are
// refused (the server listens on UDP only, and RFC 6062 §5.1 requires a
// TCP control connection; pion would otherwise open a host TCP listener
// per allocation and dial peers on its read loop).
type guardedRelay struct {
	turn.RelayAddressGenerator
	lim *turnLimits
}

// AllocatePacketConn implements turn.RelayAddressGenerator.
func (g *guardedRelay) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	g.lim.mu.Lock()
	full := len(g.lim.sockets) >= g.lim.total
	g.lim.mu.Unlock()
	if full {
		g.lim.refuse(refusedTotal, "sockets", g.lim.total)
		return nil, nil, errTURNFull
	}
	conn, addr, err := g.RelayAddressGenerator.AllocatePacketConn(conf)
	if err != nil {
		return nil, nil, err
	}
	c := &relayConn{PacketConn: conn, lim: g.lim}
	c.last.Store(time.Now().UnixNano())
	g.lim.mu.Lock()
	g.lim.sockets[c] = struct{}{}
	g.lim.mu.Unlock()
	return c, addr, nil
}

// AllocateListener implements turn.RelayAddressGenerator.
func (g *guardedRelay) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	g.lim.refuse(refusedTCP)
	return nil, nil, errTURNTCP
}

// AllocateConn implements turn.RelayAddressGenerator: a Connect request
// (RFC 6062), after pion's permission check. With TCP allocations refused
// it has no TCP relay address to dial from; were a TCP listener added,
// its dials would still pass the policy, port included, and a timeout.
func (g *guardedRelay) AllocateConn(conf turn.AllocateConnConfig) (net.Conn, error) {
	if !g.lim.policy.permitAddr(conf.RemoteAddr) {
		g.lim.refuse(refusedPeer, "peer", conf.RemoteAddr.String(), "via", "dial")
		return nil, errTURNPeerDenied
	}
	d := net.Dialer{LocalAddr: conf.LocalAddr, Timeout: turnDialTimeout}
	return d.Dial(conf.Network, conf.RemoteAddr.String())
}

// relayConn is one allocation's relay socket.
type relayConn struct {
	net.PacketConn
	lim       *turnLimits
	last      atomic.Int64 // unix ns of the last datagram either way
	closeOnce sync.Once
}

// ReadFrom implements net.PacketConn.
func (c *relayConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(b)
	if err == nil {
		c.last.Store(time.Now().UnixNano())
	}
	return n, addr, err
}

// WriteTo implements net.PacketConn: the last check before a datagram
// leaves the relay.
func (c *relayConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if !c.lim.policy.permitAddr(addr) {
		c.lim.refuse(refusedPeer, "peer", addr.String(), "via", "send")
		return 0, errTURNPeerDenied
	}
	c.last.Store(time.Now().UnixNano())
	return c.PacketConn.WriteTo(b, addr)
}

// Close implements net.PacketConn. The reaper closes first, then pion's
// allocation on its way out: the second close is no error to log.
func (c *relayConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.lim.mu.Lock()
		delete(c.lim.sockets, c)
		c.lim.mu.Unlock()
		err = c.PacketConn.Close()
	})
	return err
}
