package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
)

// keepAlive opens a TCP connection from local (nil: any), sends one
// keep-alive GET /healthz and reads the answer, leaving the connection open
// and idle as the attack did. It returns the connection and the status
// (0 if there was no HTTP answer) and the body, or why there was none.
// It may run on any goroutine.
func keepAlive(srvURL string, local net.Addr) (net.Conn, int, string) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: local}
	c, err := d.Dial("tcp", strings.TrimPrefix(srvURL, "http://"))
	if err != nil {
		return closedConn{}, 0, "dial: " + err.Error()
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: canopy\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return c, 0, err.Error()
	}
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
	res.Body.Close()
	_ = c.SetDeadline(time.Time{})
	return c, res.StatusCode, string(body)
}

// closedConn stands for a connection that could not be made.
type closedConn struct{ net.Conn }

func (closedConn) Close() error { return nil }

// from is a local address on loopback other than 127.0.0.1: Linux answers
// the whole of 127/8, so a test can be a second client address.
func from(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip)} }

// TestIdleKeepAlivesFromOneAddressAreCapped is the descriptor-exhaustion
// attack at a scale one test process can hold: one address opens more
// keep-alive connections than its share and leaves them idle. The server
// serves its share, answers the rest 429 with the reason and closes them,
// and stays up for everyone else, pages and signaling alike.
func TestIdleKeepAlivesFromOneAddressAreCapped(t *testing.T) {
	s, srvURL := startServerWith(t, Config{})
	const extra = 40
	attempts := DefaultHTTPConnsPerIP + extra
	var (
		mu      sync.Mutex
		served  int
		refused int
		other   []string
		conns   []net.Conn
	)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for range attempts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, status, body := keepAlive(srvURL, from("127.0.0.1"))
			mu.Lock()
			defer mu.Unlock()
			conns = append(conns, c)
			switch {
			case status == http.StatusOK:
				served++
			case status == http.StatusTooManyRequests && strings.Contains(body, "too many connections from this address"):
				refused++
			default:
				other = append(other, body)
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	t.Logf("%d keep-alive connections from 127.0.0.1: %d served, %d refused (429), %d other; %d open on the server",
		attempts, served, refused, len(other), s.conns.open())
	if served != DefaultHTTPConnsPerIP {
		t.Errorf("served %d idle connections from one address, want its limit %d", served, DefaultHTTPConnsPerIP)
	}
	if refused != extra || len(other) != 0 {
		t.Errorf("refused %d with a reason, want %d; other answers: %q", refused, extra, other)
	}

	// Another address is served: a page, the API and a signaling connection.
	c, status, body := keepAlive(srvURL, from("127.0.0.2"))
	c.Close()
	if status != http.StatusOK {
		t.Fatalf("/healthz from another address: %d %s", status, body)
	}
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		return (&net.Dialer{LocalAddr: from("127.0.0.2")}).Dial(network, addr)
	}}
	ws, _, err := d.Dial(wsURLOf(srvURL), nil)
	if err != nil {
		t.Fatalf("signaling from another address: %v", err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(hello(protocol.RoleSource, protocol.KindGo, "up", 2, ""))); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if m, err := protocol.Decode(data); err != nil || m.Type != protocol.TypeWelcome {
		t.Fatalf("hello from another address: %s (%v)", data, err)
	}

	// The address's slots come back as its connections close.
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, 20*time.Second, "the flood's slots are released", func() bool {
		c, status, _ := keepAlive(srvURL, from("127.0.0.1"))
		c.Close()
		return status == http.StatusOK
	})
}

// TestGlobalConnectionCap fills the server's total from several addresses,
// each within its own share: the next connection, from a fresh address, is
// answered 503 with the reason, and one closed connection frees a slot.
func TestGlobalConnectionCap(t *testing.T) {
	lightTest(t)
	const total = 12
	_, srvURL := startServerWith(t, Config{HTTP: HTTPLimits{MaxConns: total, MaxConnsPerIP: 5}})
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range total {
		c, status, body := keepAlive(srvURL, from("127.0.0."+string(rune('2'+i/4))))
		conns = append(conns, c)
		if status != http.StatusOK {
			t.Fatalf("connection %d within the caps: %d %s", i, status, body)
		}
	}
	c, status, body := keepAlive(srvURL, from("127.0.0.9"))
	c.Close()
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "connection limit") {
		t.Fatalf("past the global cap: %d %q, want 503 with the reason", status, body)
	}
	conns[0].Close()
	waitFor(t, 20*time.Second, "a closed connection frees a slot", func() bool {
		c, status, _ := keepAlive(srvURL, from("127.0.0.9"))
		c.Close()
		return status == http.StatusOK
	})
}

// TestIdleKeepAliveIsClosed: a connection that made one request and went
// quiet is closed by the server after its idle timeout, so idle
// connections cannot pile up however slowly they arrive.
func TestIdleKeepAliveIsClosed(t *testing.T) {
	_, srvURL := startServerWith(t, Config{HTTP: HTTPLimits{IdleTimeout: 500 * time.Millisecond}})
	c, status, body := keepAlive(srvURL, nil)
	defer c.Close()
	if status != http.StatusOK {
		t.Fatalf("/healthz: %d %s", status, body)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept an idle keep-alive connection open for 20 s")
	}
	if err == nil {
		t.Fatal("the server sent bytes on an idle connection")
	}
}

// TestWebSocketOutlivesHTTPTimeouts: the HTTP read, write and idle
// timeouts do not cut an upgraded signaling connection, which keeps its
// own deadlines (pings and pongs).
func TestWebSocketOutlivesHTTPTimeouts(t *testing.T) {
	lightTest(t)
	short := 300 * time.Millisecond
	_, srvURL := startServerWith(t, Config{HTTP: HTTPLimits{ReadTimeout: short, WriteTimeout: short, IdleTimeout: short, ReadHeaderTimeout: short}})
	p, _ := join(t, srvURL, protocol.RoleSource, protocol.KindGo, "long", 2)
	deadline := time.Now().Add(10 * short)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("the signaling connection ended after %s: %v", time.Since(deadline.Add(-10*short)), p.readErr())
		case <-time.After(50 * time.Millisecond):
		}
	}
	// It still works: a viewer joins and the source is told to attach it.
	v, _ := join(t, srvURL, protocol.RoleViewer, protocol.KindGo, "long", 0)
	_ = v
	p.next(protocol.TypeAttach)
}
