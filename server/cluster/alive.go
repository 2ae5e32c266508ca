package cluster

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Liveness. A server that dies says nothing: its peers' connections end
// with it, but the owners of their streams would keep them forever. So
// in a cluster each server says it is alive every third of the lease TTL
// (naming the streams it owns: election.go), and an owner ends the sessions of the peers of a server it has not
// heard from for a whole TTL ("edge lost"): they resume elsewhere.

const alivePrefix = "canopy.alive."

// EdgeLost is the reason an owner gives when a peer's edge went silent.
const EdgeLost = "edge lost"

// startAlive publishes this server's heartbeat and watches the others'.
func (n *Node) startAlive() error {
	sub, err := n.nc.Subscribe(alivePrefix+"*", func(m *nats.Msg) {
		n.heardAlive(strings.TrimPrefix(m.Subject, alivePrefix), m.Data, time.Now())
	})
	if err != nil {
		return err
	}
	n.aliveSub = sub
	go n.aliveLoop()
	return nil
}

func (n *Node) aliveLoop() {
	t := time.NewTicker(n.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
		}
		n.beat()
		n.reapEdges(time.Now())
		n.forgetOwners(time.Now())
	}
}

// heardOf notes an owner an edge just heard from (an open's reply).
func (n *Node) heardOf(id string) { n.heard(id) }

// heard notes an edge the owner just heard from (its first open).
func (n *Node) heard(edge string) {
	n.mu.Lock()
	if _, ok := n.seen[edge]; !ok {
		n.seen[edge] = time.Now()
	}
	n.mu.Unlock()
}

// reapEdges ends the sessions of peers whose edge has been silent a TTL.
func (n *Node) reapEdges(now time.Time) {
	n.mu.Lock()
	lost := make(map[string]bool)
	for id, at := range n.seen {
		if id != n.id && now.Sub(at) > n.ttl {
			lost[id] = true
		}
	}
	owned := make([]*Owned, 0, len(n.owned))
	for _, o := range n.owned {
		owned = append(owned, o)
	}
	var orphans []*Link // links to an owner that went silent
	if len(lost) > 0 {
		for _, l := range n.links {
			if lost[l.owner] {
				orphans = append(orphans, l)
			}
		}
	}
	n.mu.Unlock()
	if len(lost) == 0 {
		return
	}
	// An owner that died left its streams' last state with every server:
	// its peers here wait for the next owner, which adopts them
	// (handover.go). Without a state (single-server streams, or one that
	// ended) their connections end, and they join again.
	closed := 0
	for _, l := range orphans {
		if n.HasState(l.stream) {
			n.orphan(l.stream, l.owner)
			continue
		}
		if n.drop(l) {
			l.once.Do(l.closed)
			closed++
		}
	}
	if closed > 0 {
		n.log.Warn("owner lost: its peers' connections here closed", "peers", closed)
	}
	for _, o := range owned {
		var gone []Peer
		o.mu.Lock()
		for id, p := range o.peers {
			if lost[p.Remote().edge] {
				gone = append(gone, p)
				delete(o.peers, id)
			}
		}
		o.mu.Unlock()
		for _, p := range gone {
			p.Remote().done.Store(true)
			p.Closed(EdgeLost)
		}
		if len(gone) > 0 {
			n.log.Warn("edge lost: its peers' sessions ended", "stream", o.stream, "peers", len(gone))
		}
	}
}
