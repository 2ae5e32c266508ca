package main

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// rawPeer is a hand-driven signaling connection for sending bad input.
type rawPeer struct {
	t    *testing.T
	conn *websocket.Conn
}

func dialRaw(t *testing.T, url string) *rawPeer {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(url, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawPeer{t: t, conn: conn}
}

func (p *rawPeer) sendText(s string) {
	p.t.Helper()
	if err := p.conn.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		p.t.Fatal(err)
	}
}

// next reads messages until one of type typ arrives.
func (p *rawPeer) next(typ protocol.Type) *protocol.Message {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, data, err := p.conn.ReadMessage()
		if err != nil {
			p.t.Fatalf("waiting for %s: %v", typ, err)
		}
		m, err := protocol.Decode(data)
		if err != nil {
			p.t.Fatalf("server sent an invalid message %q: %v", data, err)
		}
		if m.Type == typ {
			return m
		}
	}
}

// TestSignalingBadInput sends malformed, unknown, oversized and
// misaddressed messages and checks that each gets an error reply while the
// stream keeps playing for a well-behaved viewer.
func TestSignalingBadInput(t *testing.T) {
	lightTest(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 4})
	src := startSource(t, url, "bad", 4)
	good := startPeer(t, url, "bad", protocol.RoleViewer, 0, src)
	waitFor(t, 30*time.Second, "good viewer plays", func() bool { f, _, _ := good.counts(); return f >= 10 })

	p := dialRaw(t, url)
	cases := []struct {
		name, send, code string
	}{
		{"malformed JSON", `{"type": "hello", `, protocol.CodeBadMessage},
		{"unknown type", `{"type":"teleport"}`, protocol.CodeBadMessage},
		{"oversized", `{"type":"leave","reason":"` + strings.Repeat("x", protocol.MaxMessageSize) + `"}`, protocol.CodeTooLarge},
		{"signal before hello", `{"type":"signal","peer":"` + good.node.ID() + `","signal":{"kind":"offer","sdp":"v=0"}}`, protocol.CodeState},
		{"server-only type", `{"type":"attach","peer":"x"}`, protocol.CodeBadMessage},
	}
	for _, c := range cases {
		p.sendText(c.send)
		if m := p.next(protocol.TypeError); m.Code != c.code {
			t.Errorf("%s: error code %q (%s), want %q", c.name, m.Code, m.Reason, c.code)
		}
	}

	// Join, then signal a peer that is not a tree neighbour.
	p.sendText(`{"type":"hello","v":1,"role":"viewer","kind":"browser","stream":"bad"}`)
	if w := p.next(protocol.TypeWelcome); w.ID == "" {
		t.Fatal("no id in welcome")
	}
	p.sendText(`{"type":"signal","peer":"` + good.node.ID() + `","signal":{"kind":"offer","sdp":"v=0"}}`)
	if m := p.next(protocol.TypeError); m.Code != protocol.CodeNotNeighbour {
		t.Errorf("signal to a non-neighbour: code %q, want %q", m.Code, protocol.CodeNotNeighbour)
	}
	p.sendText(`{"type":"hello","v":1,"role":"viewer","kind":"browser","stream":"bad"}`)
	if m := p.next(protocol.TypeError); m.Code != protocol.CodeState {
		t.Errorf("second hello: code %q, want %q", m.Code, protocol.CodeState)
	}

	// A viewer of a stream that does not exist is told so.
	q := dialRaw(t, url)
	q.sendText(`{"type":"hello","v":1,"role":"viewer","kind":"go","stream":"nope"}`)
	if m := q.next(protocol.TypeError); m.Code != protocol.CodeNotFound {
		t.Errorf("unknown stream: code %q, want %q", m.Code, protocol.CodeNotFound)
	}

	// The stream kept playing for everyone else.
	before, _, _ := good.counts()
	waitFor(t, 20*time.Second, "good viewer keeps playing", func() bool { f, _, _ := good.counts(); return f >= before+30 })
	if _, mismatch, _ := good.counts(); mismatch != 0 {
		t.Errorf("good viewer: %d corrupted frames", mismatch)
	}
}
