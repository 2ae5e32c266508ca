package main

import (
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestTamperBarOutlastsTheSession: the hostile relay of
// tamper_relay_test.go, from its own address (127.0.0.2), tampers and is
// barred; then its signaling drops and it resumes, and later it leaves
// and comes back with a fresh hello (a new id). Each time it may watch
// (the fresh session plays) but relays for nobody: capacity 0 whatever
// it claims, barred and tampering in the tree API, and a new viewer that
// only it could feed goes elsewhere (it takes the barred relay's place,
// or waits).
func TestTamperBarOutlastsTheSession(t *testing.T) {
	lightTest(t)
	s, url := startServer(t, tree.Config{})
	const stream = "tamper-bar"
	const badIP = "127.0.0.2"
	relayHello := func(resume string) *protocol.Message {
		return &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: protocol.RoleRelay,
			Kind: protocol.KindGo, Stream: stream, Capacity: 4, Resume: resume}
	}
	src := startSignedSource(t, url, stream, 2)
	bad := startTamperRelayOn(t, dialLiveFrom(t, badIP, url), relayHello(""), flipBits)
	waitFor(t, 20*time.Second, "the tampering relay plays", func() bool { return bad.live.Load() })
	// The honest relay takes the source's other slot, and no child until
	// the viewers are under the tampering relay.
	good, viewers := underTamperer(t, url, stream, src, bad, 0)
	if err := good.node.SetCapacity(2); err != nil {
		t.Fatal(err)
	}
	bad.armed.Store(true)
	waitFor(t, 60*time.Second, "the tampering relay barred", func() bool {
		n, ok := nodeOf(s, stream, bad.id)
		return ok && n.Tampering && n.Trust == tree.TrustBarred
	})
	for _, v := range viewers {
		waitFor(t, 60*time.Second, "the viewers away from the tampering relay", func() bool {
			p := v.node.Parent()
			return p != "" && p != bad.id
		})
	}
	// They play again, genuine frames: the honest relay's child proves it,
	// and its second slot opens (a relay on trial feeds one child).
	for _, v := range viewers {
		before, _, _ := v.counts()
		waitFor(t, 30*time.Second, "the viewers play away from the tampering relay", func() bool {
			n, _, _ := v.counts()
			return n >= before+10
		})
	}
	waitFor(t, 30*time.Second, "the honest relay proven", func() bool {
		n, ok := nodeOf(s, stream, good.node.ID())
		return ok && n.Trust == tree.TrustProven
	})
	// The honest slots (the source's 2, the honest relay's 2) hold the
	// relays and the viewers, whichever way the tree arranged them: the
	// barred relay's slots are the only ones left.
	barred := func(id, when string) {
		t.Helper()
		n, ok := nodeOf(s, stream, id)
		if !ok || !n.Tampering || n.Trust != tree.TrustBarred || n.Capacity != 0 || n.Usable != 0 || len(n.Children) != 0 {
			t.Fatalf("%s: the relay is %+v (found %v); want it barred, tampering, capacity 0, no children", when, n, ok)
		}
	}
	// newViewerNotUnder: a viewer joining now finds no honest slot left:
	// it takes the barred relay's place in the tree (a barred peer yields
	// its place to a peer with nowhere else to go) or waits in the queue,
	// never under the barred relay. Its welcome comes after its placement,
	// under the coordinator's lock.
	newViewerNotUnder := func(barredID, when string) {
		t.Helper()
		q := dialLive(t, url, nil)
		q.sendMsg(&protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: protocol.RoleViewer, Kind: protocol.KindGo, Stream: stream})
		id := q.next(protocol.TypeWelcome).ID
		n, _ := nodeOf(s, stream, id)
		b, _ := nodeOf(s, stream, barredID)
		if n.Parent == barredID || len(b.Children) != 0 {
			t.Fatalf("%s: a new viewer %+v, the barred relay %+v: want no child under it", when, n, b)
		}
		t.Logf("%s: the new viewer's parent %q (queued %v)", when, n.Parent, n.Queued)
		// Gone at once, not suspended for its resume. The socket closes
		// after that: closed at once, with the parent's offer unread here,
		// it is reset, and a reset can lose the leave still unread there.
		q.sendMsg(&protocol.Message{Type: protocol.TypeLeave})
		waitFor(t, 10*time.Second, "the new viewer gone", func() bool { _, ok := nodeOf(s, stream, id); return !ok })
		_ = q.conn.Close()
	}
	barred(bad.id, "barred")
	// The viewers' stats reports carry the frames they refused to the stats API.
	waitFor(t, 30*time.Second, "the stats API shows the refused frames", func() bool {
		var r statsResponse
		getJSON(t, url+"/api/streams/"+stream+"/stats", &r)
		rejected := uint64(0)
		for _, n := range r.Nodes {
			if n.Stats != nil && (n.ID == viewers[0].node.ID() || n.ID == viewers[1].node.ID()) {
				rejected += n.Stats.FramesRejected
			}
		}
		return rejected > 0
	})
	newViewerNotUnder(bad.id, "barred")

	// Its signaling drops; it resumes its place from the same address.
	bad.p.drop()
	waitSuspended(t, s, stream, bad.id)
	bad.close()
	resumed := startTamperRelayOn(t, dialLiveFrom(t, badIP, url), relayHello(bad.welcome.Resume), flipBits)
	if !resumed.welcome.Resumed || resumed.id != bad.id {
		t.Fatalf("resume: welcome %+v, want the place of %s", resumed.welcome, bad.id)
	}
	// It asks for children again; a second hello's error says the
	// server has read that claim (one connection's messages are handled
	// in order).
	resumed.p.sendMsg(&protocol.Message{Type: protocol.TypeCapacity, Capacity: 4})
	resumed.p.sendMsg(relayHello(""))
	select {
	case e := <-resumed.errs:
		if e.Code != protocol.CodeState {
			t.Fatalf("second hello: %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to a second hello")
	}
	barred(bad.id, "resumed")
	newViewerNotUnder(bad.id, "resumed")

	// It leaves, and comes back with a fresh hello: a new id, the same address.
	resumed.p.sendMsg(&protocol.Message{Type: protocol.TypeLeave})
	resumed.close()
	waitFor(t, 20*time.Second, "the barred relay gone", func() bool { _, ok := nodeOf(s, stream, bad.id); return !ok })
	fresh := startTamperRelayOn(t, dialLiveFrom(t, badIP, url), relayHello(""), flipBits)
	if fresh.id == bad.id {
		t.Fatalf("a fresh hello got the old id %s", fresh.id)
	}
	waitFor(t, 30*time.Second, "the barred relay's new session plays", func() bool { return fresh.live.Load() })
	barred(fresh.id, "fresh hello")
	newViewerNotUnder(fresh.id, "fresh hello")
	var tr treeResponse
	getJSON(t, url+"/api/streams/"+stream+"/tree", &tr)
	for _, n := range tr.Nodes {
		if n.ID == fresh.id && (!n.Tampering || n.Trust != tree.TrustBarred) {
			t.Errorf("tree API: %+v, want it shown barred for tampering", n)
		}
	}
}

// TestTamperBarsKeys: a bar covers the relay's id and its address, not an
// address many other peers share (a proxy's), and ends after barTTL.
func TestTamperBarsKeys(t *testing.T) {
	lightTest(t)
	c := newCoordinator("s", tree.Config{}, testLogger(), nil)
	peer := func(id, addr string) *peerConn {
		p := &peerConn{id: id, remote: addr}
		c.peers[id] = p
		return p
	}
	now := time.Now()
	alone := peer("alone", "198.51.100.7:4000")
	for i := range sharedAddress + 1 {
		peer(string(rune('a'+i)), "203.0.113.9:5000")
	}
	proxied := peer("proxied", "203.0.113.9:5001")
	c.barForStream(alone.id, now)
	c.barForStream(proxied.id, now)
	for _, tc := range []struct {
		p    *peerConn
		at   time.Time
		want bool
	}{
		{&peerConn{id: "alone"}, now, true},                             // its id: a resume
		{&peerConn{id: "new", remote: "198.51.100.7:4100"}, now, true},  // its address: a fresh hello
		{&peerConn{id: "new", remote: "198.51.100.8:4100"}, now, false}, // a neighbour
		{&peerConn{id: "proxied"}, now, true},
		{&peerConn{id: "new", remote: "203.0.113.9:6000"}, now, false}, // the proxy's other users
		{&peerConn{id: "new", remote: "198.51.100.7:4100", hosted: true}, now, false},
		{&peerConn{id: "new", remote: "198.51.100.7:4100"}, now.Add(barTTL), false}, // expired
		{&peerConn{id: "alone"}, now.Add(barTTL), false},
	} {
		if got := c.barredForStream(tc.p, tc.at); got != tc.want {
			t.Errorf("%s from %q at +%v: barred %v, want %v", tc.p.id, tc.p.remote, tc.at.Sub(now), got, tc.want)
		}
	}
	for i := range maxBars {
		c.barForStream("x"+string(rune(i)), now.Add(time.Duration(i)))
	}
	if len(c.bars) > maxBars {
		t.Errorf("%d bars kept, want at most %d", len(c.bars), maxBars)
	}
}
