package main

import (
	"errors"
	"fmt"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Hot standby parents (README "Standby parents"). Every Go peer below the
// source's children holds a second connection, to its standby parent: the
// parent the tree would give it if its own parent failed now
// (tree.Standby), negotiated like a tree edge, up but carrying no media.
// When its parent fails, the child switches to that link at once and says
// `promote`; when the server notices first (the parent's WebSocket
// closed), its new plan is the standby edge anyway and it sends the
// standby parent `promote` itself. Either way nothing is negotiated.

// standbyPerSlot bounds the standby links a parent holds: two per child
// slot. A relay's standby children are the orphans-to-be of its siblings
// and of its children's siblings; twice its capacity covers the usual
// plan (its own slot's share of two failing neighbours) and bounds what a
// parent spends on links that may never carry media: each costs a
// PeerConnection, ICE consent checks every few seconds and no RTP.
const standbyPerSlot = 2

// standbyLinks is the coordinator's record of standby edges. Guarded by the
// coordinator's mu.
type standbyLinks struct {
	of   map[string]string          // child → its standby parent
	held map[string]map[string]bool // standby parent → its standby children
	// wanting are the Go peers whose last plan found no standby: a slot
	// that opens later (a parent proving itself, a leave elsewhere) is not
	// a change near them, so they are retried a few at a time.
	wanting map[string]bool
}

// standbyAncestorWalk bounds how far up from a new parent replanStandbys
// looks for standby records that now point into the moved subtree: placement
// keeps proven trees within a few levels of log_k N (depth 9 at 10⁵ peers
// with k=4), while a chain of peers on trial, which never played, could
// make the walk as long as the stream. A record deeper than this that did
// go stale is harmless: every use checks it again (tree.Adopt refuses a
// descendant, and the planner never places a node below one).
const standbyAncestorWalk = 64

// standbyRetries bounds how many peers without a standby each replan
// retries: the plan is one departure plan each (a few µs), and joins,
// moves and live reports come often enough to reach them all. With 32, a
// stream of 20 000 Go peers that never proved themselves (so most had no
// standby to find) spent ~45 µs per join on standby planning.
const standbyRetries = 16

func (s *standbyLinks) want(child string, none bool) {
	if s.wanting == nil {
		s.wanting = make(map[string]bool)
	}
	if none {
		s.wanting[child] = true
	} else {
		delete(s.wanting, child)
	}
}

func (s *standbyLinks) set(child, parent string) {
	if s.of == nil {
		s.of, s.held = make(map[string]string), make(map[string]map[string]bool)
	}
	s.of[child] = parent
	if s.held[parent] == nil {
		s.held[parent] = make(map[string]bool)
	}
	s.held[parent][child] = true
}

// drop forgets child's standby edge and returns the parent it had.
func (s *standbyLinks) drop(child string) string {
	parent, ok := s.of[child]
	if !ok {
		return ""
	}
	delete(s.of, child)
	delete(s.held[parent], child)
	if len(s.held[parent]) == 0 {
		delete(s.held, parent)
	}
	return parent
}

// standbyCapable reports whether p takes part in hot standby: Go peers do
// (browsers hold no standby links yet, and ignore the messages).
func standbyCapable(p *peerConn) bool {
	return p != nil && p.hello != nil && p.hello.Kind == protocol.KindGo
}

// planStandby is the standby parent child should hold a link to now, or "".
// tree.Standby never names the child's own descendant (it plans the real
// departure, which places nobody below themselves; the tree's property
// tests and TestStandbyPlanProperty check it). Called with c.mu held.
func (c *coordinator) planStandby(child string, plans standbyPlans) string {
	if !standbyCapable(c.peers[child]) {
		return ""
	}
	s := plans.of(c.tree, child)
	if s == "" || !standbyCapable(c.peers[s]) {
		return ""
	}
	if parent, _ := c.tree.Parent(child); s == parent || c.moving[child] == s {
		return "" // an edge between them is up already; plan again when it ends
	}
	limit := standbyPerSlot * c.tree.Capacity(s)
	if held := c.standby.held[s]; (!held[child] && len(held) >= limit) || len(held) > limit {
		return "" // s holds all the standby links it may (its capacity may have dropped)
	}
	return s
}

// mayWantStandby reports whether child, without a standby now, could get
// one without a change near it: a Go peer placed below the source's
// children (the source's children wait for a new source if it fails; a
// queued peer is planned again when it is placed). Called with c.mu held.
func (c *coordinator) mayWantStandby(child string) bool {
	parent, placed := c.tree.Parent(child)
	return placed && parent != "" && parent != c.tree.Source() && standbyCapable(c.peers[child])
}

// standbyPlans memoizes departure plans by parent within one replan:
// siblings share their parent's plan (tree.StandbysOf), so a parent with 64
// children is planned once, not 64 times.
type standbyPlans map[string]map[string]string

func (m standbyPlans) of(t *tree.Tree, child string) string {
	parent, placed := t.Parent(child)
	if !placed || parent == "" {
		return ""
	}
	plan, ok := m[parent]
	if !ok {
		plan = t.StandbysOf(parent)
		m[parent] = plan
	}
	return plan[child]
}

// heldBy lists the children id holds standby links for. Called with c.mu
// held.
func (c *coordinator) heldBy(id string) []string {
	kids := make([]string, 0, len(c.standby.held[id]))
	for k := range c.standby.held[id] {
		kids = append(kids, k)
	}
	return kids
}

// replanStandbys gives each peer the tree's changes may have affected the
// standby it should have, and tells both sides of every edge that changes:
// the child first (`standby` with its standby parent), so that it expects
// the parent's offer, then the parent (`standby` with the child). Affected
// are the nodes that moved and their children (their parent's departure
// plan changed), the old and new parents' children (siblings: the heir and
// free slots changed), the children whose standby parent gained a child
// (it may be full now) and the ancestors of every new parent (a standby of
// theirs may now be their descendant). Called with c.mu held.
func (c *coordinator) replanStandbys(changes []tree.Change, extra ...string) {
	todo := make(map[string]bool)
	add := func(ids ...string) {
		for _, id := range ids {
			if id != "" {
				todo[id] = true
			}
		}
	}
	add(extra...)
	for _, ch := range changes {
		add(ch.Node)
		add(c.tree.Children(ch.Node)...)
		for _, p := range []string{ch.From, ch.To} {
			if p == "" {
				continue
			}
			add(c.tree.Children(p)...)
			for k := range c.standby.held[p] {
				add(k)
			}
		}
		hops := 0
		for a, ok := ch.To, ch.To != ""; ok && a != "" && hops < standbyAncestorWalk; a, ok = c.tree.Parent(a) {
			if c.standby.of[a] != "" {
				add(a)
			}
			hops++
		}
	}
	plans := make(standbyPlans)
	for id := range todo {
		c.restandby(id, c.planStandby(id, plans))
	}
	retries := 0
	for id := range c.standby.wanting {
		if retries == standbyRetries {
			break
		}
		if !todo[id] {
			retries++
			c.restandby(id, c.planStandby(id, plans))
		}
	}
}

// restandby makes want child's standby parent, telling whoever the change
// concerns. Called with c.mu held.
func (c *coordinator) restandby(child, want string) {
	c.standby.want(child, want == "" && c.mayWantStandby(child))
	cur, had := c.standby.of[child]
	if had && cur == want {
		return
	}
	now := time.Now()
	if had {
		c.standby.drop(child)
		c.ended.add(cur, child, now)
		if q := c.peerOrDeparted(cur); q != nil {
			q.budgets.resetEdge(child)
			q.send(&protocol.Message{Type: protocol.TypeDetach, Peer: child})
		}
	}
	p := c.peers[child]
	if p == nil {
		return
	}
	if want == "" {
		if had {
			p.send(&protocol.Message{Type: protocol.TypeStandby})
		}
		return
	}
	s := c.peers[want]
	if s == nil {
		return
	}
	c.standby.set(child, want)
	p.budgets.resetEdge(want)
	s.budgets.resetEdge(child)
	p.send(&protocol.Message{Type: protocol.TypeStandby, Standby: want})
	s.send(&protocol.Message{Type: protocol.TypeStandby, Peer: child})
}

// forgetStandbys drops the standby edge of a peer that left the tree, and
// returns the children it held standby links for, to plan again once the
// tree has changed. Called with c.mu held.
func (c *coordinator) forgetStandbys(id string) []string {
	c.standby.want(id, false)
	if s := c.standby.drop(id); s != "" {
		c.ended.add(s, id, time.Now())
		if q := c.peerOrDeparted(s); q != nil {
			q.budgets.resetEdge(id)
			q.send(&protocol.Message{Type: protocol.TypeDetach, Peer: id})
		}
	}
	return c.heldBy(id)
}

// attachOrPromote tells a new parent about its child: `promote` when the
// child holds a standby link to it (media starts on that link, nothing is
// negotiated), `attach` otherwise (a new connection). Called with c.mu held.
func (c *coordinator) attachOrPromote(parent, child *peerConn) {
	if c.standby.of[child.id] == parent.id {
		c.standby.drop(child.id)
		parent.send(&protocol.Message{Type: protocol.TypePromote, Peer: child.id})
		return
	}
	parent.budgets.resetEdge(child.id) // a new connection, negotiated afresh
	child.budgets.resetEdge(parent.id)
	parent.send(&protocol.Message{Type: protocol.TypeAttach, Peer: child.id})
}

// preferStandbys amends the changes of a departure: an orphan the plan put
// elsewhere than its standby parent (whose free slot was taken since its
// standby was planned, say) moves to its standby instead when that parent
// can still take it, so that it needs no negotiation. The changes are then
// merged per node (its first From, its last To). Called with c.mu held.
func (c *coordinator) preferStandbys(changes []tree.Change) []tree.Change {
	out := changes
	for _, ch := range changes {
		s := c.standby.of[ch.Node]
		if s == "" || ch.To == "" || ch.To == s {
			continue
		}
		more, err := c.tree.Adopt(ch.Node, s)
		if err != nil {
			continue // the plan stands: the server moves it, make before break
		}
		out = append(out, more...)
	}
	if len(out) == len(changes) {
		return changes
	}
	return mergeChanges(out)
}

// mergeChanges folds successive changes of one node into one, in the order
// nodes first appear, and drops those that end where they began.
func mergeChanges(changes []tree.Change) []tree.Change {
	idx := make(map[string]int)
	var merged []tree.Change
	for _, ch := range changes {
		if i, ok := idx[ch.Node]; ok {
			merged[i].To = ch.To
			continue
		}
		idx[ch.Node] = len(merged)
		merged = append(merged, ch)
	}
	out := merged[:0]
	for _, ch := range merged {
		if ch.From != ch.To {
			out = append(out, ch)
		}
	}
	return out
}

// promote handles a child's report that its parent failed and that it now
// plays from its standby parent s. The server stays authoritative: the
// standby edge becomes the tree edge when s is still p's standby and has a
// free slot (tree.Adopt); otherwise the report counts as a stall report
// about the old parent, and p is told its parent is still the old one
// (it keeps its standby link and reports the stall until it is moved).
func (c *coordinator) promote(p *peerConn, s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peers[p.id] != p {
		return
	}
	parent, placed := c.tree.Parent(p.id)
	if placed && parent == s {
		return // the server's plan came first and already made it so
	}
	err := errNotStandby
	if c.silentFromAbove(parent) {
		err = errParentRecovers
	} else if c.standby.of[p.id] == s {
		var changes []tree.Change
		if changes, err = c.tree.Adopt(p.id, s); err == nil {
			c.log.Info("child switched to its standby parent", "peer", p.id, "from", parent, "standby", s)
			c.apply(changes)
			return
		}
	}
	c.log.Info("standby switch refused", "peer", p.id, "parent", parent, "standby", s, "err", err)
	if !placed || parent == "" {
		return // queued, the source, or below a vacant root: no parent to go back to
	}
	p.send(&protocol.Message{Type: protocol.TypeParent, Peer: parent, Depth: c.tree.Depth(p.id), Standby: c.standby.of[p.id]})
	c.stalled(p.id, parent)
}

// Reasons a standby switch is refused.
var (
	// errNotStandby means a child promoted a peer that is not its standby.
	errNotStandby = errors.New("not the child's standby parent")
	// errParentRecovers means the child's parent is silent because its own
	// parent is: moving the child would not bring media back sooner.
	errParentRecovers = errors.New("the parent itself is recovering")
)

// silentFromAbove reports whether parent just moved, or the media broke
// above it (the trust policy's brokenAbove: it reported its own parent, or
// a sibling did): its children's silence is its recovery, under way, and
// a switch of theirs would be churn (the whole stream pausing would move
// every Go peer at depth 2 and below every stallTimeout). Called with c.mu
// held.
func (c *coordinator) silentFromAbove(parent string) bool {
	now := time.Now()
	return now.Sub(c.movedAt[parent]) < stallGrace || c.brokenAbove(parent, now)
}

// checkStandbys verifies the standby records against the tree: every
// standby edge joins two connected, placed peers, is not a tree edge, and
// never points into the child's own subtree; both maps agree; and no
// parent holds more than its share. Tests call it.
func (c *coordinator) checkStandbys() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for child, s := range c.standby.of {
		switch parent, placed := c.tree.Parent(child); {
		case c.peers[child] == nil || c.peers[s] == nil:
			return fmt.Errorf("standby %s of %s: not both connected", s, child)
		case !placed || c.tree.Depth(s) < 0:
			return fmt.Errorf("standby %s of %s: not both placed", s, child)
		case parent == s:
			return fmt.Errorf("standby %s of %s is its parent", s, child)
		case c.tree.Under(s, child):
			return fmt.Errorf("standby %s of %s is its own descendant", s, child)
		case !c.standby.held[s][child]:
			return fmt.Errorf("standby %s of %s not recorded at the parent", s, child)
		}
		n++
	}
	held := 0
	for s, kids := range c.standby.held {
		if len(kids) > standbyPerSlot*c.tree.Capacity(s) {
			return fmt.Errorf("%s holds %d standby links, capacity %d", s, len(kids), c.tree.Capacity(s))
		}
		held += len(kids)
	}
	if held != n {
		return fmt.Errorf("%d standby edges by child, %d by parent", n, held)
	}
	return nil
}
