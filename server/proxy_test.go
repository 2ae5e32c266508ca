package main

import (
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// tcpProxy forwards loopback TCP connections to a server, and fails the
// ways networks and servers do: cutAll drops every connection at once (how
// a crashed peer looks to the server: its WebSocket ends without a leave),
// halfClose closes the clients' sides and keeps the server's open and
// silent (a client that moved to another network), freeze keeps every
// connection open and carries nothing either way, and accepts new ones it
// never answers (a stopped server: SIGSTOP, a paused VM).
type tcpProxy struct {
	ln     net.Listener
	target string

	mu               sync.Mutex
	clients, servers []net.Conn
	cut              bool
	// up: nothing goes from the clients to the server; frozen: nothing
	// goes either way.
	up, frozen atomic.Bool
}

func startProxy(t *testing.T, serverURL string) *tcpProxy {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: u.Host}
	go p.serve()
	t.Cleanup(p.cutAll)
	return p
}

// url is the proxy's address in the form mesh.Config.Server takes.
func (p *tcpProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.clients = append(p.clients, c)
		p.mu.Unlock()
		if p.frozen.Load() {
			continue // accepted, never answered
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.servers = append(p.servers, up)
		p.mu.Unlock()
		go p.pump(c, up, nil)
		go p.pump(up, c, &p.up)
	}
}

// pump copies src to dst until src ends, then closes dst, unless the proxy
// was half-closed or frozen (the other side stays open then). mute, when
// set, drops what src sends.
func (p *tcpProxy) pump(dst, src net.Conn, mute *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && (mute == nil || !mute.Load()) && !p.frozen.Load() {
			_, _ = dst.Write(buf[:n])
		}
		if err != nil {
			if !p.up.Load() && !p.frozen.Load() {
				dst.Close()
			}
			return
		}
	}
}

func (p *tcpProxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.ln.Close()
	for _, c := range append(p.clients, p.servers...) {
		c.Close()
	}
	p.clients, p.servers = nil, nil
}

// halfClose: see tcpProxy.
func (p *tcpProxy) halfClose() {
	p.up.Store(true)
	_ = p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.clients {
		_ = c.Close()
	}
}

// freeze: see tcpProxy.
func (p *tcpProxy) freeze() { p.frozen.Store(true) }
