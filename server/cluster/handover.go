package cluster

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go"
)

// An owner's death moves nothing (README "Many servers"). The tree lives
// in the owner's memory, so the owner keeps every server's copy of it
// fresh: it publishes the stream's state (keyed entries, opaque here: the
// server's rows of its tree and its peers' places) as deltas a few ms
// after each change, and every server keeps a copy of each stream's
// (state.go). When the owner goes silent (a TTL without its heartbeat) or
// hands over (a SIGTERM), an edge does not close its peers' connections:
// their links are orphaned, what the peers send waits at the edge, and the
// edge re-opens each link (an adoption) until a server owns the stream
// again. Any server that finds no owner for a stream it has a state of
// takes the lease and rebuilds from the state (Config.Takeover); the other
// edges' adoptions then reach it on the stream's own subjects.
//
// The edges' own knowledge (the last parent and child messages they
// relayed) would have to be reassembled from many servers, each of which
// may miss messages in flight, and read by the cluster layer, which knows
// nothing of the protocol; one owner-made state is consistent by
// construction, costs a delta of its own size per change, and the
// adoptions that follow carry what the state lacks (the edges' current
// connections).

// maxOrphanFrames bounds what an orphaned link keeps of its peer's
// frames while the stream has no owner: a few negotiations' worth, as a
// suspended peer's held signals are.
const maxOrphanFrames = 256

// adoptTimeout bounds how long an edge keeps re-opening orphaned links:
// past the resume grace, the new owner has removed what it did not hear of.
const adoptTimeout = 30 * time.Second

// adoptRequestTimeout bounds one adoption request: a live owner answers
// in well under a millisecond; a third of the TTL leaves room for a
// starved machine and still retries before the lease's end.
func adoptRequestTimeout(ttl time.Duration) time.Duration { return ttl / 3 }

// ErrHandedOver means this server handed the stream to another (its
// shutdown): it may no longer act as the stream's owner.
var ErrHandedOver = errors.New("stream handed over")

// TakeoverFunc takes the lease of a stream whose owner is gone and
// rebuilds it from state: a server's Claim with its handler, whose
// restore step runs between the lease and the first open.
type TakeoverFunc func(stream string, state map[string][]byte) error

// SetTakeover sets what this server does to take a stream over.
func (n *Node) SetTakeover(f TakeoverFunc) {
	n.mu.Lock()
	n.takeover = f
	n.mu.Unlock()
}

// HandOver gives every stream owned here to another server at once (a
// planned shutdown): each stream's last changes and a snapshot go to
// every server, the owner stops acting (its peers' edges adopt them at the
// next owner) and the lease is deleted, so the first edge to claim it
// takes the stream.
func (n *Node) HandOver() {
	n.mu.Lock()
	owned := make([]*Owned, 0, len(n.owned))
	for _, o := range n.owned {
		owned = append(owned, o)
	}
	n.mu.Unlock()
	for _, o := range owned {
		o.mu.Lock()
		p, rev := o.pub, o.rev
		o.mu.Unlock()
		if n.kv == nil || o.fenced.Load() || p == nil {
			continue
		}
		p.mu.Lock()
		p.delta(stateDelta)
		all := p.src.All()
		if all == nil { // the stream is gone here: what the servers have
			if st, _, _ := n.StateOf(o.stream); len(st) > 0 {
				for k, v := range st {
					all = append(all, Entry{Key: k, Value: v})
				}
			}
		}
		if len(all) == 0 {
			p.mu.Unlock()
			continue // nothing to rebuild from: Close ends its peers' sessions
		}
		p.snapshot(all)
		o.fenced.Store(true) // nothing more it sends is applied
		o.stopServing()
		// The lease first: the edges claim it the moment they hear.
		o.deleteRev(rev)
		o.publishState(stateHand, p.seq, nil)
		p.mu.Unlock()
		_ = n.nc.Flush()
		n.log.Info("stream handed over", "stream", o.stream, "epoch", o.epoch)
		if o.onLost != nil {
			o.onLost() // its coordinator goes: the next owner runs the stream
		}
	}
}

// HasState reports whether this server knows a state of stream it could
// rebuild it from.
func (n *Node) HasState(stream string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.states[stream]
	return st != nil && (len(st.entries) > 0 || len(st.held) > 0)
}

// orphan detaches the links of stream (every one, or those whose owner
// was owner when owner is not "") from their owner: their frames wait and
// the edge adopts them at the next owner. Only streams with a state are
// orphaned; it reports how many links were.
func (n *Node) orphan(stream, owner string) int {
	n.mu.Lock()
	if st := n.states[stream]; st == nil || len(st.entries)+len(st.held) == 0 || n.closed {
		n.mu.Unlock()
		return 0
	}
	var links []*Link
	for _, l := range n.links {
		if l.stream == stream && (owner == "" || l.owner == owner) {
			links = append(links, l)
		}
	}
	n.mu.Unlock()
	k := 0
	for _, l := range links {
		if l.setOrphan() {
			k++
		}
	}
	if k > 0 {
		n.log.Warn("stream's owner gone: its peers here wait for the next", "stream", stream, "peers", k)
		n.startAdopting(stream)
	}
	return k
}

// startAdopting runs one adoption loop per stream.
func (n *Node) startAdopting(stream string) {
	n.mu.Lock()
	if n.adopting[stream] {
		n.mu.Unlock()
		return
	}
	n.adopting[stream] = true
	n.mu.Unlock()
	go n.adoptLoop(stream)
}

// adoptLoop re-opens the stream's orphaned links until none is left: at
// the next owner, or, finding none, after taking the stream over here.
func (n *Node) adoptLoop(stream string) {
	defer func() {
		n.mu.Lock()
		delete(n.adopting, stream)
		n.mu.Unlock()
	}()
	deadline := time.Now().Add(adoptTimeout)
	wait := 20 * time.Millisecond
	for {
		orphans := n.orphansOf(stream)
		if len(orphans) == 0 {
			return
		}
		if time.Now().After(deadline) || n.isClosed() {
			for _, l := range orphans {
				if n.drop(l) {
					l.once.Do(l.closed)
				}
			}
			n.log.Warn("no new owner: orphaned peers closed", "stream", stream, "peers", len(orphans))
			return
		}
		noOwner := false
		for _, l := range orphans {
			err := l.adopt()
			if errors.Is(err, ErrNoOwner) {
				noOwner = true
				break
			}
		}
		if noOwner {
			_ = n.TakeOver(stream)
		}
		if len(n.orphansOf(stream)) > 0 {
			time.Sleep(wait)
			wait = min(2*wait, 250*time.Millisecond)
		}
	}
}

// TakeOver takes the lease of stream and rebuilds it from its last state
// here, if this server has one and nobody owns the stream: ErrOwned if
// another server holds the lease, ErrNoOwner without a state.
func (n *Node) TakeOver(stream string) error {
	n.mu.Lock()
	st, f, owned := n.states[stream], n.takeover, n.owned[stream] != nil
	var state map[string][]byte
	if st != nil && !owned {
		state = st.bestState()
	}
	n.mu.Unlock()
	switch {
	case owned:
		return nil
	case len(state) == 0 || f == nil:
		return ErrNoOwner
	}
	return f(stream, state)
}

func (n *Node) orphansOf(stream string) []*Link {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*Link
	for _, l := range n.links {
		if l.stream == stream && l.orphaned {
			out = append(out, l)
		}
	}
	return out
}

func (n *Node) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

// setOrphan marks l orphaned; false if it already was.
func (l *Link) setOrphan() bool {
	l.n.mu.Lock()
	defer l.n.mu.Unlock()
	if l.orphaned || l.n.links[l.peer] != l {
		return false
	}
	l.orphaned = true
	return true
}

// adopt re-opens an orphaned link at the stream's owner, then sends what
// the peer sent meanwhile, in order.
func (l *Link) adopt() error {
	n := l.n
	reply, err := n.nc.Request(l.subject, encodeToOwner(kindAdopt, l.peer, encodeOpen(n.id, l.info)), adoptRequestTimeout(n.ttl))
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) {
		// No owner, or only the stopped one's subscriptions (a SIGSTOPped
		// server's interest outlives it until its routes time out): an
		// adoption applied late is repeated, which its owner answers as
		// done.
		return ErrNoOwner
	}
	if err != nil {
		return err
	}
	status, epoch, owner, err := decodeReply(reply.Data)
	if err != nil {
		return err
	}
	if status != replyOK {
		return ErrNoOwner
	}
	n.seenEpoch(l.stream, epoch)
	n.heardOf(owner)
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	for _, f := range l.pending {
		_ = n.nc.Publish(l.subject, encodeToOwner(kindFrame, l.peer, f))
	}
	l.pending = nil
	n.mu.Lock()
	l.orphaned = false
	l.owner = owner
	gone := n.links[l.peer] != l
	n.mu.Unlock()
	if gone { // it closed while being adopted: the close may have gone first
		_ = n.nc.Publish(l.subject, encodeToOwner(kindClose, l.peer, []byte("connection closed")))
	}
	return nil
}

// hold keeps a frame of an orphaned link's peer; false if l is not
// orphaned (send it). Called with l.sendMu held.
func (l *Link) hold(frame []byte) bool {
	l.n.mu.Lock()
	orphaned := l.orphaned
	l.n.mu.Unlock()
	if !orphaned {
		return false
	}
	if len(l.pending) < maxOrphanFrames {
		l.pending = append(l.pending, append([]byte(nil), frame...))
	}
	return true
}

// Adopted reports whether the peer came back from an owner that died or
// handed the stream over: its place is in the state the new owner was
// rebuilt from, and it has been told nothing new.
func (r *Remote) Adopted() bool { return r.adopted }

// Ended tells every server to forget the stream's state (it ended here).
func (o *Owned) ended() {
	if o.n.kv != nil && !o.fenced.Load() {
		o.publishState(stateEnded, 0, nil)
	}
}
