package main

import (
	"errors"
	"fmt"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Hot standby parents (README "Standby parents"). Every Go peer and
// browser below the source's children holds a second connection, to its standby parent: the
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
	// The re-plans that joins ask for are made together
	// (standby_batch.go): dirty are the peers a change may have affected
	// since the last plan, marks how many re-plans were folded into it,
	// timer the pending plan, batch whether the change under way may wait
	// for it, and delay how long it waits (0: every re-plan is made at once).
	dirty map[string]bool
	marks int
	timer *time.Timer
	batch bool
	delay time.Duration
	// changed hears of each child whose standby edge changed: the
	// stream's state records it (state.go).
	changed func(child string)
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

// standbySiblingReplan bounds the families whose standbys a change in one
// member's subtree replans: a browser feeds at most 2, and 4 keeps a wide
// Go relay's joins at the cost they had.
const standbySiblingReplan = 4

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
	if s.changed != nil {
		s.changed(child)
	}
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
	if s.changed != nil {
		s.changed(child)
	}
	delete(s.held[parent], child)
	if len(s.held[parent]) == 0 {
		delete(s.held, parent)
	}
	return parent
}

// standbyCapable reports whether p takes part in hot standby: Go peers and
// browsers (static/js/standby.js). A pass-through tab's idle link to a
// child-to-be is track-less and its worker writes nothing to it; a tab
// that relays by re-encoding (Firefox, Safari) holds senders without a
// track until promoted, so it encodes and sends nothing either; and as a
// child any tab answers its standby parent's offer and keeps the link up.
// A private viewer holds none: its links go through TURN, and an idle one
// would double what it costs the relay server.
func standbyCapable(p *peerConn) bool {
	if p == nil || p.hello == nil || p.private {
		return false
	}
	return p.hello.Kind == protocol.KindGo || p.hello.Kind == protocol.KindBrowser
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
		c.detachStandby(cur, child)
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
	s.send(&protocol.Message{Type: protocol.TypeStandby, Peer: child, Strip: c.stripFor(want, child)})
}

// forgetStandbys drops the standby edge of a peer that left the tree, and
// returns the children it held standby links for, to plan again once the
// tree has changed. Called with c.mu held.
func (c *coordinator) forgetStandbys(id string) []string {
	c.standby.want(id, false)
	if s := c.standby.drop(id); s != "" {
		c.ended.add(s, id, time.Now())
		c.detachStandby(s, id)
	}
	return c.heldBy(id)
}

// detachStandby tells standby parent s that its standby link to child
// ended. Not when child has become s's own parent since (the standby was
// dropped because it is now child's descendant): `detach` naming a peer's
// parent tells it to close its parent's connection, so s would cut off its
// live feed; its idle link's other end closes, and it drops it when its
// connection fails. Called with c.mu held.
func (c *coordinator) detachStandby(s, child string) {
	q := c.peerOrDeparted(s)
	if q == nil {
		return
	}
	q.budgets.resetEdge(child)
	if parent, ok := c.tree.Parent(s); ok && parent == child {
		return
	}
	q.send(&protocol.Message{Type: protocol.TypeDetach, Peer: child})
}

// attachOrPromote tells a new parent about its child: `promote` when the
// child holds a standby link to it (media starts on that link, nothing is
// negotiated), `attach` otherwise (a new connection). Called with c.mu held.
func (c *coordinator) attachOrPromote(parent, child *peerConn) {
	if c.standby.of[child.id] == parent.id {
		c.standby.drop(child.id)
		parent.send(&protocol.Message{Type: protocol.TypePromote, Peer: child.id, Strip: c.stripFor(parent.id, child.id)})
		return
	}
	parent.budgets.resetEdge(child.id) // a new connection, negotiated afresh
	child.budgets.resetEdge(parent.id)
	parent.send(&protocol.Message{Type: protocol.TypeAttach, Peer: child.id, Strip: c.stripFor(parent.id, child.id)})
}

// standbysOfChildren maps each of id's children that holds a standby link
// to its standby parent, for the departure plan (tree.LeaveVia). Called
// with c.mu held.
func (c *coordinator) standbysOfChildren(id string) map[string]string {
	var via map[string]string
	for _, k := range c.tree.Children(id) {
		if s := c.standby.of[k]; s != "" {
			if via == nil {
				via = make(map[string]string)
			}
			via[k] = s
		}
	}
	return via
}

// preferStandbys amends the changes of a shed (a relay's measured uplink
// dropped): a child the plan put elsewhere than its standby parent moves
// to its standby instead when that parent can still take it, so that it
// needs no negotiation. (A departure plans its orphans' standbys in the
// first place: tree.LeaveVia.) The changes are then
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
			c.log.Info("orphan not moved to its standby parent", "peer", ch.Node, "standby", s, "plan", ch.To, "err", err)
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
	if parent, ok := c.tree.Parent(p.id); ok {
		c.lostMedia(parent, p.id) // a suspended parent that crashed (suspend.go): its departure's plan first
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
	p.send(&protocol.Message{Type: protocol.TypeParent, Peer: parent, Depth: c.tree.Depth(p.id), Standby: c.standby.of[p.id], Verify: c.verifyFlag(p.id)})
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
	return now.Sub(c.movedAt[parent]) < stallGrace || c.brokenAbove(parent, now) || c.aboveSuspended(parent)
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
