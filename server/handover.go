package main

import (
	"errors"
	"fmt"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// A stream outlives its owner (README "Many servers"; the cluster side is
// cluster/handover.go). The owner publishes the stream's state: its tree
// (tree.Snapshot) and what it knows of each peer that its edge does not
// (its resume generation, its reclaim secret, who fed whom). The server
// that takes the lease after it rebuilds the coordinator from that state,
// every peer suspended in its old place; each edge then adopts its peers
// (their sessions come back without a word to them: nothing moved), and
// the peers whose edge was the dead server resume with their tokens
// elsewhere. A place nobody comes back for ends as any suspension does.

// streamState is a stream's state as its owner publishes it.
type streamState struct {
	Tracks    []protocol.Track     `json:"tracks,omitempty"`
	SourceKey string               `json:"sourceKey,omitempty"`
	Nodes     []tree.NodeInfo      `json:"nodes"`
	Peers     map[string]peerState `json:"peers"`
	// Standby maps a child to its standby parent (standby.go).
	Standby map[string]string `json:"standby,omitempty"`
	// Bars are the stream's bars for tampering (bars.go): key → end.
	Bars map[string]time.Time `json:"bars,omitempty"`
}

// peerState is what the owner knows of a peer beyond its tree node.
type peerState struct {
	Role    protocol.Role `json:"role"`
	Kind    protocol.Kind `json:"kind"`
	Private bool          `json:"private,omitempty"`
	Hosted  bool          `json:"hosted,omitempty"`
	Gen     uint64        `json:"gen,omitempty"`
	Reclaim string        `json:"reclaim,omitempty"`
	// Played: the parents it played from (trust.go): evidence that its
	// stall report means the parent's media stopped.
	Played []string `json:"played,omitempty"`
	// Link is the id its edge knows it by when that is not its own: a
	// resumed peer keeps its first id, its new connection has another.
	Link string `json:"link,omitempty"`
}

// adoptGrace is how long a hosted node's place waits to be adopted: its
// edge re-opens it within milliseconds of the takeover unless that edge
// is the server that died (a hosted node never resumes).
const adoptGrace = 3 * time.Second

// claim takes stream's lease for a source's first hello, and keeps the
// cluster's copy of its state fresh.
func (s *Server) claim(stream string) error {
	o, err := s.node.Claim(stream, s.owner, func() { s.fenced(stream) })
	if err == nil {
		o.SetState(clusterState{h: s.hub, stream: stream})
	}
	return err
}

// takeover takes the lease of a stream whose owner is gone and rebuilds
// it from data, its last state (cluster.TakeoverFunc).
func (s *Server) takeover(stream string, entries map[string][]byte) error {
	st := decodeState(entries)
	if len(st.Nodes) == 0 {
		return fmt.Errorf("stream %q state: %w", stream, errNoNodes)
	}
	began := time.Now()
	o, err := s.node.ClaimWith(stream, s.owner, func() { s.fenced(stream) }, func(epoch uint64) error {
		return s.hub.restore(stream, st, epoch)
	})
	if err != nil {
		return err
	}
	o.SetState(clusterState{h: s.hub, stream: stream})
	s.log.Info("stream taken over", "stream", stream, "epoch", o.Epoch(), "peers", len(st.Peers),
		"took", time.Since(began).Round(time.Microsecond))
	return nil
}

// errNoNodes means a stream's state holds no tree to rebuild.
var errNoNodes = errors.New("no nodes in the state")

// errRestored means a stream to restore is already served here.
var errRestored = errors.New("the stream is already served here")

// restore makes stream's coordinator from st: the tree as it was, every
// peer suspended in its place until its edge adopts it or it resumes.
func (h *hub) restore(stream string, st *streamState, epoch uint64) error {
	h.mu.Lock()
	if h.streams[stream] != nil {
		h.mu.Unlock()
		return errRestored
	}
	c := h.create(stream)
	h.mu.Unlock()
	c.restoreFrom(st, epoch)
	return nil
}

// restoreFrom rebuilds c's tree and suspends a place for every peer.
func (c *coordinator) restoreFrom(st *streamState, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, changes, fixed := tree.Restore(c.policy, st.Nodes)
	if fixed != nil {
		c.log.Warn("restored tree failed its check; placed afresh", "err", fixed, "moved", len(changes))
	}
	c.tree = t
	c.restored = make(map[string]restoredPlace, len(st.Nodes))
	c.tracks = st.Tracks
	c.signed.setKey(st.SourceKey)
	c.trust.onlineAt = time.Now()
	for _, n := range st.Nodes {
		ps, ok := st.Peers[n.ID]
		if !ok {
			ps = peerState{Role: n.Role, Kind: n.Kind}
		}
		p := c.placeholder(n.ID, ps)
		c.peers[p.id] = p
		c.restored[p.id] = restoredPlace{parent: n.Parent, children: n.Children}
		if ps.Link != "" {
			c.restored[ps.Link] = restoredPlace{alias: p.id}
		}
		if n.Role == protocol.RoleSource {
			c.source = p
		}
		for _, parent := range ps.Played {
			if c.trust.played[p.id] == nil {
				c.trust.played[p.id] = make(map[string]bool)
			}
			c.trust.played[p.id][parent] = true
			c.trust.everPlayed[p.id] = true
		}
		grace := c.resume.grace
		if ps.Hosted {
			grace = min(grace, adoptGrace)
		}
		c.suspendPlaceholder(p, grace)
	}
	if c.standby.of == nil {
		c.standby.of = make(map[string]string)
	}
	if c.standby.held == nil {
		c.standby.held = make(map[string]map[string]bool)
	}
	for child, parent := range st.Standby {
		if c.peers[child] == nil || c.peers[parent] == nil {
			continue
		}
		c.standby.of[child] = parent
		if c.standby.held[parent] == nil {
			c.standby.held[parent] = make(map[string]bool)
		}
		c.standby.held[parent][child] = true
	}
	changes = append(changes, c.restoreBars(st.Bars)...)
	c.log.Info("stream restored from its last state", "epoch", epoch, "peers", len(c.peers), "bars", len(c.bars), "check", errString(c.tree.Check()))
	if len(changes) > 0 {
		// The adopted peers hear of what placement fixed once they are
		// back; those still away get their place in their resumed welcome.
		time.AfterFunc(adoptGrace, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if !c.removed {
				c.apply(changes)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// placeholder is a restored peer's place before its session is back: a
// connection that sends nothing (it is suspended: what is sent to it is
// held), with what a resume checks.
func (c *coordinator) placeholder(id string, ps peerState) *peerConn {
	p := &peerConn{id: id, conn: deadConn{}, closed: make(chan struct{}), resumer: c.resume,
		hello:   &protocol.Message{Type: protocol.TypeHello, Stream: c.id, Role: ps.Role, Kind: ps.Kind},
		private: ps.Private, hosted: ps.Hosted, reclaim: ps.Reclaim, log: c.log.With("peer", id, "restored", true)}
	if ps.Gen > 0 && c.resume.on() {
		p.token.Store(&resumeToken{stream: c.id, peer: id, gen: ps.Gen})
	}
	return p
}

// suspendPlaceholder suspends a restored place for grace. Called with
// c.mu held.
func (c *coordinator) suspendPlaceholder(p *peerConn, grace time.Duration) {
	p.held.Store(&heldSignals{})
	if c.suspended == nil {
		c.suspended = make(map[string]*suspension)
	}
	s := &suspension{p: p, since: time.Now()}
	s.timer = time.AfterFunc(max(grace, time.Millisecond), func() { c.expire(p) })
	c.suspended[p.id] = s
	c.resume.counts.suspended.Add(1) // ended as any suspension: resumed, adopted or expired
}

// adopt gives p, re-opened by its edge after its owner died or handed
// over, its restored place; a peer the state did not hold (it joined in
// its last moments) joins afresh, or resumes if its hello was a resume.
func (h *hub) adopt(p *peerConn, hello *protocol.Message) (*coordinator, error) {
	c := h.get(hello.Stream)
	if c != nil {
		ok, err := c.adoptPeer(p)
		if err != nil {
			return nil, err
		}
		if ok {
			return c, nil
		}
	}
	if hello.Resume != "" {
		// A resume that waited at its edge while the owner died: its
		// place is in the state, under the id its token names.
		p.log.Info("adopted peer not in the restored state; resuming it")
		return h.resume(p, hello)
	}
	p.log.Info("adopted peer not in the restored state; joining it afresh")
	return h.join(p, hello)
}

// adoptPeer puts p in the place restored for its id, and sends it what
// was held for it. false: no such place.
func (c *coordinator) adoptPeer(p *peerConn) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return false, errNotOwner
	}
	if a := c.restored[p.id].alias; a != "" {
		delete(c.restored, p.id)
		p.id = a // a resumed peer: its edge knows it by its connection's id
		p.log = p.log.With("resumed", a)
	}
	s := c.suspended[p.id]
	if s == nil {
		if c.peers[p.id] != nil {
			return false, errResumeLive // adopted already
		}
		return false, nil
	}
	old := s.p
	s.timer.Stop()
	delete(c.suspended, p.id)
	c.resume.counts.resumed.Add(1)
	if old.reclaim != "" {
		p.reclaim = old.reclaim
	}
	p.stats, p.budgets = old.stats, old.budgets
	if t := old.token.Load(); t != nil {
		p.token.Store(t)
	}
	c.peers[p.id] = p
	c.markPeer(p.id)
	if c.source == old {
		c.source = p
	}
	held, _ := old.held.Load().take()
	for _, data := range held {
		p.sendData(data)
	}
	c.tellChangedPlace(p)
	c.log.Info("peer adopted", "peer", p.id, "signals", len(held))
	return true, nil
}

// restoredPlace is a peer's place as its state said: what the peer itself
// knows, since nothing was sent to it since.
type restoredPlace struct {
	parent   string
	children []string
	alias    string // set on the entry of a link id: the peer's own id
}

// tellChangedPlace tells an adopted peer what changed around its place
// while it was away (what was sent to its placeholder was not kept: a
// resumed welcome says it all, an adoption says nothing): its new parent,
// the children placed under it meanwhile, which wait for its offer, and
// those that went elsewhere or left.
// Called with c.mu held.
func (c *coordinator) tellChangedPlace(p *peerConn) {
	was, ok := c.restored[p.id]
	if !ok {
		return
	}
	delete(c.restored, p.id)
	if parent, placed := c.tree.Parent(p.id); placed && parent != was.parent && parent != "" {
		p.send(&protocol.Message{Type: protocol.TypeParent, Peer: parent, Depth: c.tree.Depth(p.id),
			Standby: c.tree.Standby(p.id), Verify: c.verifyFlag(p.id)})
	}
	known := make(map[string]bool, len(was.children))
	for _, k := range was.children {
		known[k] = true
	}
	now := make(map[string]bool)
	for _, k := range c.tree.Children(p.id) {
		now[k] = true
		if !known[k] {
			p.send(&protocol.Message{Type: protocol.TypeAttach, Peer: k})
		}
	}
	for _, k := range was.children {
		if !now[k] && c.moving[k] != p.id && c.departed[k] != p.id {
			p.send(&protocol.Message{Type: protocol.TypeDetach, Peer: k}) // moved away or gone meanwhile
		}
	}
}

// deadConn is a restored place's connection until its peer is back.
type deadConn struct{}

// errNoSession: a restored place has no session yet.
var errNoSession = errors.New("restored place: no session yet")

func (deadConn) ReadMessage() (int, []byte, error)         { return 0, nil, errNoSession }
func (deadConn) WriteMessage(int, []byte) error            { return errNoSession }
func (deadConn) WriteControl(int, []byte, time.Time) error { return nil }
func (deadConn) SetReadLimit(int64)                        {}
func (deadConn) SetReadDeadline(time.Time) error           { return nil }
func (deadConn) SetWriteDeadline(time.Time) error          { return nil }
func (deadConn) SetPongHandler(func(string) error)         {}
func (deadConn) Close() error                              { return nil }

// ownerWait bounds how long a hello waits at its edge for a stream whose
// owner is gone and whose state this server has: the lease's TTL, the
// election, and the restore (README "Many servers": p99 ≤ 10 s).
const ownerWait = 15 * time.Second

// awaitOwner is the edge's hook for a hello that found no owner: if the
// stream's last state is known here its owner is being replaced, so the
// hello waits (this server tries to take the stream over itself) rather
// than being refused. It reports whether to look for the owner again.
func (s *Server) awaitOwner(stream string, since time.Time) bool {
	if !s.node.HasState(stream) || time.Since(since) > ownerWait {
		return false
	}
	if err := s.node.TakeOver(stream); err != nil {
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// handOver gives the streams this server owns to another server at once,
// each with its state as it is now (a planned shutdown).
func (s *Server) handOver() { s.node.HandOver() }
