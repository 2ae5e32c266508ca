package main

import (
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Trust and stall policy: which peers the coordinator lets feed children,
// and what a report that a parent stalled costs that parent. Peers earn
// their children (tree.Trust): none until they play from their own parent,
// one on trial, their capacity once a child plays from them. Reports are
// weighed by evidence: a child that played from its parent and stopped is a
// witness; one that never received anything from anybody is itself suspect.
// See README "Self-healing".

// Timings of the trust policy; each a few times the detection delays of
// the peers (Go: 1.5 s without media, repeated every 3 s; browsers: 5 s to
// connect, 10 s to a first frame, repeated every 3 s).
const (
	// playTimeout is how long a peer may hold a place without playing from
	// its parent or complaining about it; past it the peer is barred: no
	// children, and its place goes to a peer with nowhere else to go.
	playTimeout = 15 * time.Second
	// probationBase is how long a parent stripped of its children waits
	// before it gets one child again; it doubles with each strip, up to
	// probationMax.
	probationBase = 10 * time.Second
	probationMax  = 160 * time.Second
	// upstreamGrace is how long a parent's own report of its parent
	// shields it from its children's reports: long enough for the server to
	// act upstream, not so long that a lying parent starves them.
	upstreamGrace = 10 * time.Second
	// blameDelay is how long a majority of witnesses waits before it
	// strips their parent: when the break is further up, the parent's own
	// report (or its siblings') arrives within a watchdog period of theirs,
	// in no particular order.
	blameDelay = 2 * time.Second
	// blindReports is how many parents a child that never played from
	// anybody may report before its reports stop counting.
	blindReports = 2
	// maxPlayedFrom bounds the parents remembered per child.
	maxPlayedFrom = 16
)

// Weights of a report against a parent that has never delivered to anyone.
const (
	witnessWeight = 1.0 // the child played from another parent: it can receive
	blindWeight   = 0.5 // the child never played from anybody
)

// trustBook is the coordinator's record of who delivered to whom. Guarded
// by the coordinator's mu.
type trustBook struct {
	played     map[string]map[string]bool // child → parents it played from
	everPlayed map[string]bool            // children that played from anybody
	blind      map[string]map[string]bool // never-played child → parents it reported
	strikes    map[string]float64         // unproven parent → weight of reports it never delivered
	banned     map[string]bool            // never delivered: no children for the rest of its session
	probation  map[string]bool            // stripped or struck: waits to get a child again
	strips     map[string]int             // times a parent was stripped or struck (probation doubles)
	upstream   map[string]time.Time       // parent → when its own upstream report first shielded it
	onlineAt   time.Time                  // when the current source joined
}

func newTrustBook() trustBook {
	return trustBook{
		played:     make(map[string]map[string]bool),
		everPlayed: make(map[string]bool),
		blind:      make(map[string]map[string]bool),
		strikes:    make(map[string]float64),
		banned:     make(map[string]bool),
		probation:  make(map[string]bool),
		strips:     make(map[string]int),
		upstream:   make(map[string]time.Time),
	}
}

// forget drops what the book knows about a peer that left.
func (b *trustBook) forget(id string) {
	delete(b.played, id)
	delete(b.everPlayed, id)
	delete(b.blind, id)
	delete(b.strikes, id)
	delete(b.banned, id)
	delete(b.probation, id)
	delete(b.strips, id)
	delete(b.upstream, id)
}

func (b *trustBook) playedFrom(child, parent string) bool { return b.played[child][parent] }

// setTrust changes a peer's trust in the tree and signals the moves.
func (c *coordinator) setTrust(id string, level tree.Trust, why string) {
	before := c.tree.Usable(id)
	slotless := before == 0
	changes, err := c.tree.SetTrust(id, level)
	if err != nil {
		c.log.Warn("set trust", "peer", id, "trust", level, "err", err)
		return
	}
	c.log.Info("trust changed", "peer", id, "trust", level, "why", why, "moves", len(changes))
	if len(changes) == 0 && slotless && c.tree.Usable(id) == 0 {
		// A peer without slots before and after (a leaf viewer that
		// played) is nothing to any plan: ranks and slots read trust
		// only through usable slots. Re-planning here flushed the
		// joins' standby batch at every viewer's first live report.
		c.refreshVerify()
		return
	}
	if c.tree.Usable(id) >= before {
		// Slots only opened (a peer that played, a relay a child plays
		// from): every standby record still fits, and what the moves
		// broke apply's replanStandbys checks, so the re-plan may wait
		// for the joins' batch. At 30 000 peers over 3 servers these
		// re-plans, made at once, were 30 % of the owner's CPU: every
		// relay of a ramp proving itself planned its family's departures.
		defer c.batchStandbys()()
	}
	c.apply(changes)
}

// onLive records that child plays from parent, its parent in the tree: the
// child has played (it may feed one child), and the parent has shown it
// forwards (its full capacity). Called with c.mu held.
func (c *coordinator) onLive(child, parent string) {
	b := &c.trust
	if b.played[child] == nil {
		b.played[child] = make(map[string]bool)
	}
	if len(b.played[child]) >= maxPlayedFrom {
		clear(b.played[child])
	}
	if !b.played[child][parent] {
		c.markPeer(child)
	}
	b.played[child][parent] = true
	b.everPlayed[child] = true
	delete(b.blind, child)
	if tr, _ := c.tree.Trust(child); (tr == tree.TrustNew || tr == tree.TrustBarred) && !b.banned[child] && !b.probation[child] {
		c.setTrust(child, tree.TrustPlayed, "plays from its parent")
	}
	if c.source != nil && parent == c.source.id {
		return
	}
	if tr, _ := c.tree.Trust(parent); (tr == tree.TrustNew || tr == tree.TrustPlayed) && !b.banned[parent] {
		delete(b.strikes, parent)
		c.setTrust(parent, tree.TrustProven, "a child plays from it")
	}
}

// watchPlay bars child if it has not played from parent, nor reported it,
// playTimeout after it was placed there (at): a peer that answers pings but
// never connects media must not keep a place another peer could play in.
func (c *coordinator) watchPlay(child, parent string, at time.Time, after time.Duration) {
	time.AfterFunc(after, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.removed || c.peers[child] == nil || c.source == nil || !c.movedAt[child].Equal(at) {
			return // gone, offline, or moved since (a newer watch runs)
		}
		if cur, ok := c.tree.Parent(child); !ok || cur != parent || c.trust.playedFrom(child, parent) {
			return
		}
		if wait := playTimeout - time.Since(c.trust.onlineAt); wait > 0 {
			c.watchPlay(child, parent, at, wait) // the source came back lately: give it time
			return
		}
		if c.complains(child, parent) {
			return // the stall policy deals with its parent
		}
		if tr, _ := c.tree.Trust(child); tr != tree.TrustBarred {
			c.log.Info("peer never played from its parent", "peer", child, "parent", parent, "after", playTimeout)
			c.setTrust(child, tree.TrustBarred, "never played")
		}
	})
}

// playedFromByOthers reports whether a child of parent other than child
// played from it.
func (c *coordinator) playedFromByOthers(parent, child string) bool {
	for _, k := range c.tree.Children(parent) {
		if k != child && c.trust.playedFrom(k, parent) {
			return true
		}
	}
	return false
}

// complains reports whether child reported parent stalled lately, in a way
// that makes its silence the parent's fault: a child of the source that
// others play from has no excuse.
func (c *coordinator) complains(child, parent string) bool {
	t, ok := c.stalls[parent][child]
	if !ok || time.Since(t) > stallWindow {
		return false
	}
	if c.source == nil || parent != c.source.id {
		return true
	}
	return !c.playedFromByOthers(parent, child)
}

// stalled handles a child's report that its parent's media stopped (or
// never came) while the parent's signaling is still up: a hung, lying or
// overloaded peer, or a broken path. The first hop where the media broke
// is blamed: a parent that itself reports its own parent, or whose
// siblings report that parent too, is not. Then the evidence decides:
//   - the child played from this parent and stopped (a witness): when at
//     least half of the parent's children are witnesses within
//     stallWindow, the parent is stripped of its children (held) and gets
//     one child again after a probation that doubles each time;
//   - the parent never delivered to anyone: the report is a strike,
//     weighed by the child's own record (it played elsewhere: 1; it never
//     played from anybody: 0.5, and nothing after blindReports parents).
//     At 1 the parent is barred for the rest of its session; below, it is
//     barred for a probation. Either way the child moves;
//   - the parent delivers to others but never did to this child: the path
//     between them is broken; the child moves, the parent pays nothing.
//     With nowhere else for it to go, the parent offers it a new
//     connection instead (renewEdge).
//
// Called with c.mu held.
func (c *coordinator) stalled(reporter, parent string) {
	if cur, ok := c.tree.Parent(reporter); !ok || cur != parent || c.source == nil {
		return // stale report, or the whole stream is offline
	}
	now := time.Now()
	if parent != c.source.id && now.Sub(c.movedAt[parent]) < stallGrace {
		c.log.Debug("stall report while the parent itself recovers", "peer", reporter, "parent", parent)
		return
	}
	reports := c.stalls[parent]
	if reports == nil {
		reports = make(map[string]time.Time)
		c.stalls[parent] = reports
	}
	reports[reporter] = now
	// A report older than stallWindow weighs nothing (complains, majority,
	// brokenAbove): drop those, or a long-lived parent, the source above
	// all, keeps one entry for every child that ever reported it, peers
	// long gone included.
	for k, t := range reports {
		if now.Sub(t) > stallWindow {
			delete(reports, k)
		}
	}
	if parent == c.source.id {
		if !c.trust.playedFrom(reporter, parent) && c.playedFromByOthers(parent, reporter) {
			// Its connection never came up (a negotiation lost with the
			// owner that placed it, one that went wrong): the source's
			// children have nowhere else to go.
			c.renewEdge(parent, reporter, now)
			return
		}
		c.log.Warn("child reports the source stalled", "peer", reporter)
		return
	}
	if c.brokenAbove(parent, now) {
		c.log.Info("stall blamed upstream of the reported parent", "peer", reporter, "parent", parent)
		return
	}
	switch tr, _ := c.tree.Trust(parent); {
	case c.trust.playedFrom(reporter, parent):
		c.witnessed(reporter, parent, now)
	case tr != tree.TrustProven:
		c.strike(reporter, parent)
	default:
		changes, err := c.tree.Reattach(reporter)
		if err != nil {
			c.log.Warn("reattach", "peer", reporter, "err", err)
			return
		}
		if len(changes) == 0 {
			c.renewEdge(parent, reporter, now)
			return
		}
		c.log.Info("child cannot receive from a parent that delivers to others; moving the child", "peer", reporter, "parent", parent, "moves", len(changes))
		c.apply(changes)
	}
}

// edgeRenewEvery bounds how often a child's connection to its parent is
// made anew (renewEdge): a new connection has that long to deliver before
// the next one replaces it.
const edgeRenewEvery = 10 * time.Second

// renewEdge has parent offer child a new connection: the child cannot
// receive from a parent that delivers to others, and the tree has nowhere
// else to put it. A connection that never came up (a negotiation that went
// wrong, a path ICE gave up on) is the likeliest cause, and each side takes
// the new link's offer for a new connection (protocol.Signal.Link). Called
// with c.mu held.
func (c *coordinator) renewEdge(parentID, childID string, now time.Time) {
	parent, child := c.peers[parentID], c.peers[childID]
	if parent == nil || child == nil || now.Sub(child.edgeRenewed) < edgeRenewEvery {
		return
	}
	child.edgeRenewed = now
	c.log.Info("child cannot receive from a parent that delivers to others, and has nowhere else to go; the parent offers a new connection",
		"peer", childID, "parent", parentID)
	parent.budgets.resetEdge(childID)
	child.budgets.resetEdge(parentID)
	parent.send(&protocol.Message{Type: protocol.TypeAttach, Peer: childID, Strip: c.stripFor(parentID, childID)})
}

// brokenAbove reports whether the media broke above parent: another child
// of parent's parent that played from it reports it too, or parent itself
// reported its parent (believed for upstreamGrace, renewed by nothing).
func (c *coordinator) brokenAbove(parent string, now time.Time) bool {
	up, ok := c.tree.Parent(parent)
	if !ok || up == "" {
		return false
	}
	recent := func(child string) bool {
		t, ok := c.stalls[up][child]
		return ok && now.Sub(t) < stallWindow
	}
	for _, k := range c.tree.Children(up) {
		if k != parent && recent(k) && c.trust.playedFrom(k, up) {
			return true
		}
	}
	if !recent(parent) {
		delete(c.trust.upstream, parent)
		return false
	}
	first, ok := c.trust.upstream[parent]
	if !ok {
		first = now
		c.trust.upstream[parent] = now
	}
	return now.Sub(first) < upstreamGrace
}

// witnessed weighs a report by a child that played from parent: when at
// least half of parent's children are witnesses within stallWindow, parent
// is stripped. One flaky child cannot strip a healthy relay, and children
// that never received from it cannot strip it at all.
func (c *coordinator) witnessed(reporter, parent string, now time.Time) {
	if !c.majority(parent, now) {
		c.log.Info("child reports a stalled parent", "peer", reporter, "parent", parent)
		return
	}
	q := c.peers[parent]
	time.AfterFunc(blameDelay, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		now := time.Now()
		if c.removed || c.peers[parent] != q || c.trust.probation[parent] || c.brokenAbove(parent, now) || !c.majority(parent, now) {
			return
		}
		delete(c.stalls, parent)
		c.probate(parent, tree.TrustHeld, "its children stopped playing from it")
	})
}

// majority reports whether at least half of parent's children played from
// it and reported it stalled within stallWindow.
func (c *coordinator) majority(parent string, now time.Time) bool {
	kids := c.tree.Children(parent)
	witnesses := 0
	for _, k := range kids {
		if t, ok := c.stalls[parent][k]; ok && now.Sub(t) < stallWindow && c.trust.playedFrom(k, parent) {
			witnesses++
		}
	}
	return len(kids) > 0 && witnesses*2 >= len(kids)
}

// strike weighs a report against a parent that never delivered to anyone.
func (c *coordinator) strike(reporter, parent string) {
	b := &c.trust
	w := witnessWeight
	if !b.everPlayed[reporter] {
		if b.blind[reporter] == nil {
			b.blind[reporter] = make(map[string]bool)
		}
		b.blind[reporter][parent] = true
		w = blindWeight
		if len(b.blind[reporter]) > blindReports {
			w = 0 // it never receives from anybody: the fault is its own
		}
	}
	if w == 0 {
		// Not evidence, but the child must not stay stuck: move it, and if
		// nothing else fits, the unproven parent sits out a probation
		// (no strike, so such reports can never bar it for good).
		changes, _ := c.tree.Reattach(reporter)
		c.log.Info("report by a child that never played from anybody; moving it, not blaming", "peer", reporter, "parent", parent, "moves", len(changes))
		if len(changes) > 0 {
			c.apply(changes)
		} else if !b.probation[parent] {
			c.probate(parent, tree.TrustBarred, "its child cannot receive from it")
		}
		return
	}
	delete(c.stalls, parent)
	b.strikes[parent] += w
	if b.strikes[parent] >= 1 {
		b.banned[parent] = true
		delete(b.probation, parent)
		c.log.Warn("parent never delivered; no children for the rest of its session", "parent", parent, "reporter", reporter)
		c.setTrust(parent, tree.TrustBarred, "never delivered")
		return
	}
	c.probate(parent, tree.TrustBarred, "never delivered to its child")
}

// probate takes parent's children away now and gives it one child again
// after its probation: a parent that then delivers regains its capacity
// (onLive), one that does not is struck or stripped again, for longer.
func (c *coordinator) probate(parent string, level tree.Trust, why string) {
	b := &c.trust
	b.probation[parent] = true
	wait := probationBase << min(b.strips[parent], 4)
	wait = min(wait, probationMax)
	b.strips[parent]++
	c.setTrust(parent, level, why)
	q := c.peers[parent]
	time.AfterFunc(wait, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.removed || c.peers[parent] != q || !b.probation[parent] || b.banned[parent] {
			return
		}
		delete(b.probation, parent)
		c.setTrust(parent, tree.TrustPlayed, "probation over")
	})
}
