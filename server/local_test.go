package main

import (
	"strings"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// localHello says hello over an in-process connection and reads what the
// server sends back.
func localHello(t *testing.T, s *Server, stream string, role protocol.Role) (nodeEnd, chan *protocol.Message) {
	t.Helper()
	tr := s.LocalTransport(nil).(nodeEnd)
	hello := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role, Kind: protocol.KindGo, Stream: stream}
	if role == protocol.RoleSource {
		hello.Tracks = sigTracks
	}
	data, err := protocol.Encode(hello)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Send(data); err != nil {
		t.Fatal(err)
	}
	in := make(chan *protocol.Message, 64)
	go func() {
		defer close(in)
		for {
			b, err := tr.Receive()
			if err != nil {
				return
			}
			if m, err := protocol.Decode(b); err == nil {
				in <- m
			}
		}
	}()
	return tr, in
}

// TestLocalTransportBehavesAsAWebSocket: the in-process connection keeps
// the session's rules: a silent node stays (its pings are answered while
// its end is open), one that never says hello is dropped after the hello
// timeout, one that sends a frame over the limit is cut off, and closing
// the node's end ends its session (the stream goes offline for viewers).
func TestLocalTransportBehavesAsAWebSocket(t *testing.T) {
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2},
		Limits: Limits{PingInterval: 20 * time.Millisecond, PongTimeout: 100 * time.Millisecond, HelloTimeout: 200 * time.Millisecond}})

	src, in := localHello(t, s, "local", protocol.RoleSource)
	if m := <-in; m == nil || m.Type != protocol.TypeWelcome {
		t.Fatalf("first message %+v, want welcome", m)
	}
	// Ten pong timeouts of silence: the pings are answered in-process.
	quiet := time.After(time.Second)
wait:
	for {
		select {
		case m, ok := <-in:
			if !ok {
				t.Fatal("a silent hosted source was dropped; its pings should be answered")
			}
			_ = m
		case <-quiet:
			break wait
		}
	}
	viewer := dialSig(t, url, "local", protocol.RoleViewer, protocol.KindGo, 0)

	// Never a hello: dropped after the hello timeout.
	mute := s.LocalTransport(nil)
	done := make(chan error, 1)
	go func() { _, err := mute.Receive(); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a hosted node without hello got a message")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a hosted node without hello was never dropped")
	}

	// A frame over the limit ends the session.
	big, bigIn := localHello(t, s, "local", protocol.RoleViewer)
	<-bigIn // welcome
	_ = big.Send([]byte(`{"type":"stats","pad":"` + strings.Repeat("x", maxFrameSize) + `"}`))
	for range bigIn {
	}

	// Closing the source's end: viewers see the stream offline.
	_ = src.Close()
	viewer.waitFor(10*time.Second, "offline", func(m *protocol.Message) bool { return m.Type == protocol.TypeOffline })
	if n := openConns(s, "127.0.0.1:1"); n != 1 {
		t.Errorf("127.0.0.1 holds %d connections; want only the WebSocket viewer's", n)
	}
}
