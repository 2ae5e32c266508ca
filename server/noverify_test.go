package main

import (
	"testing"
	"time"

	"canopy/mesh/framesig"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// helloMsg encodes m for a raw peer.
func helloMsg(t *testing.T, m *protocol.Message) string {
	t.Helper()
	m.Type, m.Version = protocol.TypeHello, protocol.Version
	data, err := protocol.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// stripperOf returns the node of stream's tree that strips (the server's
// relay), if any.
func stripperOf(s *Server, stream string) (tree.NodeInfo, bool) {
	co := s.hub.get(stream)
	if co == nil {
		return tree.NodeInfo{}, false
	}
	for _, n := range co.snapshot() {
		if n.Strips {
			return n, true
		}
	}
	return tree.NodeInfo{}, false
}

// TestNoVerifyPeerMovesWhenStreamBecomesSigned: a browser that says
// noVerify is placed as any other on an unsigned stream (below a Go relay;
// the server holds no relay of its own for it). A source that signs takes
// over the stream: the server holds its relay node, which joins, is
// trusted at once, strips, and the peer moves below it make before break
// (its old parent keeps feeding it until it plays), told strip in the
// attach. The tree API marks it unverified throughout.
func TestNoVerifyPeerMovesWhenStreamBecomesSigned(t *testing.T) {
	lightTest(t)
	const stream = "nvsigned"
	s, url := startServer(t, tree.Config{SourceCapacity: 1})
	src1, _ := join(t, url, protocol.RoleSource, protocol.KindGo, stream, 1)
	r, rid := join(t, url, protocol.RoleRelay, protocol.KindGo, stream, 4)
	r.claimLive(s, stream, rid)

	nv := dialLive(t, url, nil)
	nv.send(helloMsg(t, &protocol.Message{Role: protocol.RoleViewer, Kind: protocol.KindBrowser, Stream: stream, NoVerify: true}))
	nid := nv.next(protocol.TypeWelcome).ID
	if p := nv.next(protocol.TypeParent); p.Peer != rid {
		t.Fatalf("unsigned: nv's parent %q, want the Go relay %s", p.Peer, rid)
	}
	nv.send(liveMsg(rid))
	if n, _ := nodeOf(s, stream, nid); !n.NoVerify || !n.Unverified {
		t.Errorf("tree API: %+v, want noVerify and unverified", n)
	}
	if _, ok := stripperOf(s, stream); ok {
		t.Error("the server holds a relay for an unsigned stream")
	}

	src1.send(`{"type":"leave"}`)
	waitFor(t, 10*time.Second, "the source gone", func() bool { co := s.hub.get(stream); return co != nil && !co.info().Live })
	pub, _, err := framesig.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	src2 := dialLive(t, url, nil)
	src2.send(helloMsg(t, &protocol.Message{Role: protocol.RoleSource, Kind: protocol.KindGo, Stream: stream, Capacity: 1,
		SignKey: framesig.EncodeKey(pub), Tracks: []protocol.Track{{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}}}))
	src2.next(protocol.TypeWelcome)

	var h tree.NodeInfo
	waitFor(t, 20*time.Second, "the server's relay in the tree", func() bool {
		var ok bool
		h, ok = stripperOf(s, stream)
		return ok && h.Parent != ""
	})
	p := nv.next(protocol.TypeParent)
	if p.Peer != h.ID {
		t.Fatalf("signed: nv's parent %q, want the server's relay %s", p.Peer, h.ID)
	}
	if p.Verify == nil || *p.Verify {
		t.Errorf("parent message verify %v, want false (it cannot verify)", p.Verify)
	}
	co := s.hub.get(stream)
	co.mu.Lock()
	leaving, trust := co.moving[nid], h.Trust
	co.mu.Unlock()
	if leaving != rid {
		t.Errorf("nv's old edge: %q, want the Go relay %s kept until nv plays (make before break)", leaving, rid)
	}
	if trust != tree.TrustProven {
		t.Errorf("the server's relay has trust %s, want proven at once", trust)
	}
	if n, _ := nodeOf(s, stream, nid); n.Parent != h.ID || !n.Unverified {
		t.Errorf("tree API after the move: %+v", n)
	}
	// The relay offers to nv, told to strip for it.
	if m := nv.next(protocol.TypeSignal); m.Peer != h.ID || m.Sig.Kind != protocol.SignalOffer {
		t.Errorf("nv got %+v, want the server relay's offer", m)
	}
	co.mu.Lock()
	strip := co.stripFor(h.ID, nid)
	co.mu.Unlock()
	if !strip {
		t.Error("the coordinator would not tell the relay to strip for nv")
	}
}
