package main

import (
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// offerCounter counts the SDP offers peers send, by the peer they are for.
type offerCounter struct {
	mu sync.Mutex
	to map[string]int
}

func (o *offerCounter) see(m *protocol.Message) {
	if m.Type != protocol.TypeSignal || m.Sig == nil || m.Sig.Kind != protocol.SignalOffer {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.to == nil {
		o.to = make(map[string]int)
	}
	o.to[m.Peer]++
}

func (o *offerCounter) count(id string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.to[id]
}

// eventCounts is how many parent and standby events v has seen.
func (v *testViewer) eventCounts() [2]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return [2]int{len(v.parentLog), len(v.standbyLog)}
}

// eventsSince returns the parent events (and whether each was a hot
// switch) and standby events after the counts given.
func (v *testViewer) eventsSince(c [2]int) (parents []string, hot []bool, standbys []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.parentLog[c[0]:]), slices.Clone(v.hotLog[c[0]:]), slices.Clone(v.standbyLog[c[1]:])
}

// checkStandbys fails the test if the stream's standby records break a
// rule (coordinator.checkStandbys).
func checkStandbys(t *testing.T, s *Server, stream string) {
	t.Helper()
	c := s.hub.get(stream)
	if c == nil {
		t.Fatalf("no stream %s", stream)
	}
	if err := c.checkStandbys(); err != nil {
		t.Fatal(err)
	}
}

// hotTopology starts a source (capacity 2), two Go relays under it and six
// Go viewers, and returns the relay feeding more viewers, the other one,
// and the viewers the first feeds (at least two). dials are the server
// addresses the two relays use; which the returned top relay has is
// topIndex.
func hotTopology(t *testing.T, url string, dials [2]string, stream string) (src *testSource, top, other *testViewer, orphans []*testViewer, topIndex int) {
	t.Helper()
	src = startSource(t, url, stream, 2)
	a := startPeer(t, dials[0], stream, protocol.RoleRelay, 8, src)
	b := startPeer(t, dials[1], stream, protocol.RoleRelay, 8, src)
	for _, r := range []*testViewer{a, b} {
		waitFor(t, 10*time.Second, "relays under the source", func() bool { return r.node.Parent() == src.node.ID() })
	}
	viewers := startViewers(t, url, stream, 6, 30, src)
	under := map[string][]*testViewer{}
	for _, v := range viewers {
		under[v.node.Parent()] = append(under[v.node.Parent()], v)
	}
	top, other = a, b
	if len(under[b.node.ID()]) > len(under[a.node.ID()]) {
		top, other, topIndex = b, a, 1
	}
	orphans = under[top.node.ID()]
	if len(orphans) < 2 {
		t.Fatalf("%d viewers under relay %s (%d under the other); the test needs two", len(orphans), top.node.ID(), len(under[other.node.ID()]))
	}
	for _, o := range orphans {
		waitFor(t, 10*time.Second, "a standby for every orphan-to-be", func() bool { return o.node.Standby() != "" })
	}
	return src, top, other, orphans, topIndex
}

// TestStandbyTakesOverOnKill kills a relay (as a crashed process would:
// node.Kill, no goodbye). Every orphan had a standby link up before the
// kill; each ends up under that standby parent, plays complete frames
// again, and is sent no new offer: the frames after the kill come over the
// link that was already up.
func TestStandbyTakesOverOnKill(t *testing.T) {
	var offers offerCounter
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2}, onMessage: offers.see})
	src, top, other, orphans, _ := hotTopology(t, url, [2]string{url, url}, "hot")
	checkStandbys(t, s, "hot")
	standby := make(map[*testViewer]string)
	offersBefore := make(map[*testViewer]int)
	eventsBefore := make(map[*testViewer][2]int)
	for _, o := range orphans {
		standby[o] = o.node.Standby()
		offersBefore[o] = offers.count(o.node.ID())
		eventsBefore[o] = o.eventCounts()
		// The heir takes the dead relay's slot; the others the live relay.
		if standby[o] != src.node.ID() && standby[o] != other.node.ID() {
			t.Fatalf("%s: standby %s, neither the source nor the live relay", o.node.ID(), standby[o])
		}
	}
	before := make([]int, len(orphans))
	for i, o := range orphans {
		before[i], _, _ = o.counts()
	}

	killed := time.Now()
	top.node.Kill()
	var stalls []float64
	for i, o := range orphans {
		waitFor(t, 30*time.Second, "orphan plays again", func() bool { f, _, _ := o.counts(); return f >= before[i]+30 })
		stalls = append(stalls, float64(o.firstFrameAfter(killed).Sub(killed).Microseconds())/1000)
		if got := o.node.Parent(); got != standby[o] {
			t.Errorf("orphan %s: parent %s after the kill, standby was %s", o.node.ID(), got, standby[o])
		}
		parents, hot, standbys := o.eventsSince(eventsBefore[o])
		if len(parents) != 1 || parents[0] != standby[o] || !hot[0] {
			t.Errorf("orphan %s: parents %v (hot %v) after the kill, want its standby link to %s only", o.node.ID(), parents, hot, standby[o])
		}
		// Offers since the kill are for new standby links only, none for the
		// tree edge: the switch needed no negotiation.
		if n := offers.count(o.node.ID()) - offersBefore[o]; n > newLinks(standbys, "") {
			t.Errorf("orphan %s was sent %d offers after the kill for new standby links %v", o.node.ID(), n, standbys)
		}
		if _, mismatch, _ := o.counts(); mismatch != 0 {
			t.Errorf("orphan %s: %d corrupted frames", o.node.ID(), mismatch)
		}
	}
	t.Logf("kill → next complete frame per orphan, ms: %.0f", stalls)
	checkStandbys(t, s, "hot")
}

// longestGapAfter is the longest time between two frames after t (from t
// to the first).
func (v *testViewer) longestGapAfter(t time.Time) time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	var longest time.Duration
	prev := t
	for _, ft := range v.frameTimes {
		if ft.After(t) {
			longest = max(longest, ft.Sub(prev))
			prev = ft
		}
	}
	return longest
}

// newLinks counts the standby parents given, but none and skip.
func newLinks(standbys []string, skip string) int {
	n := 0
	for _, sb := range standbys {
		if sb != "" && sb != skip {
			n++
		}
	}
	return n
}

// holdingProxy forwards TCP connections to the server; once frozen it
// forwards nothing more from its clients (not even a WebSocket close), and
// when a client closes it keeps the server side open: as a machine that
// lost power looks to the server until its pings go unanswered.
func holdingProxy(t *testing.T, server string) (addr string, freeze func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	var frozen atomic.Bool
	target := strings.TrimPrefix(server, "http://")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			mu.Lock()
			held = append(held, c, up)
			mu.Unlock()
			go func() { _, _ = io.Copy(c, up) }()
			go func() { // on the client's close: up stays open
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 && !frozen.Load() {
						if _, werr := up.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String(), func() { frozen.Store(true) }
}

// TestStandbySwitchWithoutServer: a relay vanishes in a way the server
// cannot see (its signaling connection stays open, as after a power cut,
// until pings time out). Its children notice (their connections to it
// close; without that, no decodable video for the stall timeout would do)
// and switch to their standby links by themselves: each
// that the server lets (its standby has a slot) plays from its standby
// parent over the link already up, with no new offer, while the server
// still lists the dead relay — no plan of the server's was involved.
func TestStandbySwitchWithoutServer(t *testing.T) {
	var offers offerCounter
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2}, onMessage: offers.see})
	proxyA, freezeA := holdingProxy(t, url)
	proxyB, freezeB := holdingProxy(t, url)
	_, top, other, orphans, topIndex := hotTopology(t, url, [2]string{proxyA, proxyB}, "silent")
	freeze := []func(){freezeA, freezeB}[topIndex]
	var movers []*testViewer
	standby := make(map[*testViewer]string)
	for _, o := range orphans {
		standby[o] = o.node.Standby()
		if standby[o] == other.node.ID() {
			movers = append(movers, o) // the heir's standby is the dead relay's slot: not free
		}
	}
	if len(movers) == 0 {
		t.Fatal("no orphan-to-be has the live relay as its standby")
	}
	// The server ignores a child's switch away from a parent that just
	// moved (stallGrace): the dead relay must have been in place that long.
	placed := time.Now()
	waitFor(t, 10*time.Second, "the relay settled", func() bool { return time.Since(placed) > stallGrace })
	eventsBefore := make(map[*testViewer][2]int)
	offersBefore := make(map[*testViewer]int)
	for _, o := range movers {
		eventsBefore[o], offersBefore[o] = o.eventCounts(), offers.count(o.node.ID())
	}
	freeze()
	killed := time.Now()
	top.node.Kill()
	for _, o := range movers {
		waitFor(t, 30*time.Second, "the orphan plays from its standby", func() bool {
			return o.node.Parent() == standby[o] && o.firstFrameAfter(killed.Add(stallTimeoutForTest)) != (time.Time{})
		})
	}
	still := false
	for _, n := range s.hub.get("silent").snapshot() {
		still = still || n.ID == top.node.ID()
	}
	if !still {
		t.Fatal("the server noticed the dead relay: this test needs it not to")
	}
	for _, o := range movers {
		parents, hot, standbys := o.eventsSince(eventsBefore[o])
		if len(parents) == 0 || parents[0] != standby[o] || !hot[0] {
			t.Errorf("orphan %s: parents %v (hot %v), want its standby link to %s first", o.node.ID(), parents, hot, standby[o])
		}
		if n := offers.count(o.node.ID()) - offersBefore[o]; n > newLinks(standbys, top.node.ID()) {
			t.Errorf("orphan %s was sent %d offers after the kill for new standby links %v: the switch was negotiated", o.node.ID(), n, standbys)
		}
		t.Logf("orphan %s: longest gap between frames after the kill %v (the stall timeout is 1.5 s)", o.node.ID(), o.longestGapAfter(killed).Round(time.Millisecond))
	}
	checkStandbys(t, s, "silent")
}

// stallTimeoutForTest is mesh's stallTimeout: frames that late after the
// kill can only have come from the standby.
const stallTimeoutForTest = 1500 * time.Millisecond

// A peer that says promote for a peer that is not its standby (or sends
// the server's own standby message) changes nothing: its parent stays,
// it is told its parent again, and bad forms get bad_message.
func TestHostilePromote(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 1}})
	_, srcID := join(t, url, protocol.RoleSource, protocol.KindGo, "hp", 1)
	relay, relayID := join(t, url, protocol.RoleRelay, protocol.KindGo, "hp", 2)
	relay.claimLive(s, "hp", relayID)
	v, vID := join(t, url, protocol.RoleViewer, protocol.KindGo, "hp", 0)
	waitFor(t, 10*time.Second, "viewer under the relay", func() bool { return parentOf(s, "hp", vID) == relayID })

	v.send(`{"type":"promote","peer":"` + srcID + `"}`) // the source is not its standby
	if m := v.next(protocol.TypeParent); m.Peer != relayID {
		t.Errorf("after a refused promote the viewer was told parent %q, want %q", m.Peer, relayID)
	}
	if p := parentOf(s, "hp", vID); p != relayID {
		t.Errorf("a promote to a non-standby moved the viewer to %q", p)
	}
	v.send(`{"type":"promote","peer":"a b"}`)
	if m := v.next(protocol.TypeError); m.Code != protocol.CodeBadMessage {
		t.Errorf("bad promote: code %q", m.Code)
	}
	v.send(`{"type":"standby","standby":"` + srcID + `"}`)
	if m := v.next(protocol.TypeError); m.Code != protocol.CodeBadMessage {
		t.Errorf("a peer sending standby: code %q", m.Code)
	}
	relay.send(`{"type":"promote","peer":"` + vID + `"}`) // a parent promoting its own child
	relay.send(`{"type":"teleport"}`)                     // answered in order: the promote was handled before
	relay.next(protocol.TypeError)
	if p := parentOf(s, "hp", vID); p != relayID {
		t.Errorf("the viewer moved to %q", p)
	}
	checkStandbys(t, s, "hp")
}
