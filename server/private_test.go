package main

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// The server's side of private mode, with raw WebSocket peers: what it
// forwards, whom it places under whom, and what it refuses. The media
// plane (pion and Chromium through the embedded TURN) is private_media_test.go.

// someTURN hands out credentials for a TURN server; these tests need no
// relay to run, only the server to believe it has one.
var someTURN = &TURNCredentials{Port: 3478, Secret: turnSecret, TTL: time.Hour}

func privateHello(stream string, capacity int) string {
	data, err := protocol.Encode(&protocol.Message{Type: protocol.TypeHello, Version: protocol.Version,
		Role: protocol.RoleViewer, Kind: protocol.KindBrowser, Stream: stream, Capacity: capacity, Private: true})
	if err != nil {
		panic(err)
	}
	return string(data)
}

func signalJSON(t *testing.T, peer string, sig protocol.Signal) string {
	t.Helper()
	data, err := protocol.Encode(&protocol.Message{Type: protocol.TypeSignal, Peer: peer, Sig: &sig})
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func candidateSignal(line string) protocol.Signal {
	raw, _ := json.Marshal(map[string]any{"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0})
	return protocol.Signal{Kind: protocol.SignalCandidate, Candidate: raw}
}

// forwardLog records what the server forwards (Config.onForward).
type forwardLog struct {
	mu   sync.Mutex
	sigs []forwarded
}

type forwarded struct {
	from, to string
	sig      protocol.Signal
}

func (l *forwardLog) record(from, to string, sig *protocol.Signal) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sigs = append(l.sigs, forwarded{from, to, *sig})
}

// from is every signal forwarded from peer id.
func (l *forwardLog) from(id string) []forwarded {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []forwarded
	for _, f := range l.sigs {
		if f.from == id {
			out = append(out, f)
		}
	}
	return out
}

// A private viewer's answer and trickled candidates reach its parent with
// relay candidates only and none of its addresses; a plain viewer's, sent
// the same way, arrive untouched (so the check could fail).
func TestPrivateViewerSignalsCarryOnlyRelayCandidates(t *testing.T) {
	lightTest(t)
	var log forwardLog
	_, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 4}, TURN: someTURN, onForward: log.record})
	src, srcID := join(t, url, protocol.RoleSource, protocol.KindGo, "priv", 4)

	for _, private := range []bool{true, false} {
		v := dialLive(t, url, nil)
		if private {
			v.send(privateHello("priv", 2))
		} else {
			v.send(hello(protocol.RoleViewer, protocol.KindBrowser, "priv", 0, ""))
		}
		w := v.next(protocol.TypeWelcome)
		if w.Private != private {
			t.Fatalf("welcome private = %v, want %v", w.Private, private)
		}
		if p := v.next(protocol.TypeParent); p.Peer != srcID {
			t.Fatalf("parent %s, want the source", p.Peer)
		}
		if a := src.next(protocol.TypeAttach); a.Peer != w.ID {
			t.Fatalf("attach %s, want %s", a.Peer, w.ID)
		}
		v.send(signalJSON(t, srcID, protocol.Signal{Kind: protocol.SignalAnswer, SDP: gatheredAnswer}))
		lines := []string{
			"candidate:1 1 udp 2122260223 192.168.1.20 50000 typ host generation 0",
			"candidate:4 1 udp 1686052607 203.0.113.7 61000 typ srflx raddr 192.168.1.20 rport 50000",
			"candidate:6 1 udp 41885439 198.51.100.200 3478 typ relay raddr 203.0.113.7 rport 61000 generation 0",
			"",
		}
		for _, l := range lines {
			v.send(signalJSON(t, srcID, candidateSignal(l)))
		}
		// What the parent receives: the answer, then the candidates left.
		got := []*protocol.Message{src.next(protocol.TypeSignal)}
		want := len(lines)
		if private {
			want = 2 // the relay candidate and the end of candidates
		}
		for range want {
			got = append(got, src.next(protocol.TypeSignal))
		}
		var all strings.Builder
		for _, m := range got {
			if m.Peer != w.ID {
				t.Fatalf("signal from %s, want %s", m.Peer, w.ID)
			}
			all.WriteString(m.Sig.SDP)
			all.Write(m.Sig.Candidate)
			all.WriteString("\n")
		}
		leaked := 0
		for _, a := range viewerAddrs {
			if strings.Contains(all.String(), a) {
				leaked++
			}
		}
		switch {
		case private && leaked > 0:
			t.Errorf("a private viewer's addresses reached its parent:\n%s", all.String())
		case !private && leaked != len(viewerAddrs):
			t.Errorf("a plain viewer's signals were changed (%d of %d addresses arrived):\n%s", leaked, len(viewerAddrs), all.String())
		}
		if private && !strings.Contains(all.String(), "198.51.100.200 3478 typ relay raddr 0.0.0.0 rport 0") {
			t.Errorf("the relay candidate did not arrive, related address blanked:\n%s", all.String())
		}
		// The log shows the same: every candidate from the private viewer is a relay one.
		for _, f := range log.from(w.ID) {
			if private && f.sig.Kind == protocol.SignalCandidate && !strings.Contains(string(f.sig.Candidate), "typ relay") &&
				!strings.Contains(string(f.sig.Candidate), `"candidate":""`) {
				t.Errorf("forwarded from the private viewer: %s", f.sig.Candidate)
			}
		}
		v.send(`{"type":"leave"}`)
		v.conn.Close()
		src.next(protocol.TypeDetach)
	}
}

// A private viewer never gets children: its claimed capacity and any later
// capacity message are clamped to 0, so a viewer that finds no other slot
// waits in the queue rather than under it.
func TestPrivateViewerIsNeverGivenChildren(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 1}, TURN: someTURN})
	_, srcID := join(t, url, protocol.RoleSource, protocol.KindGo, "priv", 1)
	pv := dialLive(t, url, nil)
	pv.send(privateHello("priv", 5))
	pid := pv.next(protocol.TypeWelcome).ID
	if p := pv.next(protocol.TypeParent); p.Peer != srcID {
		t.Fatalf("private viewer's parent %s, want the source", p.Peer)
	}
	// A session handles its messages in order: the reply to a signal to
	// nobody proves the capacity message before it has been handled.
	handled := func() {
		t.Helper()
		pv.send(`{"type":"signal","peer":"pnobody","signal":{"kind":"candidate","candidate":{"candidate":""}}}`)
		if e := pv.next(protocol.TypeError); e.Code != protocol.CodeNotNeighbour {
			t.Fatalf("reply %+v, want not_neighbour", e)
		}
	}
	pv.send(`{"type":"capacity","capacity":3}`)
	handled()
	other, otherID := join(t, url, protocol.RoleViewer, protocol.KindBrowser, "priv", 0)
	if e := other.next(protocol.TypeError); e.Code != protocol.CodeFull {
		t.Fatalf("second viewer: %+v, want queued (full)", e)
	}
	pv.send(`{"type":"capacity","capacity":2}`)
	handled()
	third, thirdID := join(t, url, protocol.RoleViewer, protocol.KindBrowser, "priv", 0)
	third.next(protocol.TypeError)
	n, ok := nodeOf(s, "priv", pid)
	if !ok || n.Capacity != 0 || len(n.Children) != 0 {
		t.Fatalf("private viewer in the tree: %+v", n)
	}
	for _, id := range []string{otherID, thirdID} {
		if q, _ := nodeOf(s, "priv", id); !q.Queued || q.Parent == pid {
			t.Errorf("viewer %s: %+v, want queued", id, q)
		}
	}
	select {
	case m := <-pv.in:
		if m.Type == protocol.TypeAttach {
			t.Fatalf("the private viewer was asked to feed %s", m.Peer)
		}
	default:
	}
}

// Without TURN, a private hello is refused with the reason; a plain one
// on the same server is welcome.
func TestPrivateHelloNeedsTURN(t *testing.T) {
	lightTest(t)
	_, url := startServerWith(t, Config{})
	join(t, url, protocol.RoleSource, protocol.KindGo, "priv", 4)
	pv := dialLive(t, url, nil)
	pv.send(privateHello("priv", 0))
	e := pv.next(protocol.TypeError)
	if e.Code != protocol.CodeUnavailable || e.Reason != "private mode needs TURN on this server" {
		t.Fatalf("private hello without TURN: %+v", e)
	}
	pv.waitClosed("refused private hello")
	join(t, url, protocol.RoleViewer, protocol.KindBrowser, "priv", 0)
}

// -privacy relay makes every viewer private (told in its welcome, and
// clamped), -privacy relay:a only a's; relays and sources stay as they are.
func TestPrivacyDefault(t *testing.T) {
	lightTest(t)
	for _, c := range []struct {
		name    string
		cfg     PrivacyConfig
		private map[string]bool // stream → its viewers are private
	}{
		{"relay", PrivacyConfig{All: true}, map[string]bool{"a": true, "b": true}},
		{"relay:a", PrivacyConfig{Streams: []string{"a"}}, map[string]bool{"a": true, "b": false}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 4}, TURN: someTURN, Privacy: c.cfg})
			for _, stream := range []string{"a", "b"} {
				join(t, url, protocol.RoleSource, protocol.KindGo, stream, 4)
				v := dialLive(t, url, nil)
				v.send(hello(protocol.RoleViewer, protocol.KindBrowser, stream, 2, ""))
				w := v.next(protocol.TypeWelcome)
				if w.Private != c.private[stream] {
					t.Errorf("%s viewer: welcome private %v, want %v", stream, w.Private, c.private[stream])
				}
				if n, _ := nodeOf(s, stream, w.ID); (n.Capacity == 0) != c.private[stream] {
					t.Errorf("%s viewer: capacity %d (private %v)", stream, n.Capacity, c.private[stream])
				}
				r := dialLive(t, url, nil)
				r.send(hello(protocol.RoleRelay, protocol.KindGo, stream, 4, ""))
				if w := r.next(protocol.TypeWelcome); w.Private {
					t.Errorf("%s relay told it is private", stream)
				}
			}
		})
	}
}
