package main

import (
	"errors"
	"time"

	"golang.org/x/time/rate"

	"canopy/mesh/protocol"
)

// Signaling budgets. A connection's own budget (Limits.MessageRate) covers
// what it asks of the server: hello, reports, capacity changes, and signals
// to peers it is not connected to. Signals along its own tree edges (a
// parent's offer and candidates to each child, a child's answer and
// candidates to its parent) are bounded per edge and per receiving peer
// instead, so a parent with many short-lived children is never cut off for
// serving them; a hard ceiling on every message stops a flood.

// Errors of the signal budgets; all but errSignalLate map to
// protocol.CodeRateLimited.
var (
	// errSignalLate means a signal was for a peer that was this one's tree
	// neighbour moments ago (a child that left while its parent's offer was
	// on the way): it is dropped without a word.
	errSignalLate = errors.New("signal to a peer that just left")
	// errEdgeBudget means a peer sent more along one tree edge than an ICE
	// negotiation needs.
	errEdgeBudget = errors.New("too many signals on this edge")
	// errPeerBusy means the receiving peer's signaling queue is half full:
	// the signal is dropped rather than the receiver cut off.
	errPeerBusy = errors.New("the peer is not keeping up; signal dropped")
	// errMessageBudget means a connection sent more than its message budget.
	errMessageBudget = errors.New("too many messages; slow down")
)

// Budget figures.
const (
	// DefaultCeilingRate and DefaultCeilingBurst bound every message one
	// connection sends, edge signals included. A source feeding 64
	// children (the Go cap) that all turn over at once sends ~64 × 12
	// signals; a flood past the ceiling counts as bad messages.
	DefaultCeilingRate  = 1000
	DefaultCeilingBurst = 2000
	// badForgiven is how long it takes for one bad message to be forgiven:
	// maxBadMessages in a row disconnect, one now and then never does.
	badForgiven = 10 * time.Second
	// replyRate bounds the error replies to refused signals, so a peer
	// that overruns a budget gets told without its own queue filling up.
	replyRate, replyBurst = 5, 10
	// edgeDescriptions bounds the SDP descriptions one side of an edge may
	// send: one offer or answer, and a few renegotiations, refilled every
	// edgeDescriptionEvery.
	edgeDescriptions     = 4
	edgeDescriptionEvery = 5 * time.Second
	// inboundRate and inboundBurst bound the signals forwarded to one peer
	// from all its neighbours: 64 children answering at once with a dozen
	// candidates each fit in the burst.
	inboundRate, inboundBurst = 500, 1000
	// forwardHeadroom is how much of a peer's send buffer forwarded
	// signals may fill; the rest is kept for the server's own messages
	// (attach, parent, detach, errors), so a peer is never disconnected
	// because others sent it too much.
	forwardHeadroom = sendBuffer / 2
	// lateSignalGrace is how long a tree edge that ended is remembered, so
	// that signals still on their way along it are dropped quietly: ICE
	// gathering through TURN retransmits for a few seconds at most.
	lateSignalGrace = 10 * time.Second
	// maxRecentEdges bounds that memory per stream and generation (~100
	// bytes an edge): 400 edges ending every second for a whole grace
	// period, more than the join limits let a crowd of addresses churn.
	maxRecentEdges = 4096
)

// sessionBudget is what one connection may send. Only its session goroutine
// uses it.
type sessionBudget struct {
	ceiling *rate.Limiter // every message; nil: unlimited
	msgs    *rate.Limiter // all but edge signals; nil: unlimited
	replies *rate.Limiter // error replies about refused signals
	bad     leakyCount
}

func newSessionBudget(l Limits) *sessionBudget {
	b := &sessionBudget{msgs: l.messageLimiter(), replies: rate.NewLimiter(replyRate, replyBurst)}
	if l.CeilingRate >= 0 {
		b.ceiling = rate.NewLimiter(rate.Limit(l.CeilingRate), max(l.CeilingBurst, 1))
	}
	return b
}

// frame admits one message read from the socket against the hard ceiling.
func (b *sessionBudget) frame() bool { return b.ceiling == nil || b.ceiling.Allow() }

// message admits one message that is not a signal to a tree neighbour.
func (b *sessionBudget) message() bool { return b.msgs == nil || b.msgs.Allow() }

// reply reports whether a refused signal may be answered with an error.
func (b *sessionBudget) reply() bool { return b.replies.Allow() }

// badMessage records a bad message and reports whether the peer has now
// sent too many of them recently.
func (b *sessionBudget) badMessage() bool {
	return b.bad.add(time.Now(), badForgiven) >= maxBadMessages
}

// leakyCount is a counter that loses one every `every`: a leaky bucket.
type leakyCount struct {
	level float64
	last  time.Time
}

// add counts one at now and returns the level after it.
func (c *leakyCount) add(now time.Time, every time.Duration) float64 {
	if !c.last.IsZero() {
		c.level = max(0, c.level-float64(now.Sub(c.last))/float64(every))
	}
	c.last = now
	c.level++
	return c.level
}

// edgeBudget is what one peer may still send along one tree edge.
type edgeBudget struct {
	candidates int
	descs      *rate.Limiter
}

// signalBudgets is one peer's forwarding budgets: along each edge it sends
// on (by neighbour), and for what its neighbours send it. Guarded by its
// coordinator's mu.
type signalBudgets struct {
	edges   map[string]*edgeBudget
	inbound *rate.Limiter
}

// forward admits a signal from p to its neighbour `to`, or says why not.
// Called with the coordinator's mu held.
func forward(p, to *peerConn, sig *protocol.Signal, now time.Time) error {
	e := p.budgets.edge(to.id)
	switch sig.Kind {
	case protocol.SignalCandidate:
		if e.candidates >= protocol.MaxEdgeCandidates {
			return errEdgeBudget
		}
	default:
		if !e.descs.AllowN(now, 1) {
			return errEdgeBudget
		}
	}
	if to.out.len() >= forwardHeadroom {
		return errPeerBusy
	}
	if to.budgets.inbound == nil {
		to.budgets.inbound = rate.NewLimiter(inboundRate, inboundBurst)
	}
	if !to.budgets.inbound.AllowN(now, 1) {
		return errPeerBusy
	}
	if sig.Kind == protocol.SignalCandidate {
		e.candidates++
	}
	return nil
}

func (b *signalBudgets) edge(to string) *edgeBudget {
	if b.edges == nil {
		b.edges = make(map[string]*edgeBudget)
	}
	e := b.edges[to]
	if e == nil {
		e = &edgeBudget{descs: rate.NewLimiter(rate.Every(edgeDescriptionEvery), edgeDescriptions)}
		b.edges[to] = e
	}
	return e
}

// resetEdge forgets what was sent along an edge to `to`: it ended, or it is
// made anew (a new connection, a new negotiation).
func (b *signalBudgets) resetEdge(to string) { delete(b.edges, to) }

// recentEdges remembers tree edges that ended in the last lateSignalGrace
// (to 2×), in two generations of bounded size.
type recentEdges struct {
	cur, prev map[[2]string]bool
	rotated   time.Time
}

func edgeKey(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// add records that the edge between a and b ended at now.
func (r *recentEdges) add(a, b string, now time.Time) {
	if r.cur == nil || now.Sub(r.rotated) > lateSignalGrace || len(r.cur) >= maxRecentEdges {
		r.prev, r.cur, r.rotated = r.cur, make(map[[2]string]bool), now
	}
	r.cur[edgeKey(a, b)] = true
}

// has reports whether the edge between a and b ended recently.
func (r *recentEdges) has(a, b string, now time.Time) bool {
	k := edgeKey(a, b)
	if now.Sub(r.rotated) > 2*lateSignalGrace {
		return false
	}
	return r.cur[k] || (now.Sub(r.rotated) <= lateSignalGrace && r.prev[k])
}

// relaySignal forwards one of p's signals and answers p when it is refused. A
// signal to a peer that is not p's neighbour counts against p's message
// budget and as a bad message; one over an edge's or a receiver's budget is
// only dropped. It reports whether p has now sent too many bad messages.
func relaySignal(coord *coordinator, p *peerConn, m *protocol.Message, b *sessionBudget) (tooBad bool) {
	err := coord.signal(p, m)
	switch {
	case err == nil, errors.Is(err, errSignalLate):
		return false
	case errors.Is(err, errNotNeighbour):
		b.message()
		p.send(protocol.Errorf(protocol.CodeNotNeighbour, "signal to %s: %v", m.Peer, err))
		return b.badMessage()
	default:
		if b.reply() {
			p.send(protocol.Errorf(errorCode(err), "signal to %s: %v", m.Peer, err))
		}
		return false
	}
}
