package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"canopy/mesh/peer"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// -p2p-min-viewers without media: the flag, and the gate's decisions with
// raw WebSocket peers (the media tests are p2pmin_test.go).

func TestParseP2PMin(t *testing.T) {
	lightTest(t)
	for _, c := range []struct {
		in   string
		want P2PMinConfig
		err  bool
	}{
		{"", P2PMinConfig{}, false},
		{"0", P2PMinConfig{}, false},
		{"3", P2PMinConfig{Viewers: 3}, false},
		{" 5:a, b ", P2PMinConfig{Viewers: 5, Streams: []string{"a", "b"}}, false},
		{"64", P2PMinConfig{Viewers: 64}, false},
		{"65", P2PMinConfig{}, true},
		{"-1", P2PMinConfig{}, true},
		{"three", P2PMinConfig{}, true},
		{"3:", P2PMinConfig{}, true},
		{"3:bad name", P2PMinConfig{}, true},
	} {
		got, err := parseP2PMin(c.in)
		if (err != nil) != c.err || got.Viewers != c.want.Viewers || strings.Join(got.Streams, ",") != strings.Join(c.want.Streams, ",") {
			t.Errorf("parseP2PMin(%q) = %+v, %v; want %+v (error %v)", c.in, got, err, c.want, c.err)
		}
	}
	if err := run([]string{"-addr", "127.0.0.1:0", "-demo=false", "-p2p-min-viewers", "many"}); err == nil ||
		!strings.Contains(err.Error(), "-p2p-min-viewers: want N") {
		t.Fatalf("run with a bad -p2p-min-viewers: %v", err)
	}
	pc := P2PMinConfig{Viewers: 3, Streams: []string{"a"}}
	if !pc.covers("a") || pc.covers("b") || !(P2PMinConfig{Viewers: 1}).covers("b") || (P2PMinConfig{}).covers("a") {
		t.Error("covers")
	}
	for n, want := range map[int]int{1: 0, 2: 1, 3: 2, 4: 3, 5: 3, 8: 6, 10: 7, 64: 48} {
		if got := closeAt(n); got != want {
			t.Errorf("closeAt(%d) = %d, want %d", n, got, want)
		}
	}
}

// The capacities the gate gives, with raw peers (no media, so quick): with
// the tree off the source feeds one peer, viewers none whatever they
// claim, later claims included, and a Go relay keeps its capacity; with
// the tree on everybody has what they claimed, their latest claim, and
// the server's relay offers the tree nothing.
func TestP2PMinCapacities(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 4}, Hosted: peer.Config{LoopbackOnly: true},
		P2PMin: P2PMinConfig{Viewers: 2}})
	const stream = "gatecaps"
	_, srcID := join(t, url, protocol.RoleSource, protocol.KindGo, stream, 4)
	var relay string
	waitFor(t, 20*time.Second, "the server's relay under the source", func() bool {
		_, relay = gateOf(s, stream)
		return relay != "" && parentOf(s, stream, relay) == srcID
	})
	capOf := func(id string) int { n, _ := nodeOf(s, stream, id); return n.Capacity }
	// handled proves that what p sent before has been handled: a session
	// handles its messages in order.
	handled := func(p *livePeer) {
		t.Helper()
		p.send(`{"type":"signal","peer":"pnobody","signal":{"kind":"candidate","candidate":{"candidate":""}}}`)
		if e := p.next(protocol.TypeError); e.Code != protocol.CodeNotNeighbour {
			t.Fatalf("reply %+v, want not_neighbour", e)
		}
	}
	if c := capOf(srcID); c != 1 {
		t.Errorf("source capacity %d with the tree off, want 1", c)
	}
	if c := capOf(relay); c != 2 {
		t.Errorf("server relay capacity %d with the tree off, want N = 2", c)
	}
	a, aID := join(t, url, protocol.RoleViewer, protocol.KindBrowser, stream, 2)
	a.send(`{"type":"capacity","capacity":1}`)
	handled(a)
	if n, _ := nodeOf(s, stream, aID); n.Capacity != 0 || n.Parent != relay {
		t.Errorf("viewer with the tree off: %+v, want capacity 0 under %s", n, relay)
	}
	_, rID := join(t, url, protocol.RoleRelay, protocol.KindGo, stream, 8)
	_, bID := join(t, url, protocol.RoleViewer, protocol.KindGo, stream, 3)
	if c := capOf(rID); c != 8 {
		t.Errorf("Go relay capacity %d with the tree off, want its 8", c)
	}
	if c := capOf(bID); c != 0 {
		t.Errorf("second viewer capacity %d with the tree off", c)
	}
	if open, _ := gateOf(s, stream); open {
		t.Fatal("the tree is on with two viewers")
	}
	_, cID := join(t, url, protocol.RoleViewer, protocol.KindBrowser, stream, 2)
	if open, _ := gateOf(s, stream); !open {
		t.Fatal("the tree is off with three viewers, N = 2")
	}
	for id, want := range map[string]int{srcID: 4, aID: 1, bID: 3, cID: 2, rID: 8} {
		if c := capOf(id); c != want {
			t.Errorf("%s: capacity %d with the tree on, want %d", id, c, want)
		}
	}
	// These raw viewers never play, so they may feed nobody yet: whoever
	// found no other place stays with the relay, which keeps room for
	// exactly those; nobody is cut off and queued.
	rn, _ := nodeOf(s, stream, relay)
	if rn.Capacity != len(rn.Children) {
		t.Errorf("server relay with the tree on: %+v, want room for the children it kept only", rn)
	}
	for _, id := range []string{aID, bID, cID, rID} {
		if n, _ := nodeOf(s, stream, id); n.Queued || n.Parent == "" {
			t.Errorf("%s with the tree on: %+v, want placed", id, n)
		}
	}
	a.send(`{"type":"capacity","capacity":2}`)
	handled(a)
	if c := capOf(aID); c != 2 {
		t.Errorf("viewer's capacity %d after claiming 2 with the tree on", c)
	}
	// The stats API says so.
	var last p2pView
	waitFor(t, 10*time.Second, "the stats API to show the tree on", func() bool {
		resp, err := http.Get(url + "/api/streams/" + stream + "/stats")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var r struct {
			P2P *p2pView `json:"p2p"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || r.P2P == nil {
			return false
		}
		last = *r.P2P
		return last.Tree == "on"
	})
	if want := (p2pView{Tree: "on", Threshold: 2, CloseAt: 1, Viewers: 3, Relay: relay, Switches: 1, Kept: rn.Capacity}); last != want {
		t.Errorf("stats API: %+v, want %+v", last, want)
	}
}

// A relay that returned while the tree was on may sit below a viewer (the
// tree placed it as a leaf, wherever a slot was): once the audience has
// fallen and the tree turns off, the relay is directly under the source
// (here compaction pulls it up as soon as the leaving viewers free a
// source slot; with the source still full, closeGate moves it) and the
// audience is gathered below it. Raw peers, so no media and quick.
func TestP2PMinCloseWithRelayBelowAViewer(t *testing.T) {
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 4}, Hosted: peer.Config{LoopbackOnly: true},
		P2PMin: P2PMinConfig{Viewers: 2}})
	const stream = "gateclose"
	_, srcID := join(t, url, protocol.RoleSource, protocol.KindGo, stream, 4)
	var relay string
	waitFor(t, 20*time.Second, "the server's relay", func() bool { _, relay = gateOf(s, stream); return relay != "" })
	a, aID := join(t, url, protocol.RoleViewer, protocol.KindGo, stream, 2)
	b, _ := join(t, url, protocol.RoleViewer, protocol.KindBrowser, stream, 0)
	c, _ := join(t, url, protocol.RoleViewer, protocol.KindBrowser, stream, 0)
	if open, _ := gateOf(s, stream); !open {
		t.Fatal("three viewers, N = 2: the tree is off")
	}
	a.claimLive(s, stream, aID) // a plays: one slot on trial
	// The relay stops; a fourth viewer takes its slot under the source, so
	// the next relay finds a slot only below a.
	co := s.hub.get(stream)
	co.mu.Lock()
	rp := co.peers[relay]
	co.mu.Unlock()
	rp.close()
	waitFor(t, 10*time.Second, "the relay gone", func() bool { _, r := gateOf(s, stream); return r == "" })
	d, _ := join(t, url, protocol.RoleViewer, protocol.KindBrowser, stream, 0)
	var next string
	waitFor(t, 20*time.Second, "the next relay, below a", func() bool {
		_, next = gateOf(s, stream)
		return next != "" && parentOf(s, stream, next) == aID
	})
	// The audience falls to one: after the dwell the tree turns off.
	for _, p := range []*livePeer{b, c, d} {
		p.send(`{"type":"leave"}`)
	}
	waitFor(t, 30*time.Second, "the tree off", func() bool { open, _ := gateOf(s, stream); return !open })
	if p := parentOf(s, stream, next); p != srcID {
		t.Errorf("the relay is under %s, want the source %s", p, srcID)
	}
	if p := parentOf(s, stream, aID); p != next {
		t.Errorf("the viewer is under %s, want the relay %s", p, next)
	}
	if n, _ := nodeOf(s, stream, srcID); n.Capacity != 1 || len(n.Children) != 1 {
		t.Errorf("source with the tree off: %+v, want the relay its only child", n)
	}
	if n, _ := nodeOf(s, stream, aID); n.Capacity != 0 {
		t.Errorf("viewer with the tree off: %+v", n)
	}
}
