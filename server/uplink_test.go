package main

import (
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestUplinkLimited: only loss and queueing on most links at once mean a
// full upload; random loss on one path, a long steady path, or a
// browser's estimate alone do not.
func TestUplinkLimited(t *testing.T) {
	for _, tc := range []struct {
		name     string
		u        *protocol.Uplink
		children int
		want     bool
		sustain  int
	}{
		{"none", nil, 3, false, 0},
		{"clean", &protocol.Uplink{Links: 3, RTTMs: 20, SentKbps: 1500}, 3, false, 0},
		{"one lossy path", &protocol.Uplink{Links: 3, Lossy: 1, Loss: 0.02}, 3, false, 0},
		{"loss without a queue (netem)", &protocol.Uplink{Links: 2, Lossy: 2, Loss: 0.05}, 2, false, 0},
		{"a queue without loss", &protocol.Uplink{Links: 2, Queued: 2}, 2, false, 0},
		{"full upload", &protocol.Uplink{Links: 4, Lossy: 4, Queued: 3, Loss: 0.45}, 4, true, 2},
		{"mild but on every link", &protocol.Uplink{Links: 3, Lossy: 2, Queued: 2, Loss: 0.04}, 3, true, 2},
		{"one child too many", &protocol.Uplink{Links: 1, Lossy: 1, Queued: 1, Loss: 0.6}, 1, true, 0},
		{"a new link's low estimate alone", &protocol.Uplink{Links: 2, SentKbps: 1000, EstimateKbps: 300}, 2, false, 0},
	} {
		if got := uplinkLimited(tc.u, tc.children); got != tc.want {
			t.Errorf("%s: limited %v, want %v", tc.name, got, tc.want)
		}
		if tc.want {
			if got := uplinkSustain(tc.u, tc.children); got != tc.sustain {
				t.Errorf("%s: sustain %d, want %d", tc.name, got, tc.sustain)
			}
		}
	}
}

// uplinkRig is a coordinator with a source (capacity 1), relay r (declared
// 4) below it, relay q below r, and three Go viewers below r; r and q are
// proven, so only their measured upload bounds them.
type uplinkRig struct {
	c            *coordinator
	src, r, q    *peerConn
	viewers      []*peerConn
	declaredR    int
	statsOf      func(p *peerConn, children int, u *protocol.Uplink)
	childrenOfR  func() []string
	setChangedAt func(id string, at time.Time)
}

func newUplinkRig(t *testing.T) *uplinkRig {
	t.Helper()
	c := newCoordinator("up", tree.Config{SourceCapacity: 1}, testLogger(), nil)
	mk := func(role protocol.Role, capacity int) *peerConn {
		h := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role, Kind: protocol.KindGo, Stream: "up", Capacity: capacity}
		if role == protocol.RoleSource {
			h.Tracks = []protocol.Track{{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}}
		}
		p := newTestPeer(h)
		if err := c.join(p, h); err != nil {
			t.Fatal(err)
		}
		if role == protocol.RoleRelay {
			c.mu.Lock()
			c.setTrust(p.id, tree.TrustProven, "test")
			c.mu.Unlock()
		}
		return p
	}
	g := &uplinkRig{c: c, declaredR: 4}
	g.src = mk(protocol.RoleSource, 1)
	g.r = mk(protocol.RoleRelay, g.declaredR)
	g.q = mk(protocol.RoleRelay, 4)
	for range 3 {
		g.viewers = append(g.viewers, mk(protocol.RoleViewer, 0))
	}
	g.statsOf = func(p *peerConn, children int, u *protocol.Uplink) {
		c.report(p, &protocol.Message{Type: protocol.TypeStats, Stats: &protocol.Stats{Children: children, Uplink: u}})
	}
	g.childrenOfR = func() []string {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.tree.Children(g.r.id)
	}
	g.setChangedAt = func(id string, at time.Time) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.uplinks[id].changed = at
	}
	if kids := g.childrenOfR(); len(kids) != 4 {
		t.Fatalf("setup: r feeds %v, want q and three viewers", kids)
	}
	return g
}

// TestUplinkShedsAndProbesBack: a relay whose children all lose packets
// and queue sheds the viewers its upload did not carry, each keeping its
// old feed until it plays from its new parent (make before break); clean
// reports raise it one child at a time, only after uplinkRaiseAfter and
// only while it feeds what it may, until the bound is gone (its
// declaration again). Reports from the source change nothing.
func TestUplinkShedsAndProbesBack(t *testing.T) {
	g := newUplinkRig(t)
	c := g.c
	full := &protocol.Uplink{Links: 4, Lossy: 4, Queued: 4, Loss: 0.45, RTTMs: 180, SentKbps: 2100}
	g.statsOf(g.src, 1, full)
	if n := len(g.childrenOfR()); n != 4 {
		t.Fatalf("a source's report moved r's children: %d", n)
	}
	g.statsOf(g.r, 4, full)
	kids := g.childrenOfR()
	c.mu.Lock()
	usable, sustain, moving := c.tree.Usable(g.r.id), c.tree.Sustain(g.r.id), 0
	for _, from := range c.moving {
		if from == g.r.id {
			moving++
		}
	}
	c.mu.Unlock()
	if len(kids) != 2 || usable != 2 || sustain != 2 {
		t.Fatalf("after a full report: r feeds %v, usable %d, sustain %d; want 2, 2, 2", kids, usable, sustain)
	}
	if moving != 2 {
		t.Fatalf("%d shed children keep their old feed from r, want 2 (make before break)", moving)
	}
	// Another full report at once: settling, nothing more moves.
	g.statsOf(g.r, 4, full)
	if n := len(g.childrenOfR()); n != 2 {
		t.Fatalf("shed again while settling: %d children", n)
	}
	// Clean reports: no raise before uplinkRaiseAfter.
	clean := &protocol.Uplink{Links: 2, RTTMs: 20, SentKbps: 1000}
	g.statsOf(g.r, 2, clean)
	if u := g.c.tree.Usable(g.r.id); u != 2 {
		t.Fatalf("raised at once: usable %d", u)
	}
	// Past the wait: one more child's worth, then again, then no bound.
	for want := 3; want <= g.declaredR; want++ {
		g.setChangedAt(g.r.id, time.Now().Add(-uplinkRaiseAfter-time.Second))
		g.statsOf(g.r, want-1, clean)
		c.mu.Lock()
		u, s := c.tree.Usable(g.r.id), c.tree.Sustain(g.r.id)
		c.mu.Unlock()
		wantSustain := want
		if want == g.declaredR {
			wantSustain = -1
		}
		if u != want || s != wantSustain {
			t.Fatalf("raise to %d: usable %d sustain %d", want, u, s)
		}
	}
	if err := c.checkStandbys(); err != nil {
		t.Fatal(err)
	}
}

// TestUplinkMildLossTakesTwoReports: loss over the threshold on most links
// but under uplinkShedLoss sheds only when a second report in a row says
// so; a raise that ends limited doubles the wait before the next.
func TestUplinkMildLossTakesTwoReports(t *testing.T) {
	g := newUplinkRig(t)
	mild := &protocol.Uplink{Links: 4, Lossy: 3, Queued: 3, Loss: 0.06, RTTMs: 120}
	g.statsOf(g.r, 4, mild)
	if n := len(g.childrenOfR()); n != 4 {
		t.Fatalf("one mild report shed: %d children", n)
	}
	g.statsOf(g.r, 4, mild)
	if n := len(g.childrenOfR()); n != 3 {
		t.Fatalf("two mild reports: %d children, want 3", n)
	}
	// Probe up, then fail: the wait doubles.
	g.setChangedAt(g.r.id, time.Now().Add(-uplinkRaiseAfter-time.Second))
	g.statsOf(g.r, 3, &protocol.Uplink{Links: 3})
	g.setChangedAt(g.r.id, time.Now().Add(-uplinkSettle-time.Second))
	g.statsOf(g.r, 4, &protocol.Uplink{Links: 4, Lossy: 4, Queued: 4, Loss: 0.2})
	g.c.mu.Lock()
	st := *g.c.uplinks[g.r.id]
	g.c.mu.Unlock()
	if st.bound != 3 || st.wait != 2*uplinkRaiseAfter {
		t.Fatalf("after a failed raise: bound %d wait %v; want 3, %v", st.bound, st.wait, 2*uplinkRaiseAfter)
	}
}

// TestUplinkNoChildSinks: a relay that cannot carry even one child moves
// down the tree: its relay child takes its place below the source.
func TestUplinkNoChildSinks(t *testing.T) {
	g := newUplinkRig(t)
	g.statsOf(g.r, 4, &protocol.Uplink{Links: 4, Lossy: 4, Queued: 4, Loss: 0.9})
	g.c.mu.Lock()
	defer g.c.mu.Unlock()
	if p, _ := g.c.tree.Parent(g.q.id); p != g.src.id {
		t.Fatalf("q is below %q, want the source", p)
	}
	if kids := g.c.tree.Children(g.r.id); len(kids) != 0 || g.c.tree.Depth(g.r.id) < 2 {
		t.Fatalf("r feeds %v at depth %d", kids, g.c.tree.Depth(g.r.id))
	}
	if err := g.c.tree.Check(); err != nil {
		t.Fatal(err)
	}
}
