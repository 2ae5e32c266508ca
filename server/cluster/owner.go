package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Handler is what an owner runs for a stream: it takes each peer's first
// message and returns the Peer its later frames go to.
type Handler interface {
	// Open attaches a peer; ErrNoOwner refuses it (the stream is not
	// served here any more) so its edge looks again.
	Open(r *Remote, info []byte) (Peer, error)
}

// Peer is the owner's side of one peer's connection.
type Peer interface {
	// Frame is one frame the peer sent, in order.
	Frame(data []byte)
	// Closed says the peer's connection ended at its edge.
	Closed(reason string)
	// Remote is the peer's Remote, as Open was given it.
	Remote() *Remote
}

// Remote is how an owner reaches a peer on some edge (itself included:
// single mode and a server's own peers take the same path).
type Remote struct {
	o    *Owned
	id   string
	edge string
	done atomic.Bool // closed by the owner or at the edge
	// adopted: the peer's edge re-opened it after its owner died or
	// handed over (handover.go).
	adopted bool
}

// ID is the peer's id, given by its edge.
func (r *Remote) ID() string { return r.id }

// Edge is the id of the server the peer is connected to.
func (r *Remote) Edge() string { return r.edge }

// Send passes one frame to the peer. A fenced owner sends nothing.
func (r *Remote) Send(data []byte) error {
	if r.o.fenced.Load() || r.o.expired() {
		return ErrFenced
	}
	return r.o.n.nc.Publish(edgeSubject(r.edge), encodeToEdge(kindFrame, r.o.epoch, r.id, data))
}

// Alive asks the peer's edge whether the peer is still connected there;
// no answer within timeout (the edge died) is a no.
func (r *Remote) Alive(timeout time.Duration) bool {
	if r.done.Load() {
		return false
	}
	m, err := r.o.n.nc.Request(edgeSubject(r.edge), encodeToEdge(kindProbe, r.o.epoch, r.id, nil), timeout)
	return err == nil && len(m.Data) == 1 && m.Data[0] == 'y'
}

// Close ends the peer's connection: its edge closes the socket once what
// was sent before is written.
func (r *Remote) Close() {
	o := r.o
	if r.done.Swap(true) {
		return
	}
	o.mu.Lock()
	delete(o.peers, r.id)
	o.mu.Unlock()
	if !o.fenced.Load() {
		_ = o.n.nc.Publish(edgeSubject(r.edge), encodeToEdge(kindClose, o.epoch, r.id, nil))
	}
}

// Owned is a stream this server owns: its lease and its subscriptions.
type Owned struct {
	n      *Node
	stream string
	h      Handler
	epoch  uint64 // the lease's first revision: later owners' are higher
	rev    uint64 // the lease's latest revision (renewals)
	subs   []*nats.Subscription
	fenced atomic.Bool
	onLost func()
	// renewed is when the lease was last renewed (unix ns): an owner
	// that was stopped past its TTL (SIGSTOP, a VM pause) sends nothing
	// from the moment it runs again, before its renewal finds out.
	renewed atomic.Int64

	mu    sync.Mutex
	peers map[string]Peer
	pub   *statePublisher // its state's publication, once SetState (state.go)
	stop  chan struct{}
	once  sync.Once
}

// localEpoch numbers single-mode leases.
var localEpoch atomic.Uint64

// Claim makes this server the stream's owner: it takes the stream's lease
// (a compare-and-set create in the lease bucket; ErrOwned if another
// server holds it), keeps renewing it, and serves the stream's subjects
// with h. onLost is called once if the lease is lost (not renewed in
// time, or taken over): the owner is fenced and must stop acting.
func (n *Node) Claim(stream string, h Handler, onLost func()) (*Owned, error) {
	return n.ClaimWith(stream, h, onLost, nil)
}

// ClaimWith is Claim with a step run once the lease is taken and before
// the stream's subjects are served: a new owner rebuilds the stream there
// (handover.go), so no open arrives before it. A restore error gives the
// lease back.
func (n *Node) ClaimWith(stream string, h Handler, onLost func(), restore func(epoch uint64) error) (*Owned, error) {
	n.mu.Lock()
	if o := n.owned[stream]; o != nil {
		n.mu.Unlock()
		return o, nil
	}
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	o := &Owned{n: n, stream: stream, h: h, onLost: onLost, peers: make(map[string]Peer), stop: make(chan struct{})}
	if n.kv == nil {
		o.epoch = localEpoch.Add(1)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), n.ttl)
		rev, err := n.kv.Create(ctx, leaseKey(stream), []byte(n.id))
		cancel()
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil, ErrOwned
		}
		if err != nil {
			return nil, err
		}
		o.epoch, o.rev = rev, rev
	}
	if restore != nil {
		if err := restore(o.epoch); err != nil {
			o.Release()
			return nil, err
		}
	}
	for i := 0; i < shards; i++ {
		sub, err := n.nc.Subscribe(ownerSubject(stream, i), o.handle)
		if err != nil {
			o.Release()
			return nil, err
		}
		setPending(sub)
		o.subs = append(o.subs, sub)
	}
	if err := o.serveQueries(); err != nil { // the HTTP API of other servers (query.go)
		o.Release()
		return nil, err
	}
	// Flushed so an edge's open sent right after this finds the
	// subscriptions (in a cluster they still take a moment to propagate).
	_ = n.nc.Flush()
	n.mu.Lock()
	if prev := n.owned[stream]; prev != nil { // a racing Claim won
		n.mu.Unlock()
		o.Release()
		return prev, nil
	}
	n.owned[stream] = o
	n.mu.Unlock()
	n.beat() // edges know the owner at once (election.go)
	if n.kv != nil {
		o.renewed.Store(time.Now().UnixNano())
		go o.renew()
	}
	n.log.Info("stream owned", "stream", stream, "epoch", o.epoch)
	return o, nil
}

func leaseKey(stream string) string { return "stream." + stream }

// Epoch is the lease's epoch, carried by every message this owner sends.
func (o *Owned) Epoch() uint64 { return o.epoch }

// renew keeps the lease: every third of its TTL it updates it, compared
// and set on the revision it last wrote. A revision mismatch means another
// server took it; no success for a whole TTL means it may have expired
// and been taken. Either way the owner is fenced.
func (o *Owned) renew() {
	n := o.n
	t := time.NewTicker(n.ttl / 3)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-o.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.ttl/3)
		o.mu.Lock()
		prev := o.rev
		o.mu.Unlock()
		rev, err := n.kv.Update(ctx, leaseKey(o.stream), []byte(n.id), prev)
		cancel()
		now := time.Now()
		if err == nil {
			o.mu.Lock()
			o.rev = rev
			o.mu.Unlock()
			last = now
			o.renewed.Store(now.UnixNano())
			continue
		}
		if revisionConflict(err) && o.stillOurs() {
			last = now // a renewal that timed out here had been applied
			o.renewed.Store(now.UnixNano())
			continue
		}
		if revisionConflict(err) || now.Sub(last) >= n.ttl {
			n.log.Warn("lease lost; fenced", "stream", o.stream, "epoch", o.epoch, "err", err)
			o.fence()
			return
		}
		n.log.Warn("lease renewal failed; retrying", "stream", o.stream, "err", err)
	}
}

// revisionConflict reports whether an Update failed because the key's
// revision is not the one given. On the lease bucket (3 replicas) the
// server answers err_code 10164, which jetstream.ErrKeyExists (10071, a
// single replica's code) does not match: seen in a soak at load ~100,
// where a renewal applied after its reply timed out was retried as a
// plain failure instead of being recognised by stillOurs.
func revisionConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// expired reports whether the lease may have passed unrenewed: no
// renewal for a whole TTL. The renewal loop then fences the owner.
func (o *Owned) expired() bool {
	at := o.renewed.Load()
	return at != 0 && time.Since(time.Unix(0, at)) >= o.n.ttl
}

// stillOurs: a revision mismatch may be our own renewal, applied although
// its reply came too late (seen on a starved machine). The lease is still
// ours if it names this server: no other writes its id. It then carries on
// from the revision it finds.
func (o *Owned) stillOurs() bool {
	ctx, cancel := context.WithTimeout(context.Background(), o.n.ttl/3)
	defer cancel()
	e, err := o.n.kv.Get(ctx, leaseKey(o.stream))
	if err != nil || string(e.Value()) != o.n.id || e.Revision() < o.epoch {
		return false
	}
	o.mu.Lock()
	o.rev = e.Revision()
	o.mu.Unlock()
	return true
}

// fence stops this owner: nothing more it sends goes out, nothing more
// is taken in, and onLost tells its user.
func (o *Owned) fence() {
	if o.fenced.Swap(true) {
		return
	}
	o.unsubscribe()
	o.n.forget(o)
	// The peers connected here go to the next owner, as any edge's do.
	o.n.orphan(o.stream, o.n.id)
	if o.onLost != nil {
		o.onLost()
	}
}

// closePeers ends every peer's session at its edge (a shutdown).
func (o *Owned) closePeers() {
	o.mu.Lock()
	peers := make([]Peer, 0, len(o.peers))
	for _, p := range o.peers {
		peers = append(peers, p)
	}
	o.mu.Unlock()
	for _, p := range peers {
		p.Remote().Close()
	}
	_ = o.n.nc.Flush()
}

// Fenced reports whether the lease was lost.
func (o *Owned) Fenced() bool { return o.fenced.Load() }

// Release gives the stream up: the lease is deleted, so another server may
// take it at once (a planned handover, or the stream ended).
func (o *Owned) Release() {
	o.stopServing()
	o.deleteLease()
}

// releaseAsync stops serving at once and deletes the lease in the
// background (a caller under its hub's lock must not wait on JetStream).
func (o *Owned) releaseAsync() {
	o.stopServing()
	go o.deleteLease()
}

func (o *Owned) stopServing() {
	o.once.Do(func() { close(o.stop) })
	o.unsubscribe()
	o.n.forget(o)
}

func (o *Owned) deleteLease() {
	if o.n.kv == nil || o.fenced.Load() {
		return
	}
	o.mu.Lock()
	rev := o.rev
	o.mu.Unlock()
	o.deleteRev(rev)
}

// deleteRev deletes the lease if its revision is still rev (ours). A
// renewal in flight as the owner stopped may have moved it on: then the
// lease is deleted at the revision it finds, if it still names this
// server (a handover that left it would cost the next owner a TTL: 3.3 s
// in one trial of TestOwnerFailoverFigures).
func (o *Owned) deleteRev(rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for try := 0; try < 3; try++ {
		err := o.n.kv.Delete(ctx, leaseKey(o.stream), jetstream.LastRevision(rev))
		if err == nil || ctx.Err() != nil {
			return
		}
		e, gerr := o.n.kv.Get(ctx, leaseKey(o.stream))
		if gerr != nil || string(e.Value()) != o.n.id || e.Revision() < o.epoch {
			return // gone, or another's
		}
		rev = e.Revision()
	}
}

func (o *Owned) unsubscribe() {
	o.mu.Lock()
	subs := o.subs
	o.subs = nil
	o.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
}

func (n *Node) forget(o *Owned) {
	n.mu.Lock()
	gone := n.owned[o.stream] == o
	if gone {
		delete(n.owned, o.stream)
	}
	n.mu.Unlock()
	if gone {
		n.beat() // the stream ended here: edges need not wait for it (election.go)
	}
}

// handle takes one message from an edge.
func (o *Owned) handle(m *nats.Msg) {
	if o.fenced.Load() || o.expired() {
		return // woken past its lease: what it would do is not applied
	}
	kind, peer, body, err := decodeToOwner(m.Data)
	if err != nil {
		o.n.log.Warn("dropped a malformed edge message", "err", err)
		return
	}
	switch kind {
	case kindOpen, kindAdopt:
		edge, info, err := decodeOpen(body)
		if err != nil {
			return
		}
		o.n.heard(edge)
		if kind == kindAdopt {
			o.mu.Lock()
			p := o.peers[peer]
			o.mu.Unlock()
			if p != nil && p.Remote().edge == edge {
				// Adopted already (the edge's request timed out and was repeated).
				_ = m.Respond(encodeReply(replyOK, o.epoch, o.n.id))
				return
			}
		}
		r := &Remote{o: o, id: peer, edge: edge, adopted: kind == kindAdopt}
		p, err := o.h.Open(r, info)
		if err != nil {
			_ = m.Respond(encodeReply(replyNotOwner, o.epoch, o.n.id))
			return
		}
		o.mu.Lock()
		if !r.done.Load() { // not refused and closed already
			o.peers[peer] = p
		}
		o.mu.Unlock()
		_ = m.Respond(encodeReply(replyOK, o.epoch, o.n.id))
	case kindFrame:
		o.mu.Lock()
		p := o.peers[peer]
		o.mu.Unlock()
		if p != nil {
			p.Frame(body)
		}
	case kindClose:
		o.mu.Lock()
		p := o.peers[peer]
		delete(o.peers, peer)
		o.mu.Unlock()
		if p != nil {
			p.Remote().done.Store(true)
			p.Closed(string(body))
		}
	}
}

// Owns reports whether this server holds stream's lease.
func (n *Node) Owns(stream string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	o := n.owned[stream]
	return o != nil && !o.fenced.Load()
}

// Release gives up stream's lease if this server holds it (the stream
// ended). The lease's deletion is not waited for.
func (n *Node) Release(stream string) {
	n.mu.Lock()
	o := n.owned[stream]
	n.mu.Unlock()
	if o != nil {
		o.ended()
		o.releaseAsync()
	}
}
