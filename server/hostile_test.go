package main

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// One test per hostile input, each against its own server. None of them
// needs pion: the peers are raw WebSocket clients.

// startServerWith runs a server built from cfg on a loopback port.
func startServerWith(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	s := NewServer(cfg)
	return s, serve(t, s)
}

func wsURLOf(url string) string { return "ws" + strings.TrimPrefix(url, "http") + "/ws" }

// livePeer is a raw peer whose messages are read continuously (so it
// answers pings) into a channel.
type livePeer struct {
	t    *testing.T
	conn *websocket.Conn
	in   chan *protocol.Message
	done chan struct{} // closed when the read side ends
	mu   sync.Mutex
	err  error
	wmu  sync.Mutex // one writer at a time for sendMsg, from any goroutine
}

func dialLive(t *testing.T, url string, header http.Header) *livePeer {
	t.Helper()
	return dialLiveWith(t, websocket.DefaultDialer, url, header)
}

// dialLiveFrom dials from another loopback address (127.0.0.2, …): the
// server sees a peer of its own address.
func dialLiveFrom(t *testing.T, ip, url string) *livePeer {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return dialLiveWith(t, &websocket.Dialer{NetDialContext: d.DialContext, HandshakeTimeout: 10 * time.Second}, url, nil)
}

func dialLiveWith(t *testing.T, dialer *websocket.Dialer, url string, header http.Header) *livePeer {
	t.Helper()
	conn, _, err := dialer.Dial(wsURLOf(url), header)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p := &livePeer{t: t, conn: conn, in: make(chan *protocol.Message, 256), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
				return
			}
			if m, err := protocol.Decode(data); err == nil {
				select {
				case p.in <- m:
				default: // a test that ignores messages must not block the reader
				}
			}
		}
	}()
	return p
}

func (p *livePeer) send(s string) {
	p.t.Helper()
	if err := p.conn.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		p.t.Fatal(err)
	}
}

// sendMsg encodes and writes m; safe from any goroutine (a hostile peer's
// WebRTC callbacks), so it reports a failure with Errorf, not Fatal.
func (p *livePeer) sendMsg(m *protocol.Message) {
	data, err := protocol.Encode(m)
	if err != nil {
		p.t.Errorf("encode: %v", err)
		return
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_ = p.conn.WriteMessage(websocket.TextMessage, data)
}

// signal sends a signal to a tree neighbour.
func (p *livePeer) signal(to string, s protocol.Signal) {
	p.sendMsg(&protocol.Message{Type: protocol.TypeSignal, Peer: to, Sig: &s})
}

func (p *livePeer) next(typ protocol.Type) *protocol.Message {
	p.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-p.in:
			if m.Type == typ {
				return m
			}
		case <-p.done:
			// The reader queues every message before it ends, so what it
			// read just before the close is still in p.in.
			for {
				select {
				case m := <-p.in:
					if m.Type == typ {
						return m
					}
					continue
				default:
				}
				break
			}
			p.t.Fatalf("connection ended waiting for %s: %v", typ, p.readErr())
		case <-timeout:
			p.t.Fatalf("timed out waiting for %s", typ)
		}
	}
}

func (p *livePeer) readErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// waitClosed waits for the server to end the connection.
func (p *livePeer) waitClosed(what string) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Fatalf("%s: the server did not close the connection", what)
	}
}

func hello(role protocol.Role, kind protocol.Kind, stream string, capacity int, token string) string {
	m := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role, Kind: kind,
		Stream: stream, Capacity: capacity, Token: token}
	if role == protocol.RoleSource {
		m.Tracks = []protocol.Track{{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}}
	}
	data, err := protocol.Encode(m)
	if err != nil {
		panic(err)
	}
	return string(data)
}

// join dials, says hello and waits for the welcome.
func join(t *testing.T, url string, role protocol.Role, kind protocol.Kind, stream string, capacity int) (*livePeer, string) {
	t.Helper()
	p := dialLive(t, url, nil)
	p.send(hello(role, kind, stream, capacity, ""))
	return p, p.next(protocol.TypeWelcome).ID
}

func liveMsg(parent string) string { return `{"type":"live","peer":"` + parent + `"}` }

// claimLive waits until raw peer id is placed and tells the server it plays
// from its parent: a raw peer gets a child on trial only then (trust.go).
func (p *livePeer) claimLive(s *Server, stream, id string) {
	p.t.Helper()
	waitFor(p.t, 10*time.Second, id+" placed", func() bool { return parentOf(s, stream, id) != "" })
	p.send(liveMsg(parentOf(s, stream, id)))
	waitFor(p.t, 10*time.Second, id+" on trial", func() bool { n, _ := nodeOf(s, stream, id); return n.Usable > 0 })
}

func nodeOf(s *Server, stream, id string) (tree.NodeInfo, bool) {
	co := s.hub.get(stream)
	if co == nil {
		return tree.NodeInfo{}, false
	}
	for _, n := range co.snapshot() {
		if n.ID == id {
			return n, true
		}
	}
	return tree.NodeInfo{}, false
}

func parentOf(s *Server, stream, id string) string {
	n, _ := nodeOf(s, stream, id)
	return n.Parent
}

func TestHostileOversizedFrameCloses1009(t *testing.T) {
	lightTest(t)
	_, url := startServerWith(t, Config{})
	p := dialLive(t, url, nil)
	p.send(strings.Repeat("x", maxFrameSize+1))
	p.waitClosed("oversized frame")
	if !websocket.IsCloseError(p.readErr(), websocket.CloseMessageTooBig) {
		t.Fatalf("close: %v, want 1009 (message too big)", p.readErr())
	}
}

func TestHostileBadMessagesRepliedThenDisconnected(t *testing.T) {
	lightTest(t)
	_, url := startServerWith(t, Config{})
	p := dialLive(t, url, nil)
	p.send(`{"type":"hello",`)
	if m := p.next(protocol.TypeError); m.Code != protocol.CodeBadMessage {
		t.Errorf("bad JSON: code %q", m.Code)
	}
	p.send(`{"type":"teleport"}`)
	if m := p.next(protocol.TypeError); m.Code != protocol.CodeBadMessage {
		t.Errorf("unknown type: code %q", m.Code)
	}
	for range maxBadMessages {
		p.send(`not json`)
	}
	p.waitClosed("repeated abuse")
}

// With -embed-origins set, pages of other sites are refused at the upgrade
// (without it they may watch public streams: see TestEmbedOrigin*).
func TestHostileOriginForbidden(t *testing.T) {
	lightTest(t)
	_, url := startServerWith(t, Config{EmbedOrigins: []string{"https://embed.example"}})
	for _, c := range []struct {
		origin string
		want   int
	}{
		{"https://evil.example", http.StatusForbidden},
		{"null", http.StatusForbidden},
		{"https://embed.example", http.StatusSwitchingProtocols},
		{"", http.StatusSwitchingProtocols}, // non-browser clients send none
	} {
		h := http.Header{}
		if c.origin != "" {
			h.Set("Origin", c.origin)
		}
		conn, resp, err := websocket.DefaultDialer.Dial(wsURLOf(url), h)
		if conn != nil {
			conn.Close()
		}
		if resp == nil {
			t.Fatalf("origin %q: %v", c.origin, err)
		}
		if resp.StatusCode != c.want {
			t.Errorf("origin %q: status %d, want %d", c.origin, resp.StatusCode, c.want)
		}
	}
}

// A relay that stops answering pings is dropped after the pong timeout and
// its child is re-attached to the source.
func TestHostileSilentPeerDroppedChildrenReattached(t *testing.T) {
	s, url := startServerWith(t, Config{
		Policy: tree.Config{SourceCapacity: 1},
		Limits: Limits{PingInterval: 100 * time.Millisecond, PongTimeout: 700 * time.Millisecond},
	})
	_, srcID := join(t, url, protocol.RoleSource, protocol.KindGo, "quiet", 1)

	// The silent relay reads nothing after its welcome, so gorilla never
	// answers the server's pings.
	silent, _, err := websocket.DefaultDialer.Dial(wsURLOf(url), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if err := silent.WriteMessage(websocket.TextMessage, []byte(hello(protocol.RoleRelay, protocol.KindGo, "quiet", 2, ""))); err != nil {
		t.Fatal(err)
	}
	var relayID string
	for relayID == "" {
		_ = silent.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, data, err := silent.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if m, err := protocol.Decode(data); err == nil && m.Type == protocol.TypeWelcome {
			relayID = m.ID
		}
	}
	waitFor(t, 10*time.Second, "relay under the source", func() bool { return parentOf(s, "quiet", relayID) == srcID })
	// It claims to play, so it gets a child on trial (see trust.go).
	if err := silent.WriteMessage(websocket.TextMessage, []byte(liveMsg(srcID))); err != nil {
		t.Fatal(err)
	}

	_, viewerID := join(t, url, protocol.RoleViewer, protocol.KindGo, "quiet", 0)
	waitFor(t, 10*time.Second, "viewer under the relay", func() bool { return parentOf(s, "quiet", viewerID) == relayID })

	start := time.Now()
	waitFor(t, 15*time.Second, "silent relay dropped", func() bool { _, ok := nodeOf(s, "quiet", relayID); return !ok })
	t.Logf("silent relay dropped %v after the viewer joined (pong timeout 700 ms)", time.Since(start).Round(10*time.Millisecond))
	waitFor(t, 10*time.Second, "viewer re-attached to the source", func() bool { return parentOf(s, "quiet", viewerID) == srcID })
}

// A peer may signal only its tree neighbours: not a peer elsewhere in the
// tree, nor one it claims as its parent. (The source is no such peer: it
// is the viewer's standby parent, a neighbour, standby.go.)
func TestHostileSignalToNonNeighbourRejected(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2}})
	join(t, url, protocol.RoleSource, protocol.KindGo, "nb", 2)
	relayA, aID := join(t, url, protocol.RoleRelay, protocol.KindGo, "nb", 1)
	relayA.claimLive(s, "nb", aID)
	relayB, bID := join(t, url, protocol.RoleRelay, protocol.KindGo, "nb", 1)
	relayB.claimLive(s, "nb", bID)
	viewer, viewerID := join(t, url, protocol.RoleViewer, protocol.KindBrowser, "nb", 0)
	_, otherID := join(t, url, protocol.RoleViewer, protocol.KindBrowser, "nb", 0)
	waitFor(t, 10*time.Second, "a viewer under each relay", func() bool {
		p, q := parentOf(s, "nb", viewerID), parentOf(s, "nb", otherID)
		return (p == aID && q == bID) || (p == bID && q == aID)
	})
	// Once its standby is planned (standby_batch.go), nothing moves.
	waitFor(t, 10*time.Second, "the viewer's standby planned", func() bool {
		co := s.hub.get("nb")
		co.mu.Lock()
		defer co.mu.Unlock()
		return co.standby.of[viewerID] != ""
	})
	parent, parentID, elsewhere := relayA, aID, bID
	if parentOf(s, "nb", viewerID) == bID {
		parent, parentID, elsewhere = relayB, bID, aID
	}

	offer := func(to string) string {
		return `{"type":"signal","peer":"` + to + `","signal":{"kind":"offer","sdp":"v=0"}}`
	}
	// The viewer claims the other relay, full and in another branch, as its
	// parent and signals it.
	viewer.send(offer(elsewhere))
	if m := viewer.next(protocol.TypeError); m.Code != protocol.CodeNotNeighbour {
		t.Errorf("signal to a claimed parent: code %q, want %q", m.Code, protocol.CodeNotNeighbour)
	}
	viewer.send(offer(otherID))
	if m := viewer.next(protocol.TypeError); m.Code != protocol.CodeNotNeighbour {
		t.Errorf("signal to a viewer in another branch: code %q, want %q", m.Code, protocol.CodeNotNeighbour)
	}
	viewer.send(offer("pdoesnotexist"))
	if m := viewer.next(protocol.TypeError); m.Code != protocol.CodeNotNeighbour {
		t.Errorf("signal to an unknown peer: code %q, want %q", m.Code, protocol.CodeNotNeighbour)
	}
	// Its real parent is reachable, and sees the sender rewritten to the viewer.
	viewer.send(offer(parentID))
	if m := parent.next(protocol.TypeSignal); m.Peer != viewerID {
		t.Errorf("relay got a signal from %q, want %q", m.Peer, viewerID)
	}
}

func TestHostileCapacityClamped(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 1000}})
	join(t, url, protocol.RoleSource, protocol.KindGo, "cap", 1000)
	_, goID := join(t, url, protocol.RoleRelay, protocol.KindGo, "cap", 1000)
	_, brID := join(t, url, protocol.RoleViewer, protocol.KindBrowser, "cap", 1000)
	if n, _ := nodeOf(s, "cap", goID); n.Capacity != tree.DefaultGoMaxCapacity {
		t.Errorf("go relay claiming 1000: capacity %d, want %d", n.Capacity, tree.DefaultGoMaxCapacity)
	}
	if n, _ := nodeOf(s, "cap", brID); n.Capacity > tree.DefaultBrowserMaxCapacity {
		t.Errorf("browser claiming 1000: capacity %d, want ≤ %d", n.Capacity, tree.DefaultBrowserMaxCapacity)
	}
}

func TestHostileJoinFloodGets429(t *testing.T) {
	lightTest(t)
	_, url := startServerWith(t, Config{}) // default limits
	ok, limited := 0, 0
	start := time.Now()
	for i := range 1000 {
		conn, resp, err := websocket.DefaultDialer.Dial(wsURLOf(url), nil)
		switch {
		case err == nil:
			ok++
			conn.Close()
		case resp != nil && resp.StatusCode == http.StatusTooManyRequests:
			limited++
		default:
			t.Fatalf("join %d: %v", i, err)
		}
	}
	elapsed := time.Since(start)
	t.Logf("1000 joins in %v: %d admitted, %d got 429", elapsed.Round(time.Millisecond), ok, limited)
	if limited == 0 {
		t.Fatal("no join was refused with 429")
	}
	if want := DefaultJoinBurst + int(DefaultJoinRate*elapsed.Seconds()) + 5; ok > want {
		t.Errorf("%d joins admitted, the limit allows about %d", ok, want)
	}
	if ok < DefaultJoinBurst/2 {
		t.Errorf("only %d joins admitted; the burst is %d", ok, DefaultJoinBurst)
	}
}

func TestHostileConcurrentConnectionsPerIP(t *testing.T) {
	lightTest(t)
	_, url := startServerWith(t, Config{Limits: Limits{MaxConnsPerIP: 3}})
	for range 3 {
		dialLive(t, url, nil)
	}
	_, resp, err := websocket.DefaultDialer.Dial(wsURLOf(url), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("4th connection: %v, want 429", err)
	}
}

func TestHostileMessageFloodDisconnected(t *testing.T) {
	lightTest(t)
	_, url := startServerWith(t, Config{Limits: Limits{MessageRate: 1, MessageBurst: 5}})
	p, _ := join(t, url, protocol.RoleSource, protocol.KindGo, "flood", 1)
	for range 5 + maxBadMessages + 2 {
		if p.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"stats","stats":{}}`)) != nil {
			break // closed already
		}
	}
	p.waitClosed("message flood")
}

// A panic while handling one peer's message ends that peer only.
func TestHostilePanicEndsOnlyThatPeer(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{
		Policy: tree.Config{SourceCapacity: 1},
		onMessage: func(m *protocol.Message) {
			if m.Type == protocol.TypeStats && m.Stats.Children == 777 {
				panic("boom")
			}
		},
	})
	_, srcID := join(t, url, protocol.RoleSource, protocol.KindGo, "pan", 1)
	bad, badID := join(t, url, protocol.RoleRelay, protocol.KindGo, "pan", 2)
	bad.claimLive(s, "pan", badID)
	good, goodID := join(t, url, protocol.RoleViewer, protocol.KindGo, "pan", 0)
	waitFor(t, 10*time.Second, "viewer under the relay", func() bool { return parentOf(s, "pan", goodID) == badID })

	bad.send(`{"type":"stats","stats":{"children":777}}`)
	bad.waitClosed("panicking peer")
	waitFor(t, 10*time.Second, "viewer re-attached to the source", func() bool { return parentOf(s, "pan", goodID) == srcID })

	// The others are still served, and new peers can join.
	good.send(`{"type":"stats","stats":{"children":0}}`)
	good.send(`{"type":"teleport"}`)
	good.next(protocol.TypeError)
	join(t, url, protocol.RoleViewer, protocol.KindGo, "pan", 0)
	select {
	case <-good.done:
		t.Fatal("a well-behaved peer was disconnected")
	default:
	}
}
