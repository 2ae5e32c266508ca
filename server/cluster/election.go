package cluster

import (
	"bytes"
	"context"
	"time"
)

// Elections, seen from an edge. When a stream's owner dies, its stream has
// no owner until another server takes the lease (a TTL, then the source's
// rejoin or the new owner's rebuild). A viewer's hello arriving meanwhile
// would find nobody and be told the stream does not exist, and a client
// that never joined gives up on that. So an edge that knows the stream had
// an owner a moment ago holds the join until a server serves the stream
// again (bounded), then forwards it: no retry by the client.
//
// What the edge knows comes from the heartbeats (alive.go): each names the
// streams its server owns, and a server that gives a stream up (it ended)
// says so at once with a heartbeat without it. A stream whose last owner
// named it and then went silent, or whose lease still exists, is being
// elected; one its owner gave up is gone.

// ElectionWait bounds how long a join waits for a stream's new owner: the
// lease's 3 s, the source's back-off and rejoin (11 s measured at load ~80,
// README "Many servers") fit in it.
const ElectionWait = 15 * time.Second

// electionPoll is how often a waiting edge asks whether the stream is
// served again: one question per stream and edge, whatever the number of
// joins waiting.
const electionPoll = 100 * time.Millisecond

// ownerSeen is the last heartbeat that named a stream, or the one after
// it that did not (ended: its owner gave it up).
type ownerSeen struct {
	server string
	at     time.Time
	ended  bool
}

// election is the joins of one stream waiting at this edge: done closes
// when the stream is served again (found) or the wait ends.
type election struct {
	done  chan struct{}
	found bool
}

// aliveBody is this server's heartbeat: the streams it owns, one a line.
func (n *Node) aliveBody() []byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	var b []byte
	for s, o := range n.owned {
		if !o.fenced.Load() {
			b = append(append(b, s...), '\n')
		}
	}
	return b
}

// beat publishes this server's heartbeat now: after it gave a stream up,
// edges learn at once that the stream ended rather than lost its owner.
// A closing server says nothing: its streams are handed over, not ended.
func (n *Node) beat() {
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed || n.kv == nil {
		return
	}
	_ = n.nc.Publish(alivePrefix+n.id, n.aliveBody())
}

// heardAlive records a heartbeat of server id naming the streams it owns.
func (n *Node) heardAlive(id string, body []byte, now time.Time) {
	var streams []string
	for _, s := range bytes.Split(body, []byte{'\n'}) {
		if len(s) > 0 {
			streams = append(streams, string(s))
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.seen[id] = now
	for _, s := range n.listed[id] {
		if n.owners[s].server == id {
			n.owners[s] = ownerSeen{server: id, at: now, ended: true} // unless named again below
		}
	}
	for _, s := range streams {
		n.owners[s] = ownerSeen{server: id, at: now}
	}
	n.listed[id] = streams
}

// forgetOwners drops what heartbeats said of streams whose owner has been
// silent longer than any join waits for it.
func (n *Node) forgetOwners(now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for s, o := range n.owners {
		if now.Sub(o.at) > n.ttl+ElectionWait {
			delete(n.owners, s)
		}
	}
}

// ownerSilent reports whether the server the heartbeats name as stream's
// owner (another one) has not been heard for a TTL, the silence after which
// owners and edges already count a server lost (alive.go).
func (n *Node) ownerSilent(stream string, now time.Time) bool {
	if n.kv == nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	o, ok := n.owners[stream]
	if !ok || o.ended || o.server == n.id {
		return false
	}
	return now.Sub(n.seen[o.server]) > n.ttl
}

// Electing reports whether stream, which has no owner now, had one a
// moment ago that did not give it up: its owner went silent, or its lease
// still exists. Single mode has no elections.
func (n *Node) Electing(stream string) bool {
	if n.kv == nil || !subjectSafe(stream) {
		return false
	}
	n.mu.Lock()
	o, ok := n.owners[stream]
	n.mu.Unlock()
	if ok && time.Since(o.at) <= n.ttl+ElectionWait {
		return !o.ended // an ended stream's lease may outlive it by a moment
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.ttl/3)
	defer cancel()
	_, err := n.kv.Get(ctx, leaseKey(stream))
	return err == nil
}

// AwaitOwner waits until a server serves stream again (true), for at most
// limit from the first join of this stream that waits here, or until
// cancel closes (false).
func (n *Node) AwaitOwner(stream string, limit time.Duration, cancel <-chan struct{}) bool {
	n.mu.Lock()
	e := n.waits[stream]
	if e == nil {
		e = &election{done: make(chan struct{})}
		n.waits[stream] = e
		go n.watchElection(stream, e, limit)
	}
	n.mu.Unlock()
	select {
	case <-e.done:
		return e.found
	case <-cancel:
		return false
	}
}

// watchElection asks whether stream is served again until it is, the
// limit passes or the node closes; then it releases the waiting joins.
func (n *Node) watchElection(stream string, e *election, limit time.Duration) {
	deadline := time.Now().Add(limit)
	t := time.NewTicker(electionPoll)
	defer t.Stop()
	for !e.found && time.Now().Before(deadline) {
		if _, err := n.Ask(stream, "", electionPoll); err == nil {
			e.found = true
			break
		}
		select {
		case <-t.C:
		case <-n.done:
			deadline = time.Time{}
		}
	}
	n.mu.Lock()
	delete(n.waits, stream)
	n.mu.Unlock()
	close(e.done)
}
