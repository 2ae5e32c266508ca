package main

import (
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// standbyModel is what the peers have been told about standby links, built
// from the messages the coordinator queued for them, as a Go node applies
// them (mesh/standby.go).
type standbyModel struct {
	child map[string]string          // child → the standby parent it was told
	held  map[string]map[string]bool // parent → the standby children it was told
}

// recordConn is a wireConn that keeps what the server writes.
type recordConn struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (r *recordConn) ReadMessage() (int, []byte, error) { return 0, nil, io.EOF }
func (r *recordConn) WriteMessage(_ int, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, data)
	return nil
}
func (r *recordConn) WriteControl(int, []byte, time.Time) error { return nil }
func (r *recordConn) SetReadLimit(int64)                        {}
func (r *recordConn) SetReadDeadline(time.Time) error           { return nil }
func (r *recordConn) SetWriteDeadline(time.Time) error          { return nil }
func (r *recordConn) SetPongHandler(func(string) error)         {}
func (r *recordConn) Close() error                              { return nil }

// take waits until p's queue is written out and returns what was written
// since the last take.
func (r *recordConn) take(p *peerConn) [][]byte {
	for {
		p.out.mu.Lock()
		idle := len(p.out.msgs) == 0 && !p.out.writing
		p.out.mu.Unlock()
		if idle {
			break
		}
		time.Sleep(50 * time.Microsecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.msgs
	r.msgs = nil
	return out
}

func newTestPeer(hello *protocol.Message) *peerConn {
	return &peerConn{id: newPeerID("p"), log: testLogger(), conn: &recordConn{}, closed: make(chan struct{}), hello: hello}
}

func (m *standbyModel) read(p *peerConn) error {
	for _, data := range p.conn.(*recordConn).take(p) {
		msg, err := protocol.Decode(data)
		if err != nil {
			return fmt.Errorf("%s was sent an invalid message: %v", p.id, err)
		}
		m.apply(p.id, msg)
	}
	return nil
}

func (m *standbyModel) apply(to string, msg *protocol.Message) {
	held := m.held[to]
	if held == nil {
		held = make(map[string]bool)
		m.held[to] = held
	}
	switch msg.Type {
	case protocol.TypeStandby:
		if msg.Peer != "" {
			held[msg.Peer] = true
		} else {
			m.child[to] = msg.Standby
		}
	case protocol.TypePromote, protocol.TypeDetach:
		delete(held, msg.Peer)
	case protocol.TypeParent:
		if m.child[to] == msg.Peer {
			m.child[to] = "" // the standby link became the parent's
		}
		// A peer whose new parent is a child it held a standby link for
		// is told no detach for that link (a detach naming its parent
		// would cut its live feed): the parent message ends it.
		delete(held, msg.Peer)
	}
}

// TestStandbyPlanProperty runs random joins, live reports, crashes,
// capacity changes and standby switches of Go and browser peers through a
// coordinator (no WebRTC) and checks after each: the standby records hold
// every rule (checkStandbys: never the parent, never a descendant, within 2
// per slot), and what each peer was told agrees with them, so both sides of
// every standby link know of it and of its end. It runs with every re-plan
// made at once, and with the re-plans of joins and live reports batched
// (standby_batch.go): then the batch is planned after a random few
// operations, the rules must hold between batches too, and a record must
// be what a plan made now would say only right after one. With live
// reports among the operations (trust opens slots: a change not near the
// peers it serves, which the server reaches by retrying a few peers
// without a standby per plan) a record need not be what a plan made now
// would say; the rules, and what the peers were told, are checked all the
// same. (What the peers were told went unchecked with live reports or
// batches until session 7, when 1 100 runs, CANOPY_PLAN_SEEDS=200 among
// them, found no disagreement left.)
func TestStandbyPlanProperty(t *testing.T) {
	seeds := uint64(4) // CANOPY_PLAN_SEEDS=N runs N of each
	if n, err := strconv.Atoi(os.Getenv("CANOPY_PLAN_SEEDS")); err == nil && n > 0 {
		seeds = uint64(n)
	}
	for _, lives := range []bool{false, true} {
		for _, batched := range []bool{false, true} {
			for seed := range seeds {
				t.Run(fmt.Sprint("lives=", lives, "/batched=", batched, "/seed", seed), func(t *testing.T) { standbyPlanRun(t, seed, batched, lives) })
			}
		}
	}
}

func standbyPlanRun(t *testing.T, seed uint64, batched, withLives bool) {
	rng := rand.New(rand.NewPCG(seed, 11))
	c := newCoordinator("prop", tree.Config{SourceCapacity: 2}, testLogger(), nil)
	c.standby.delay = 0
	if batched {
		c.standby.delay = time.Hour // planned when the test says, below
	}
	model := &standbyModel{child: map[string]string{}, held: map[string]map[string]bool{}}
	live := map[string]*peerConn{}
	mk := func(role protocol.Role, kind protocol.Kind, capacity int, passthrough bool) *peerConn {
		hello := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role, Kind: kind, Stream: "prop", Capacity: capacity, Passthrough: passthrough}
		if role == protocol.RoleSource {
			hello.Tracks = []protocol.Track{{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}}
		}
		p := newTestPeer(hello)
		if err := c.join(p, hello); err != nil {
			t.Fatal(err)
		}
		live[p.id] = p
		return p
	}
	mk(protocol.RoleSource, protocol.KindGo, 2, false)
	promotions, deferred, lives := 0, 0, 0
	for op := range 1500 {
		ids := slices.Sorted(maps.Keys(live))
		ops := 20
		if withLives {
			ops = 24
		}
		switch k := rng.IntN(ops); {
		case k >= 20:
			// A live report from the peer's parent: trust lets relays
			// take children, and the batched path runs for it.
			p := live[ids[rng.IntN(len(ids))]]
			c.mu.Lock()
			parent, placed := c.tree.Parent(p.id)
			c.mu.Unlock()
			if placed && parent != "" {
				c.report(p, &protocol.Message{Type: protocol.TypeLive, Peer: parent})
				lives++
			}
		case k < 9 || len(ids) < 4:
			kind, passthrough := protocol.KindGo, false
			if rng.IntN(3) == 0 {
				// Half the browsers pass frames through; all hold standby links
				// (re-encoding ones too: server/standby.go standbyCapable).
				kind, passthrough = protocol.KindBrowser, rng.IntN(2) == 0
			}
			role := protocol.RoleViewer
			if rng.IntN(2) == 0 {
				role = protocol.RoleRelay
			}
			mk(role, kind, rng.IntN(5), passthrough)
		case k < 14:
			p := live[ids[rng.IntN(len(ids))]]
			if p.hello.Role == protocol.RoleSource {
				continue
			}
			c.gone(p, "crash")
			delete(live, p.id)
			delete(model.child, p.id)
			delete(model.held, p.id)
		case k < 16:
			p := live[ids[rng.IntN(len(ids))]]
			if p.hello.Role != protocol.RoleSource {
				c.setCapacity(p, rng.IntN(5))
			}
		default:
			p := live[ids[rng.IntN(len(ids))]]
			c.mu.Lock()
			s := c.standby.of[p.id]
			c.mu.Unlock()
			if s != "" {
				c.promote(p, s)
				promotions++
			}
		}
		if err := c.checkStandbys(); err != nil {
			t.Fatalf("op %d: %v", op, err)
		}
		c.mu.Lock()
		if err := c.tree.Check(); err != nil {
			c.mu.Unlock()
			t.Fatalf("op %d: tree: %v", op, err)
		}
		c.mu.Unlock()
		for _, p := range live {
			if err := model.read(p); err != nil {
				t.Fatal(err)
			}
		}
		c.mu.Lock()
		if batched && c.standby.dirty != nil {
			if rng.IntN(4) != 0 {
				deferred++
				c.mu.Unlock()
				continue // the batch waits; the rules above held meanwhile
			}
			c.flushStandbys()
			c.mu.Unlock()
			for _, p := range live {
				if err := model.read(p); err != nil {
					t.Fatal(err)
				}
			}
			c.mu.Lock()
		}
		// Every record is what a plan made now would say, unless that
		// parent holds all the links it may (then the older record stands).
		fresh := make(standbyPlans)
		for id := range live {
			if withLives {
				break
			}
			want := c.planStandby(id, fresh)
			if got := c.standby.of[id]; got != want && want != "" {
				c.mu.Unlock()
				t.Fatalf("op %d: %s's standby is %q, a plan now says %q", op, id, got, want)
			}
		}
		for id := range live {
			if got, want := model.child[id], c.standby.of[id]; got != want {
				c.mu.Unlock()
				t.Fatalf("op %d: %s was told standby %q, the server records %q", op, id, got, want)
			}
			if got, want := model.held[id], c.standby.held[id]; len(got) != len(want) || !maps.Equal(got, want) {
				c.mu.Unlock()
				t.Fatalf("op %d: %s was told it holds %v, the server records %v", op, id, got, want)
			}
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	t.Logf("%d peers, %d standby links, %d promotions, %d live reports, %d operations left a batch waiting", len(live), len(c.standby.of), promotions, lives, deferred)
	c.mu.Unlock()
}

// BenchmarkCoordinatorJoinStandby measures what a join costs the
// coordinator with standby planning, in a stream of Go peers (relays of
// capacity 4 and viewers, as many as b.N): placement, messages, and the
// standby plans of everyone the join affects.
func BenchmarkCoordinatorJoinStandby(b *testing.B) {
	c := newCoordinator("bench", tree.Config{SourceCapacity: 4}, testLogger(), nil)
	mk := func(role protocol.Role, capacity int) *peerConn {
		hello := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role, Kind: protocol.KindGo, Stream: "bench", Capacity: capacity}
		if role == protocol.RoleSource {
			hello.Tracks = []protocol.Track{{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}}
		}
		return newTestPeer(hello)
	}
	src := mk(protocol.RoleSource, 4)
	if err := c.join(src, src.hello); err != nil {
		b.Fatal(err)
	}
	peers := make([]*peerConn, b.N)
	for i := range peers {
		if i%4 == 0 {
			peers[i] = mk(protocol.RoleRelay, 4)
		} else {
			peers[i] = mk(protocol.RoleViewer, 0)
		}
	}
	b.ResetTimer()
	for i, p := range peers {
		if err := c.join(p, p.hello); err != nil {
			b.Fatal(err)
		}
		if i%32 == 31 { // peers read their messages: queues stay short
			b.StopTimer()
			for _, q := range append(peers[:i+1:i+1], src) {
				q.conn.(*recordConn).take(q)
			}
			b.StartTimer()
		}
	}
	b.StopTimer()
	c.mu.Lock()
	b.ReportMetric(float64(len(c.standby.of)), "standby-links")
	c.mu.Unlock()
}
