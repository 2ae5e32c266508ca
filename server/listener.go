package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HTTPLimits bound the server's TCP connections and its plain HTTP
// requests. Zero fields take the defaults below; a negative count disables
// that limit. WebSocket connections are counted like any other (they are
// TCP connections too), but once upgraded they run on their own deadlines
// (Limits: pings, pong and write timeouts), not on these.
type HTTPLimits struct {
	// MaxConnsPerIP bounds the open TCP connections of one client address
	// (per /64 for IPv6): signaling, page loads and idle keep-alives alike.
	MaxConnsPerIP int
	// MaxConns bounds the open TCP connections in all; zero derives it from
	// the process's file limit (see defaultMaxConns).
	MaxConns int
	// ReadHeaderTimeout bounds reading a request's headers (slowloris).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response, from the end of its headers.
	WriteTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection may wait for its
	// next request before the server closes it.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int
}

// Default HTTP limits.
const (
	// DefaultHTTPConnsPerIP sits above DefaultMaxConnsPerIP (256 signaling
	// connections per address), so a NAT full of viewers keeps each its
	// WebSocket plus the one or two page and asset connections a browser
	// holds open, while one address can no longer hold 20 000 idle
	// connections (the attack that exhausted the server's descriptors).
	DefaultHTTPConnsPerIP = 512
	// DefaultHTTPReadHeaderTimeout: headers are one round trip; 10 s covers a
	// phone on a bad link.
	DefaultHTTPReadHeaderTimeout = 10 * time.Second
	// DefaultHTTPReadTimeout: the largest request body is an SDP offer (under
	// 64 KiB); 30 s is generous for it.
	DefaultHTTPReadTimeout = 30 * time.Second
	// DefaultHTTPWriteTimeout: the slowest response is a WHIP/WHEP answer that
	// waits for ICE gathering (a few seconds) or a /metrics scrape.
	DefaultHTTPWriteTimeout = 30 * time.Second
	// DefaultHTTPIdleTimeout: browsers reuse a keep-alive connection within
	// seconds (the stream list polls every few); past a minute it is an fd
	// held for nothing.
	DefaultHTTPIdleTimeout = 60 * time.Second
	// DefaultHTTPMaxHeaderBytes: the largest legitimate header is a bearer
	// token (protocol.MaxTokenLength, 4 KiB).
	DefaultHTTPMaxHeaderBytes = 32 << 10
)

// defaultMaxConns is half the process's file limit (fileLimit, in
// turnlimit_*.go): a quarter stays for the TURN relay's allocations
// (turnFDShare) and a quarter for the in-process peers' UDP sockets and
// files, so a flood of connections from many addresses is refused before
// accept(2) starts failing.
func defaultMaxConns() int {
	return max(fileLimit()/2, 64)
}

func (l HTTPLimits) withDefaults() HTTPLimits {
	defi := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defi(&l.MaxConnsPerIP, DefaultHTTPConnsPerIP)
	if l.MaxConns == 0 {
		l.MaxConns = defaultMaxConns()
	}
	defi(&l.MaxHeaderBytes, DefaultHTTPMaxHeaderBytes)
	defd(&l.ReadHeaderTimeout, DefaultHTTPReadHeaderTimeout)
	defd(&l.ReadTimeout, DefaultHTTPReadTimeout)
	defd(&l.WriteTimeout, DefaultHTTPWriteTimeout)
	defd(&l.IdleTimeout, DefaultHTTPIdleTimeout)
	return l
}

// newHTTPServer is the http.Server every listener of s is served by: main
// and the tests alike.
func (s *Server) newHTTPServer() *http.Server {
	l := s.cfg.HTTP
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// Serve accepts connections on ln, within the connection limits and with
// the timeouts of Config.HTTP, until Shutdown or Close. It returns
// http.ErrServerClosed after those.
func (s *Server) Serve(ln net.Listener) error {
	return s.http.Serve(s.conns.wrap(ln))
}

// Shutdown stops accepting and waits for requests in flight (not for
// upgraded WebSockets: their sessions end as their peers go).
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	s.closeNode()
	return err
}

// Close closes the listeners and every connection that is not upgraded.
func (s *Server) Close() error {
	err := s.http.Close()
	s.closeNode()
	return err
}

// closeNode closes single mode's NATS; a cluster node is its caller's.
func (s *Server) closeNode() {
	if s.ownNode {
		s.nodeOnce.Do(s.node.Close)
	}
}

// Reasons a connection is refused at accept.
const (
	connRefusedPerAddress = "per_address"
	connRefusedTotal      = "total"
)

// connTracker counts the server's open TCP connections, per client address
// and in all, for every listener it wraps. One mutex; each accept and close
// is a map update.
type connTracker struct {
	lim HTTPLimits
	log *slog.Logger

	mu    sync.Mutex
	perIP map[netip.Prefix]int
	total int

	refusedPerIP, refusedAll atomic.Uint64
	lastWarn                 atomic.Int64 // unix nanoseconds of the last refusal logged
}

func newConnTracker(lim HTTPLimits, log *slog.Logger) *connTracker {
	return &connTracker{lim: lim, log: log, perIP: make(map[netip.Prefix]int)}
}

func (t *connTracker) wrap(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, t: t}
}

// acquire counts a new connection from key, or says why it is refused.
func (t *connTracker) acquire(key netip.Prefix) (reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lim.MaxConns >= 0 && t.total >= t.lim.MaxConns {
		t.refusedAll.Add(1)
		return connRefusedTotal
	}
	if t.lim.MaxConnsPerIP >= 0 && t.perIP[key] >= t.lim.MaxConnsPerIP {
		t.refusedPerIP.Add(1)
		return connRefusedPerAddress
	}
	t.total++
	t.perIP[key]++
	return ""
}

func (t *connTracker) release(key netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total--
	if t.perIP[key]--; t.perIP[key] <= 0 {
		delete(t.perIP, key)
	}
}

// open is the number of connections counted now.
func (t *connTracker) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// refusal is the canned answer to a connection refused at accept: the
// client learns why (and when to retry) instead of seeing a bare reset.
func refusal(reason string) []byte {
	status, body := "429 Too Many Requests", "too many connections from this address\n"
	if reason == connRefusedTotal {
		status, body = "503 Service Unavailable", "the server is at its connection limit\n"
	}
	return fmt.Appendf(nil, "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		status, len(body), body)
}

// refuseWriteTimeout bounds writing the refusal: a fresh socket's send
// buffer always has room for ~200 bytes, so this never holds the accept loop.
const refuseWriteTimeout = 50 * time.Millisecond

// refuse answers c with the reason and closes it. Warnings are limited to
// one a second: a flood must not also flood the log.
func (t *connTracker) refuse(c net.Conn, reason string) {
	_ = c.SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
	_, _ = c.Write(refusal(reason))
	_ = c.Close()
	now := time.Now().UnixNano()
	if last := t.lastWarn.Load(); now-last > int64(time.Second) && t.lastWarn.CompareAndSwap(last, now) {
		t.log.Warn("connection refused", "remote", c.RemoteAddr().String(), "reason", reason,
			"open", t.open(), "refused_per_address", t.refusedPerIP.Load(), "refused_total", t.refusedAll.Load())
	}
}

// limitListener applies a connTracker to one listener.
type limitListener struct {
	net.Listener
	t *connTracker
}

// Accept returns the next connection within the limits; connections past
// them are answered and closed here, without reaching the HTTP server.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := clientKey(c.RemoteAddr().String())
		if reason := l.t.acquire(key); reason != "" {
			l.t.refuse(c, reason)
			continue
		}
		return &trackedConn{Conn: c, t: l.t, key: key}, nil
	}
}

// trackedConn gives its slot back once, on the first Close (the HTTP
// server's, or the WebSocket session's after a hijack).
type trackedConn struct {
	net.Conn
	t    *connTracker
	key  netip.Prefix
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.t.release(c.key) })
	return err
}

// connCollector exports the tracker's figures. Two refusal counters, not
// one with a label: canopy_* metrics keep to the role/kind/outcome labels.
type connCollector struct {
	t                  *connTracker
	open, perIP, atCap *prometheus.Desc
}

func newConnCollector(t *connTracker) *connCollector {
	return &connCollector{
		t:     t,
		open:  prometheus.NewDesc("canopy_http_conns", "Open TCP connections (HTTP and WebSocket).", nil, nil),
		perIP: prometheus.NewDesc("canopy_http_conns_refused_per_address_total", "TCP connections refused because their address held its share (-max-http-conns-per-ip).", nil, nil),
		atCap: prometheus.NewDesc("canopy_http_conns_refused_at_cap_total", "TCP connections refused because the server held its total (-max-http-conns).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (cc *connCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cc.open
	ch <- cc.perIP
	ch <- cc.atCap
}

// Collect implements prometheus.Collector.
func (cc *connCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(cc.open, prometheus.GaugeValue, float64(cc.t.open()))
	ch <- prometheus.MustNewConstMetric(cc.perIP, prometheus.CounterValue, float64(cc.t.refusedPerIP.Load()))
	ch <- prometheus.MustNewConstMetric(cc.atCap, prometheus.CounterValue, float64(cc.t.refusedAll.Load()))
}
