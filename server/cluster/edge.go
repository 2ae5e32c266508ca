package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// openTimeout bounds the wait for an owner to take a peer's first
// message. In-process it answers in tens of µs, across loopback processes
// in well under a millisecond (FIELD-NOTES), but an unpaced ramp of joins
// queues them in front of the stream's coordinator for seconds (`client
// load`: join → parent p99 26 s at 10 000 unpaced joins on one server).
// A join that waited so long was waiting before the cluster too.
const openTimeout = 30 * time.Second

// ErrOwnerBusy means the stream's owner did not take a peer's first
// message within openTimeout.
var ErrOwnerBusy = errors.New("the stream's server did not answer in time")

// Link is the edge's end of one peer's connection to its stream's owner:
// what the peer sends goes up it, what the owner sends comes down to
// deliver.
type Link struct {
	n       *Node
	stream  string
	peer    string
	subject string
	deliver func(frame []byte)
	closed  func()
	once    sync.Once
	user    any    // the caller's value for the peer (SetUser)
	owner   string // the owner's server id
	info    []byte // the open's info, for an adoption at the next owner (handover.go)
	// orphaned: the owner died or handed over; the peer's frames wait in
	// pending (under sendMu) until the next owner adopts it.
	orphaned bool
	sendMu   sync.Mutex
	pending  [][]byte
}

// Prober is a link's user value that can check its connection: an owner
// that found the peer resuming elsewhere asks its edge (Remote.Alive).
type Prober interface {
	// Probe checks the peer's connection, without blocking.
	Probe()
}

// SetUser keeps a value of the caller's with the link (its connection).
func (l *Link) SetUser(v any) { l.n.mu.Lock(); l.user = v; l.n.mu.Unlock() }

// LinkOf finds the link of a peer connected here, and the value set with
// SetUser; nil if it is not connected here.
func (n *Node) LinkOf(peer string) (*Link, any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.links[peer]
	if l == nil {
		return nil, nil
	}
	return l, l.user
}

// Open attaches a peer connected here to its stream's owner: info is what
// the edge knows of it (its admitted first message, its credential), for
// the owner's Handler. deliver receives the owner's frames in order and
// closed is called once if the owner ends the connection; neither may
// block. ErrNoOwner: nobody owns the stream (Claim it, or refuse the peer).
func (n *Node) Open(stream, peer string, info []byte, deliver func([]byte), closed func()) (*Link, error) {
	l := &Link{n: n, stream: stream, peer: peer, subject: ownerSubject(stream, shardOf(peer)),
		deliver: deliver, closed: closed, info: info}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, ErrClosed
	}
	// Registered before asking: the owner's first frames may come before
	// its reply.
	n.links[peer] = l
	n.mu.Unlock()
	reply, err := n.openRequest(stream, l.subject, encodeToOwner(kindOpen, peer, encodeOpen(n.id, info)))
	if err != nil && n.adoptedWhileOpening(l) {
		// The owner died with the open unanswered, and the next owner
		// adopted the link meanwhile (handover.go): it is open there, and
		// the peer may have its welcome already.
		return l, nil
	}
	if errors.Is(err, errOwnerDied) {
		// Sent to an owner that died before this server's NATS noticed:
		// nobody will answer. Undone in case it was taken after all.
		_ = n.nc.Publish(l.subject, encodeToOwner(kindClose, peer, []byte("owner lost")))
		err = ErrNoOwner
	}
	if err == nil {
		var status byte
		var epoch uint64
		var owner string
		if status, epoch, owner, err = decodeReply(reply.Data); err == nil {
			if status == replyOK {
				n.seenEpoch(stream, epoch)
				n.mu.Lock()
				l.owner = owner
				n.mu.Unlock()
				n.heardOf(owner)
				return l, nil
			}
			err = ErrNoOwner
		}
	} else if errors.Is(err, nats.ErrNoResponders) {
		err = ErrNoOwner
	} else if errors.Is(err, nats.ErrTimeout) {
		// The open may still be taken later: the close after it, on the
		// same subject, undoes it there.
		_ = n.nc.Publish(l.subject, encodeToOwner(kindClose, peer, []byte("owner busy")))
		err = ErrOwnerBusy
	}
	n.drop(l)
	if errors.Is(err, ErrNoOwner) {
		return nil, err
	}
	return nil, fmt.Errorf("cluster open: %w", err)
}

// errOwnerDied: an open's owner went silent while the open waited.
var errOwnerDied = errors.New("the stream's owner went silent")

// openRequest asks the stream's owner to take an open, for up to
// openTimeout, or until the owner the heartbeats named for the stream has
// been silent for a TTL (election.go): an open sent a moment
// after the owner died, before this server's NATS saw its routes go, is
// lost, and waiting 30 s for it then answered the peer `full`.
func (n *Node) openRequest(stream, subject string, data []byte) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	died := make(chan struct{})
	go func() {
		t := time.NewTicker(n.ttl / 6)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if n.ownerSilent(stream, time.Now()) {
					close(died)
					cancel()
					return
				}
			}
		}
	}()
	m, err := n.nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		select {
		case <-died:
			return nil, errOwnerDied
		default:
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = nats.ErrTimeout
		}
	}
	return m, err
}

// Send passes one frame of the peer's to the owner.
func (l *Link) Send(frame []byte) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	if l.hold(frame) {
		return nil // no owner now: sent once the next adopts the peer
	}
	return l.n.nc.Publish(l.subject, encodeToOwner(kindFrame, l.peer, frame))
}

// Close tells the owner the peer's connection ended, with why.
func (l *Link) Close(reason string) {
	if l.n.drop(l) {
		_ = l.n.nc.Publish(l.subject, encodeToOwner(kindClose, l.peer, []byte(reason)))
	}
}

// adoptedWhileOpening reports whether a link whose open failed was
// adopted meanwhile by the stream's next owner, which set its owner; if it
// was not, it is dropped at once, so no adoption takes it after this.
func (n *Node) adoptedWhileOpening(l *Link) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.links[l.peer] != l {
		return false
	}
	if l.owner != "" && !l.orphaned {
		return true
	}
	delete(n.links, l.peer)
	return false
}

// drop unregisters l; it reports whether l was still registered.
func (n *Node) drop(l *Link) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.links[l.peer] != l {
		return false
	}
	delete(n.links, l.peer)
	return true
}

// seenEpoch records an owner's epoch for stream; it reports false if a
// later owner has been seen (the message is a stale owner's: drop it).
func (n *Node) seenEpoch(stream string, epoch uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if epoch < n.epochs[stream] {
		n.stale++
		return false
	}
	n.epochs[stream] = epoch
	return true
}

// deliver routes what owners send to the peers connected here.
func (n *Node) deliver(m *nats.Msg) {
	kind, epoch, peer, body, err := decodeToEdge(m.Data)
	if err != nil {
		n.log.Warn("dropped a malformed owner message", "err", err)
		return
	}
	n.mu.Lock()
	l := n.links[peer]
	n.mu.Unlock()
	if kind == kindProbe {
		answer := []byte{'n'}
		if l != nil {
			answer[0] = 'y'
			n.mu.Lock()
			pr, ok := l.user.(Prober)
			n.mu.Unlock()
			if ok {
				pr.Probe()
			}
		}
		_ = m.Respond(answer)
		return
	}
	if l == nil || !n.seenEpoch(l.stream, epoch) {
		return
	}
	switch kind {
	case kindFrame:
		l.deliver(body)
	case kindClose:
		if n.drop(l) {
			l.once.Do(l.closed)
		}
	}
}
