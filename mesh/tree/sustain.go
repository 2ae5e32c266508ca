package tree

import "fmt"

// Capacity from measured uplink (README "Capacity from measured uplink").
// A node's declared capacity, clamped by policy, is the upper bound: what
// its owner consents to feed. The server measures what its upload
// sustains (its children's receiver reports) and bounds it further with
// SetSustain; usable capacity is the least of the three: declared, trust,
// sustain.

// usable is n's capacity as its trust and its measured upload allow.
func (t *Tree) usable(n *node) int {
	u := t.trustUsable(n)
	if n.measured && n != t.root {
		u = min(u, n.sustain)
	}
	return u
}

// held reports whether n's measured upload holds it below its declared
// capacity.
func held(n *node) bool { return n.measured && n.sustain < n.cap }

// SetSustain bounds id's usable capacity by what its measured upload
// sustains: k children, or no bound for k < 0. Children beyond the new
// usable capacity move elsewhere with their subtrees, lowest ranked first
// (viewers before relays), as with SetCapacity, but only as many as find
// a place: the bound is raised until nobody would be queued (Sustain
// returns the bound applied). A node that can sustain
// no child at all while it feeds some moves down the tree: its best child
// takes its place (as if it had left: the others go below that heir where
// it has room) and the node is placed again, a leaf, wherever a new node
// would go. Added room places queued nodes. The source is not bounded (a
// no-op): its slots are the stream's only way in.
func (t *Tree) SetSustain(id string, k int) ([]Change, error) {
	n := t.nodes[id]
	switch {
	case n == nil:
		return nil, fmt.Errorf("%w: %q", ErrUnknown, id)
	case n == t.root:
		return nil, nil
	}
	n.measured, n.sustain = k >= 0, max(k, 0)
	var ch []Change
	if k >= 0 && n.placed {
		if t.usable(n) == 0 && len(n.children) > 0 && t.rank(n.children)[0].use > 0 && !queues(t.planLeave(n), n) {
			t.sink(n, &ch)
			return ch, nil
		}
		// Shed only children that have somewhere to go: a child queued
		// is detached, which is worse than a congested parent.
		for n.sustain < len(n.children) && t.shedQueues(n) {
			n.sustain++
		}
	}
	t.refit(n, &ch)
	return ch, nil
}

// shedQueues reports whether shedding n's children beyond what n.sustain
// allows would queue anybody (a shed child, or a leaf evicted for one).
func (t *Tree) shedQueues(n *node) bool {
	use := t.usable(n)
	if len(n.children) <= use {
		return false
	}
	p := newPlanner(t)
	p.mark(n).delta = n.use - use // the planner sees n's slots as they will be
	excess := t.rank(n.children)[use:]
	for _, o := range excess {
		p.setPending(o, true)
	}
	p.placeAll(excess, nil)
	return queues(p, nil)
}

// queues reports whether plan p queues any node but except.
func queues(p *planner, except *node) bool {
	for _, mv := range p.moves {
		if mv.to == nil && mv.n != except {
			return true
		}
	}
	return false
}

// Sustain returns the bound SetSustain put on id (-1: none, or unknown id).
func (t *Tree) Sustain(id string) int {
	if n := t.nodes[id]; n != nil && n.measured {
		return n.sustain
	}
	return -1
}

// sink moves n, which can feed none of its children, below the tree's
// shallow slots: the departure plan for n runs (its heir takes its slot,
// every subtree stays intact), then n, childless, is placed as a joining
// node would be, or queued. The server keeps each old edge up until the
// child plays from its new parent (make before break).
func (t *Tree) sink(n *node, ch *[]Change) {
	from := n.parent
	p := t.planLeave(n)
	t.apply(p, n, ch)
	n.use = t.usable(n)
	n.placed = false
	t.reindex(n)
	if !t.place(n, from, ch) {
		n.queued = true
		t.reindex(n)
		t.note(ch, n, from, nil)
	}
	t.settle(ch)
}
