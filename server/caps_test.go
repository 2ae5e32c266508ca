package main

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"canopy/mesh"
	"canopy/mesh/protocol"
)

// sourceHello is a source's hello that presents a reclaim secret.
func sourceHello(stream, reclaim string) string {
	m := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: protocol.RoleSource, Kind: protocol.KindGo,
		Stream: stream, Capacity: 4, Reclaim: reclaim,
		Tracks: []protocol.Track{{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}}}
	data, err := protocol.Encode(m)
	if err != nil {
		panic(err)
	}
	return string(data)
}

// drop ends a peer's connection the way a network fault does: no leave,
// no close frame.
func (p *livePeer) drop() {
	_ = p.conn.NetConn().Close()
	<-p.done
}

func waitOffline(t *testing.T, s *Server, stream string) {
	t.Helper()
	waitFor(t, 10*time.Second, "the server notices the source dropped", func() bool {
		co := s.hub.get(stream)
		return co != nil && !co.info().Live
	})
}

// TestStreamNameKeptForDroppedSource is the dev-mode hijack: a source's
// connection drops, and in the gap before it reconnects another client
// says hello as the stream's source. The name is kept for the dropped
// source: the impostor is refused (stream_taken), the viewers stay put,
// the real source comes back with the secret of its welcome, and a
// graceful leave frees the name at once.
func TestStreamNameKeptForDroppedSource(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{Resume: ResumeConfig{Grace: -1}}) // the name hold is for a source past any resume (suspend.go)
	src := dialLive(t, url, nil)
	src.send(sourceHello("show", ""))
	w := src.next(protocol.TypeWelcome)
	if len(w.Reclaim) < 16 {
		t.Fatalf("a source's welcome carries reclaim %q, want a secret", w.Reclaim)
	}
	viewer, _ := join(t, url, protocol.RoleViewer, protocol.KindGo, "show", 0)
	viewer.next(protocol.TypeParent)

	src.drop()
	waitOffline(t, s, "show")
	for _, c := range []struct{ what, secret string }{{"no secret", ""}, {"a wrong secret", "AAAAAAAAAAAAAAAAAAAAAA"}} {
		imp := dialLive(t, url, nil)
		imp.send(sourceHello("show", c.secret))
		m := imp.next(protocol.TypeError)
		if m.Code != protocol.CodeStreamTaken || !strings.Contains(m.Reason, "kept") {
			t.Errorf("impostor with %s: %s %q, want stream_taken (name kept)", c.what, m.Code, m.Reason)
		}
		imp.waitClosed("impostor")
	}

	back := dialLive(t, url, nil)
	back.send(sourceHello("show", w.Reclaim))
	w2 := back.next(protocol.TypeWelcome)
	if w2.Reclaim == "" || w2.Reclaim == w.Reclaim {
		t.Errorf("the returning source's new secret %q (old %q): want a fresh one", w2.Reclaim, w.Reclaim)
	}
	viewer.next(protocol.TypeParent) // placed under the source that came back
	if co := s.hub.get("show"); co == nil || !co.info().Live {
		t.Fatal("the stream is not live after its source came back")
	}

	// A graceful leave keeps nothing: the next source may take the name.
	back.send(`{"type":"leave"}`)
	waitOffline(t, s, "show")
	next := dialLive(t, url, nil)
	next.send(sourceHello("show", ""))
	next.next(protocol.TypeWelcome)
}

// TestStreamNameHoldExpires: a source that does not come back within the
// grace period gives up its name.
func TestStreamNameHoldExpires(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{Limits: Limits{ReclaimGrace: 500 * time.Millisecond}, Resume: ResumeConfig{Grace: -1}})
	src := dialLive(t, url, nil)
	src.send(sourceHello("show", ""))
	src.next(protocol.TypeWelcome)
	join(t, url, protocol.RoleViewer, protocol.KindGo, "show", 0) // keeps the stream in existence
	src.drop()
	waitOffline(t, s, "show")
	waitFor(t, 20*time.Second, "the name is free after the grace period", func() bool {
		p := dialLive(t, url, nil)
		p.send(sourceHello("show", ""))
		for {
			select {
			case m := <-p.in:
				switch m.Type {
				case protocol.TypeWelcome:
					return true
				case protocol.TypeError:
					return false
				}
			case <-p.done:
				return false
			}
		}
	})
}

// TestStreamNameHoldAuthMode: with auth on, a publish token is the proof:
// another holder of the stream's key may take over at once.
func TestStreamNameHoldAuthMode(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{Auth: authConfig(), Resume: ResumeConfig{Grace: -1}})
	src := dialLive(t, url, nil)
	src.send(hello(protocol.RoleSource, protocol.KindGo, "keyed", 4, "sk_live_0123456789"))
	src.next(protocol.TypeWelcome)
	join(t, url, protocol.RoleViewer, protocol.KindGo, "keyed", 0)
	src.drop()
	waitOffline(t, s, "keyed")
	again := dialLive(t, url, nil)
	again.send(hello(protocol.RoleSource, protocol.KindGo, "keyed", 4, "sk_live_0123456789"))
	again.next(protocol.TypeWelcome)
}

// cutProxy forwards TCP connections to target until cut, which breaks
// every one of them at once, as a network fault would.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestMeshSourceReclaimsItsStream: a mesh source whose signaling path
// breaks dials again with the same mesh.Reclaim and gets its stream back,
// while a raw impostor in the gap was refused.
func TestMeshSourceReclaimsItsStream(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{Resume: ResumeConfig{Grace: -1}}) // the name hold is for a source past any resume (suspend.go)
	proxy := newCutProxy(t, strings.TrimPrefix(url, "http://"))
	claim := new(mesh.Reclaim)
	cfg := mesh.Config{Server: proxy.url(), Stream: "gomesh", Role: protocol.RoleSource, Capacity: 2,
		Tracks:  []protocol.Track{{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}},
		Reclaim: claim, LoopbackOnly: true, Logger: testLogger()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := mesh.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	secret := claim.Secret()
	if secret == "" {
		t.Fatal("the Reclaim holds no secret after the welcome")
	}
	join(t, url, protocol.RoleViewer, protocol.KindGo, "gomesh", 0)

	proxy.cut()
	waitOffline(t, s, "gomesh")
	_ = first.Close()
	imp := dialLive(t, url, nil)
	imp.send(sourceHello("gomesh", ""))
	if m := imp.next(protocol.TypeError); m.Code != protocol.CodeStreamTaken {
		t.Errorf("impostor in the gap: %s %q", m.Code, m.Reason)
	}

	cfg.Server = url
	second, err := mesh.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("the source dialling again with its Reclaim: %v", err)
	}
	defer second.Close()
	if claim.Secret() == secret {
		t.Error("the Reclaim kept the old secret; want the new welcome's")
	}
	if co := s.hub.get("gomesh"); co == nil || !co.info().Live {
		t.Error("the stream is not live again")
	}
}

// TestServerCapsStreamsAndPeers: past -max-streams a new stream is refused
// with a reason and the existing ones carry on; past -max-peers a new
// connection is told the server is full and closed, and a freed slot is
// taken again.
func TestServerCapsStreamsAndPeers(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{Limits: Limits{MaxStreams: 2, MaxPeers: 4}})
	join(t, url, protocol.RoleSource, protocol.KindGo, "one", 2)
	join(t, url, protocol.RoleSource, protocol.KindGo, "two", 2)
	third := dialLive(t, url, nil)
	third.send(hello(protocol.RoleSource, protocol.KindGo, "three", 2, ""))
	if m := third.next(protocol.TypeError); m.Code != protocol.CodeFull || !strings.Contains(m.Reason, "limit of streams (2)") {
		t.Errorf("a third stream: %s %q, want full naming the stream limit", m.Code, m.Reason)
	}
	third.waitClosed("third stream")
	// The client sees the close before the server's session has ended
	// and given its slot back (a loaded CI machine joined peer 3 first).
	waitFor(t, 20*time.Second, "the third stream's slot is free", func() bool { return s.peers.n.Load() <= 2 })
	v, _ := join(t, url, protocol.RoleViewer, protocol.KindGo, "one", 0) // peer 3
	join(t, url, protocol.RoleViewer, protocol.KindGo, "two", 0)         // peer 4

	over := dialLive(t, url, nil)
	m := over.next(protocol.TypeError)
	if m.Code != protocol.CodeFull || !strings.Contains(m.Reason, "limit of peers (4)") {
		t.Errorf("a fifth peer: %s %q, want full naming the peer limit", m.Code, m.Reason)
	}
	over.waitClosed("fifth peer")
	if err := over.readErr(); err == nil || !strings.Contains(err.Error(), "1013") {
		t.Errorf("the fifth peer's close: %v, want 1013 (try again later)", over.readErr())
	}

	v.conn.Close()
	waitFor(t, 20*time.Second, "a freed slot is taken", func() bool {
		p := dialLive(t, url, nil)
		p.send(hello(protocol.RoleViewer, protocol.KindGo, "one", 0, ""))
		select {
		case m := <-p.in:
			return m.Type == protocol.TypeWelcome
		case <-p.done:
			return false
		case <-time.After(10 * time.Second):
			return false
		}
	})
}
