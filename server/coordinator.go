package main

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Errors a coordinator returns; ws.go maps them to protocol error codes.
var (
	// errStreamTaken means a second source tried to publish a live stream.
	errStreamTaken = errors.New("stream already has a source")
	// errNotNeighbour means a peer signalled a peer it is not connected to in the tree.
	errNotNeighbour = errors.New("not a tree neighbour")
	// errRemoved means the coordinator was dropped from the hub; join again.
	errRemoved = errors.New("stream removed")
)

// coordinator owns one stream's tree. Every change to the tree and to the
// set of peers happens under mu, and the messages a change causes are queued
// to the peers' send buffers under the same lock, so peers see tree changes
// in the order they happened. Queuing never blocks (see peerConn.send).
type coordinator struct {
	id     string
	log    *slog.Logger
	policy tree.Config

	mu     sync.Mutex
	tree   *tree.Tree
	peers  map[string]*peerConn
	source *peerConn
	tracks []protocol.Track
	// removed is set once the hub has dropped this coordinator.
	removed bool
	// moving maps a child that changed parent to the parent it left. That
	// edge stays up (make before break) until the child reports media from
	// its new parent, or moveTimeout passes.
	moving map[string]string
	// departed maps a peer that left the tree but whose connection is still
	// open (it feeds its children until they have moved) to its parent then.
	departed map[string]string
	draining map[string]*peerConn // the departed peers' connections
	// movedAt is when each peer last got a new parent; stalls records which
	// children reported which parent stalled, and when.
	movedAt map[string]time.Time
	stalls  map[string]map[string]time.Time
	// trust records who delivered to whom (trust.go).
	trust trustBook
	// ended remembers edges that ended moments ago: signals still on
	// their way along them are dropped quietly (budget.go).
	ended recentEdges
	// standby records the hot standby edges (standby.go).
	standby standbyLinks
	// resume makes resume tokens; suspended are the peers whose
	// connection dropped, in the tree until they resume or their grace
	// period ends (suspend.go).
	resume    *resumer
	suspended map[string]*suspension
	// signed is the source's key and the tampered reports (signed.go);
	// bars, the relays barred for tampering, by id and address, for the
	// stream's life (bars.go).
	signed signBook
	bars   barList
	// stateDirty: the keys of the stream's state changed since the last
	// delta (state.go); nil until a cluster asks for the state.
	stateDirty map[string]struct{}
	// uplinks records what each relay's measured upload sustains (uplink.go).
	uplinks map[string]*uplinkState
	// onEmpty is called (under mu) when the last peer leaves.
	onEmpty func()
	// sourceLost, if set, is called (under mu) with the reclaim secret of a
	// source whose connection dropped without a leave (caps.go).
	sourceLost func(secret string)
	obs        *streamObs // measurements for /metrics and the dashboard (stats.go)
	views      viewCache  // the tree as the HTTP API reads it (viewcache.go)

	// restored are the places a new owner rebuilt from its dead owner's
	// state, as the peers know them, until their sessions are back
	// (handover.go).
	restored map[string]restoredPlace

	// gate feeds a small audience from the server's relay (p2pmin.go);
	// nil unless -p2p-min-viewers covers the stream.
	gate *p2pGate
	// keepRelay holds the server's relay node in the stream's tree until
	// the returned stop is called (Server.keepRelay); nil: the server has
	// none. stripKeep is the stop of the hold for the peers that cannot
	// verify (noverify.go).
	keepRelay func(stream string) (stop func())
	stripKeep func()
}

func newCoordinator(id string, policy tree.Config, log *slog.Logger, onEmpty func()) *coordinator {
	policy.Prove = true // peers earn their children (trust.go)
	return &coordinator{
		id:       id,
		log:      log.With("stream", id),
		policy:   policy,
		tree:     tree.New(policy),
		peers:    make(map[string]*peerConn),
		moving:   make(map[string]string),
		departed: make(map[string]string),
		draining: make(map[string]*peerConn),
		movedAt:  make(map[string]time.Time),
		stalls:   make(map[string]map[string]time.Time),
		trust:    newTrustBook(),
		onEmpty:  onEmpty,
		obs:      newStreamObs(log.With("stream", id)),
		standby:  standbyLinks{delay: standbyCoalesce},
	}
}

// streamInfo is one row of GET /api/streams.
type streamInfo struct {
	ID      string `json:"id"`
	Viewers int    `json:"viewers"`
	Live    bool   `json:"live"`
}

func (c *coordinator) info() streamInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	viewers := len(c.peers)
	if c.source != nil {
		viewers--
	}
	return streamInfo{ID: c.id, Viewers: viewers, Live: c.source != nil}
}

func (c *coordinator) snapshot() []tree.NodeInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.treeViewCopy()
}

// join places p in the tree and tells it and its new parent.
func (c *coordinator) join(p *peerConn, hello *protocol.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return errRemoved
	}
	defer c.batchStandbys()() // a burst of joins is planned for standbys together
	var changes []tree.Change
	var err error
	if hello.Role == protocol.RoleSource {
		if c.source != nil {
			c.obs.refused(hello.Role, outcomeStreamTaken)
			return errStreamTaken
		}
		changes, err = c.tree.SetSource(p.id, c.gateJoin(p, hello))
		if err != nil {
			return err
		}
		c.source = p
		c.tracks = hello.Tracks
		c.signed.setKey(hello.SignKey)
		c.markState(stateMetaKey)
		changes = append(changes, c.tree.SetSigned(c.signed.key != "")...) // moves the peers that cannot verify, if it became signed
		c.trust.onlineAt = time.Now()
	} else {
		capacity := c.gateJoin(p, hello)
		barred := c.barredForStream(p, time.Now())
		if barred {
			capacity = 0
		}
		changes, err = c.tree.JoinWith(p.id, hello.Role, hello.Kind, capacity, tree.JoinOptions{NoVerify: hello.NoVerify})
		if err != nil {
			return err
		}
		if barred {
			changes = append(changes, c.rebar(p)...)
		}
		if hello.Passthrough {
			// Validated: only a browser declares it. Lowers the re-encode
			// count below p; may place nodes that waited.
			more, perr := c.tree.SetPassthrough(p.id)
			if perr != nil {
				c.log.Warn("pass-through not recorded", "peer", p.id, "err", perr)
			}
			changes = append(changes, more...)
		}
	}
	c.peers[p.id] = p
	c.markPeer(p.id)
	changes = append(changes, c.gateJoined(p)...)
	changes = append(changes, c.noVerifyJoined(p, hello)...)
	p.send(c.welcome(p, 1)) // with its resume token (suspend.go)
	if c.source == nil && hello.Role != protocol.RoleSource {
		p.send(&protocol.Message{Type: protocol.TypeOffline, Reason: "the stream's source is not connected"})
	}
	if hello.Role == protocol.RoleSource {
		// Everyone already in the tree has been waiting for this source:
		// they learn its tracks before their new parent's offer arrives.
		for _, q := range c.peers {
			if q != p {
				q.send(&protocol.Message{Type: protocol.TypeWelcome, ID: q.id, Stream: c.id, Tracks: c.tracks, ICEServers: q.iceServers, Private: q.private, SourceKey: c.signed.key})
			}
		}
	}
	if c.tree.Queued(p.id) {
		p.send(protocol.Errorf(protocol.CodeFull, "the stream is full; you are queued and will be placed when a slot frees up"))
	}
	c.obs.joined(p.id, hello, c.tree.Queued(p.id))
	c.apply(changes)
	c.log.Info("peer joined", "peer", p.id, "role", hello.Role, "kind", hello.Kind, "capacity", hello.Capacity, "depth", c.tree.Depth(p.id))
	return nil
}

// moveTimeout bounds make-before-break: an old parent edge is cut this long
// after the child was moved even if the child never reports its new
// parent's media.
const moveTimeout = 5 * time.Second

// depart removes p from the tree and re-attaches its children, whose old
// edges to p stay up until they play from their new parents. p's own
// connection stays open until gone: a peer leaving gracefully keeps feeding
// its children meanwhile.
func (c *coordinator) depart(p *peerConn, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.departLocked(p, reason)
}

// departLocked is depart with c.mu held.
func (c *coordinator) departLocked(p *peerConn, reason string) {
	if c.peers[p.id] != p {
		return
	}
	parent, _ := c.tree.Parent(p.id)
	c.departed[p.id] = parent
	c.draining[p.id] = p
	if from, ok := c.moving[p.id]; ok {
		c.cut(from, p.id) // the old edge of a move it did not finish
	}
	delete(c.moving, p.id)
	delete(c.peers, p.id)
	c.markPeer(p.id)
	delete(c.movedAt, p.id)
	delete(c.stalls, p.id)
	c.trust.forget(p.id)
	c.signed.forget(p.id)
	delete(c.uplinks, p.id)
	c.obs.left(p.id)
	var changes []tree.Change
	standbyKids := c.forgetStandbys(p.id)
	if c.source == p {
		c.source = nil
		if reason != "left" && c.sourceLost != nil {
			c.sourceLost(p.reclaim) // dropped, not left: keep its name for it
		}
		changes = c.tree.RemoveSource()
		for _, q := range c.peers {
			q.send(&protocol.Message{Type: protocol.TypeOffline, Reason: "the source left"})
		}
	} else {
		// Each orphan goes where its standby link goes, when that parent
		// can take it (it may play from it already: it switched by
		// itself); a new plan may have ranked the heirs otherwise since.
		changes = c.tree.LeaveVia(p.id, c.standbysOfChildren(p.id))
	}
	changes = append(changes, c.gateLeft(p)...)
	changes = append(changes, c.noVerifyKeep()...)
	c.apply(changes)
	c.replanStandbys(nil, standbyKids...)
	c.log.Info("peer left", "peer", p.id, "reason", reason)
}

// gone is called once p's connection has closed, after a graceful leave or
// as a crash: its parent stops feeding it.
func (c *coordinator) gone(p *peerConn, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.goneLocked(p, reason)
}

// goneLocked is gone with c.mu held.
func (c *coordinator) goneLocked(p *peerConn, reason string) {
	c.departLocked(p, reason)
	if parent, ok := c.departed[p.id]; ok {
		delete(c.departed, p.id)
		delete(c.draining, p.id)
		if parent != "" {
			c.cut(parent, p.id)
		}
	}
	for child, old := range c.moving {
		if old == p.id {
			delete(c.moving, child)
			c.ended.add(old, child, time.Now())
		}
	}
	if len(c.peers) == 0 && len(c.departed) == 0 && c.onEmpty != nil {
		c.onEmpty()
	}
}

// apply turns tree changes into attach/parent/detach messages. A child
// that moves keeps its old parent's feed until it reports its new parent's
// media (make before break); a child left without a parent (queued) is
// detached at once.
func (c *coordinator) apply(changes []tree.Change) {
	for _, ch := range changes {
		c.obs.changed(ch)
		if c.moving[ch.Node] == ch.To {
			delete(c.moving, ch.Node) // back to the parent it was leaving: nothing to cut later
		}
		child := c.peers[ch.Node]
		at := time.Now()
		c.movedAt[ch.Node] = at
		if ch.To != "" {
			c.watchPlay(ch.Node, ch.To, at, playTimeout)
			if parent := c.peers[ch.To]; parent != nil && child != nil {
				c.attachOrPromote(parent, child)
				child.send(&protocol.Message{Type: protocol.TypeParent, Peer: ch.To,
					Depth: c.tree.Depth(ch.Node), Standby: c.tree.Standby(ch.Node), Verify: c.verifyFlag(ch.Node)})
			}
		}
		if ch.From == "" {
			continue
		}
		if ch.To != "" && c.connected(ch.From) {
			if prev, ok := c.moving[ch.Node]; ok && prev != ch.From && prev != ch.To {
				c.cut(prev, ch.Node) // moved twice before playing: the oldest edge goes (unless it is back to it)
			}
			c.moving[ch.Node] = ch.From
			from, node := ch.From, ch.Node
			time.AfterFunc(moveTimeout, func() { c.moveDone(node, from) })
			continue
		}
		c.cut(ch.From, ch.Node)
		if child != nil && ch.To == "" {
			child.send(&protocol.Message{Type: protocol.TypeDetach, Peer: ch.From})
		}
	}
	c.refreshVerify()
	c.replanStandbys(changes)
}

// connected reports whether id still has an open signaling connection.
func (c *coordinator) connected(id string) bool {
	if c.peers[id] != nil {
		return true
	}
	_, ok := c.departed[id]
	return ok
}

// cut tells parent to stop feeding child, if parent is still connected.
// Signals still on their way along the edge are dropped quietly.
func (c *coordinator) cut(parent, child string) {
	c.ended.add(parent, child, time.Now())
	if q := c.peerOrDeparted(child); q != nil {
		q.budgets.resetEdge(parent)
	}
	if q := c.peerOrDeparted(parent); q != nil {
		q.budgets.resetEdge(child)
		q.send(&protocol.Message{Type: protocol.TypeDetach, Peer: child})
	}
}

// moveDone ends a make-before-break move: the child plays from its new
// parent, or moveTimeout passed.
func (c *coordinator) moveDone(child, from string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.moving[child] != from {
		return
	}
	delete(c.moving, child)
	c.cut(from, child)
	c.replanStandbys(nil, child) // the old parent may be its standby now
}

// signal forwards a signal from p to its tree neighbour m.Peer, within the
// edge's and the receiver's budgets (budget.go). A signal along an edge
// that just ended is errSignalLate, for the caller to drop quietly.
func (c *coordinator) signal(p *peerConn, m *protocol.Message) error {
	// Encoded before taking the stream's lock: an SDP is kilobytes of
	// JSON, and every peer of the stream waits on that lock (`client load`
	// found signals holding it for 93 % of its contention).
	out := privateSignal(p, m.Sig) // privacy.go: only relay candidates leave a private peer
	var data []byte
	if out != nil {
		var err error
		if data, err = protocol.Encode(&protocol.Message{Type: protocol.TypeSignal, Peer: p.id, Sig: out}); err != nil {
			p.log.Error("encode", "type", m.Type, "err", err)
			return nil
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	to := c.peerOrDeparted(m.Peer)
	if to == nil || !c.neighbours(p.id, m.Peer) {
		if c.ended.has(p.id, m.Peer, now) {
			return errSignalLate
		}
		return errNotNeighbour
	}
	if err := forward(p, to, m.Sig, now); err != nil {
		return err
	}
	if out == nil {
		return nil // a private peer's non-relay candidate: dropped, counted above
	}
	if p.onForward != nil {
		p.onForward(p.id, to.id, out)
	}
	to.sendData(data)
	return nil
}

// neighbours reports whether a and b are connected: a tree edge, or an old
// edge still up while a child moves (make before break) or while a peer
// that left drains.
func (c *coordinator) neighbours(a, b string) bool {
	if pa, ok := c.tree.Parent(a); ok && pa == b {
		return true
	}
	if pb, ok := c.tree.Parent(b); ok && pb == a {
		return true
	}
	if c.moving[a] == b || c.moving[b] == a {
		return true
	}
	if c.standby.of[a] == b || c.standby.of[b] == a {
		return true // a standby link, negotiated like an edge (standby.go)
	}
	if pa, ok := c.departed[a]; ok && pa == b {
		return true
	}
	pb, ok := c.departed[b]
	return ok && pb == a
}

// report handles a peer's live, stalled and stats messages.
func (c *coordinator) report(p *peerConn, m *protocol.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peers[p.id] != p {
		return
	}
	c.obs.report(p.id, m)
	switch m.Type {
	case protocol.TypeLive:
		c.log.Debug("peer live", "peer", p.id, "parent", m.Peer)
		if parent, ok := c.tree.Parent(p.id); ok && parent == m.Peer {
			from, moved := c.moving[p.id]
			if moved {
				delete(c.moving, p.id)
				if from != parent { // back to the parent it left: that edge is the new one
					c.cut(from, p.id)
				}
			}
			c.onLive(p.id, parent)
			if moved {
				c.replanStandbys(nil, p.id) // its old parent may serve now
			} else {
				// onLive batched trust's re-plans if they only opened
				// slots (setTrust); p's own standby, a hint, waits for
				// the same batch.
				end := c.batchStandbys()
				c.replanStandbys(nil, p.id)
				end()
			}
		}
	case protocol.TypeStalled:
		c.lostMedia(m.Peer, p.id) // a suspended parent that crashed (suspend.go)
		c.stalled(p.id, m.Peer)
	case protocol.TypeTampered:
		c.tampered(p.id, m)
	case protocol.TypeStats:
		p.stats = *m.Stats
		c.onUplink(p.id, m.Stats)
	}
}

// Stall policy: see stalled.
const (
	// stallWindow is how recent the reports that condemn a parent must be.
	stallWindow = 5 * time.Second
	// stallGrace ignores reports about a parent that itself just moved: its
	// children's silence is its own recovery, which is under way.
	stallGrace = 3 * time.Second
)

// peerOrDeparted finds a connected peer, in the tree or draining after a
// graceful leave.
func (c *coordinator) peerOrDeparted(id string) *peerConn {
	if q := c.peers[id]; q != nil {
		return q
	}
	if _, ok := c.departed[id]; ok {
		return c.draining[id]
	}
	return nil
}

// setCapacity changes how many children p feeds: children beyond it move
// (make before break), queued peers may be placed under it.
func (c *coordinator) setCapacity(p *peerConn, capacity int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peers[p.id] != p {
		return
	}
	if p.hello != nil {
		capacity = c.gate.claim(p, p.hello.Role, capacity) // p2pmin.go
	}
	capacity = c.barCapacity(p, capacity) // bars.go
	changes, err := c.tree.SetCapacity(p.id, capacity)
	if err != nil {
		c.log.Warn("set capacity", "peer", p.id, "capacity", capacity, "err", err)
		return
	}
	c.log.Info("capacity changed", "peer", p.id, "capacity", capacity, "moves", len(changes))
	c.apply(changes)
	c.replanStandbys(nil, c.heldBy(p.id)...) // fewer slots, fewer standby links
}
