package main

import (
	"testing"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestCrashKeepsStaleStandbys: a browser relay x feeds a and b; their
// standbys were planned when a was x's heir (the source for a, a for b).
// Since then b proved itself and a's measured uplink dropped, so a plan
// made now would swap them, and neither standby parent would have a slot
// for its orphan: both would stall for new connections (~2.4 s with
// Chromium). When x crashes, each orphan goes over the link it holds
// (`promote` to its standby parent, no `attach`), and is given a new
// standby afterwards.
func TestCrashKeepsStaleStandbys(t *testing.T) {
	lightTest(t)
	c := newCoordinator("stale", tree.Config{SourceCapacity: 1}, testLogger(), nil)
	mk := func(role protocol.Role, kind protocol.Kind, capacity int) *peerConn {
		hello := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role, Kind: kind, Stream: "stale", Capacity: capacity, Passthrough: kind == protocol.KindBrowser}
		if role == protocol.RoleSource {
			hello.Tracks = []protocol.Track{{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}}
		}
		p := newTestPeer(hello)
		if err := c.join(p, hello); err != nil {
			t.Fatal(err)
		}
		return p
	}
	src := mk(protocol.RoleSource, protocol.KindGo, 1)
	x := mk(protocol.RoleViewer, protocol.KindBrowser, 2)
	live := func(child, parent *peerConn) {
		c.mu.Lock()
		c.onLive(child.id, parent.id)
		c.mu.Unlock()
	}
	live(x, src)
	a := mk(protocol.RoleViewer, protocol.KindBrowser, 2)
	live(a, x)
	b := mk(protocol.RoleViewer, protocol.KindBrowser, 2)
	live(b, x)
	c.mu.Lock()
	c.flushStandbys() // the joins' and live reports' batch, without its 25 ms
	if pa, _ := c.tree.Parent(a.id); pa != x.id {
		t.Fatalf("a under %s, want x", pa)
	}
	if pb, _ := c.tree.Parent(b.id); pb != x.id {
		t.Fatalf("b under %s, want x", pb)
	}
	sa, sb := c.standby.of[a.id], c.standby.of[b.id]
	c.mu.Unlock()
	if sa != src.id || sb != a.id {
		t.Fatalf("standbys: a → %q, b → %q; want the source and a", sa, sb)
	}
	// b proves itself (a child of its own would; the coordinator is told
	// so), and a's measured uplink carries one child only.
	c.mu.Lock()
	if _, err := c.tree.SetTrust(b.id, tree.TrustProven); err != nil {
		t.Fatal(err)
	}
	if _, err := c.tree.SetSustain(a.id, 1); err != nil {
		t.Fatal(err)
	}
	now := c.tree.StandbysOf(x.id)
	c.mu.Unlock()
	if now[b.id] != src.id {
		t.Fatalf("the plan of now does not swap the heirs (%v): the test tests nothing", now)
	}
	for _, p := range []*peerConn{src, x, a, b} {
		p.conn.(*recordConn).take(p)
	}

	c.gone(x, "connection closed")

	sent := func(p *peerConn) []*protocol.Message {
		var out []*protocol.Message
		for _, data := range p.conn.(*recordConn).take(p) {
			m, err := protocol.Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
		return out
	}
	for _, w := range []struct{ parent, child *peerConn }{{src, a}, {a, b}} {
		promoted := false
		for _, m := range sent(w.parent) {
			switch {
			case m.Type == protocol.TypePromote && m.Peer == w.child.id:
				promoted = true
			case m.Type == protocol.TypeAttach:
				t.Errorf("%s was told to attach %s: a new connection", w.parent.id, m.Peer)
			}
		}
		if !promoted {
			t.Errorf("%s was not told to promote %s's standby link", w.parent.id, w.child.id)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if pa, _ := c.tree.Parent(a.id); pa != src.id {
		t.Errorf("a under %s, want the source", pa)
	}
	if pb, _ := c.tree.Parent(b.id); pb != a.id {
		t.Errorf("b under %s, want a", pb)
	}
	if s := c.standby.of[b.id]; s != src.id {
		t.Errorf("b's new standby is %q, want the source (a's heir's place)", s)
	}
	if err := c.tree.Check(); err != nil {
		t.Fatal(err)
	}
}
