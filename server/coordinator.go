package main

import (
	"errors"
	"log/slog"
	"sync"

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
	// onEmpty is called (under mu) when the last peer leaves.
	onEmpty func()
	obs     *streamObs // measurements for /metrics and the dashboard (stats.go)
}

func newCoordinator(id string, policy tree.Config, log *slog.Logger, onEmpty func()) *coordinator {
	return &coordinator{
		id:      id,
		log:     log.With("stream", id),
		policy:  policy,
		tree:    tree.New(policy),
		peers:   make(map[string]*peerConn),
		onEmpty: onEmpty,
		obs:     newStreamObs(log.With("stream", id)),
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
	return c.tree.Snapshot()
}

// join places p in the tree and tells it and its new parent.
func (c *coordinator) join(p *peerConn, hello *protocol.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return errRemoved
	}
	var changes []tree.Change
	var err error
	if hello.Role == protocol.RoleSource {
		if c.source != nil {
			c.obs.refused(hello.Role, outcomeStreamTaken)
			return errStreamTaken
		}
		changes, err = c.tree.SetSource(p.id, hello.Capacity)
		if err != nil {
			return err
		}
		c.source = p
		c.tracks = hello.Tracks
	} else {
		changes, err = c.tree.Join(p.id, hello.Role, hello.Kind, hello.Capacity)
		if err != nil {
			return err
		}
	}
	c.peers[p.id] = p
	p.send(&protocol.Message{Type: protocol.TypeWelcome, ID: p.id, Stream: c.id, Tracks: c.tracks, ICEServers: p.iceServers})
	if c.source == nil && hello.Role != protocol.RoleSource {
		p.send(&protocol.Message{Type: protocol.TypeOffline, Reason: "the stream's source is not connected"})
	}
	if hello.Role == protocol.RoleSource {
		// Everyone already in the tree has been waiting for this source:
		// they learn its tracks before their new parent's offer arrives.
		for _, q := range c.peers {
			if q != p {
				q.send(&protocol.Message{Type: protocol.TypeWelcome, ID: q.id, Stream: c.id, Tracks: c.tracks, ICEServers: q.iceServers})
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

// leave removes p from the tree and re-attaches its children.
func (c *coordinator) leave(p *peerConn, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peers[p.id] != p {
		return
	}
	delete(c.peers, p.id)
	c.obs.left(p.id)
	var changes []tree.Change
	if c.source == p {
		c.source = nil
		changes = c.tree.RemoveSource()
		for _, q := range c.peers {
			q.send(&protocol.Message{Type: protocol.TypeOffline, Reason: "the source left"})
		}
	} else {
		changes = c.tree.Leave(p.id)
	}
	c.apply(changes)
	c.log.Info("peer left", "peer", p.id, "reason", reason)
	if len(c.peers) == 0 && c.onEmpty != nil {
		c.onEmpty()
	}
}

// apply turns tree changes into detach/attach/parent messages. The new
// parent is told first so that its offer is on the way while the old edge
// is taken down.
func (c *coordinator) apply(changes []tree.Change) {
	for _, ch := range changes {
		c.obs.changed(ch)
		child := c.peers[ch.Node]
		if ch.To != "" {
			if parent := c.peers[ch.To]; parent != nil && child != nil {
				parent.send(&protocol.Message{Type: protocol.TypeAttach, Peer: ch.Node})
				child.send(&protocol.Message{Type: protocol.TypeParent, Peer: ch.To, Depth: c.tree.Depth(ch.Node)})
			}
		}
		if ch.From != "" {
			if old := c.peers[ch.From]; old != nil {
				old.send(&protocol.Message{Type: protocol.TypeDetach, Peer: ch.Node})
			}
			if child != nil && ch.To == "" {
				child.send(&protocol.Message{Type: protocol.TypeDetach, Peer: ch.From})
			}
		}
	}
}

// signal forwards a signal from p to its tree neighbour m.Peer.
func (c *coordinator) signal(p *peerConn, m *protocol.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	to := c.peers[m.Peer]
	if to == nil || !c.neighbours(p.id, m.Peer) {
		return errNotNeighbour
	}
	to.send(&protocol.Message{Type: protocol.TypeSignal, Peer: p.id, Sig: m.Sig})
	return nil
}

func (c *coordinator) neighbours(a, b string) bool {
	if pa, ok := c.tree.Parent(a); ok && pa == b {
		return true
	}
	pb, ok := c.tree.Parent(b)
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
	case protocol.TypeStalled:
		c.log.Info("peer reports a stalled parent", "peer", p.id, "parent", m.Peer)
	case protocol.TypeStats:
		p.stats = *m.Stats
	}
}
