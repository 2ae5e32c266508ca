package tree

// A planner decides where orphaned subtrees go without touching the tree, so
// that Leave and Standby share one rule. It sees the tree through the moves
// it has planned so far: virtual parents, virtual child counts, and nodes
// that are gone (the leaver, queued orphans, evicted leaves) or pending (an
// orphan not yet planned: nothing may attach below it, since its position,
// and so its depth and hops, is not known yet).
type planner struct {
	t       *Tree
	gone    map[*node]bool
	pending map[*node]bool
	vpar    map[*node]*node // planned parent; nil: queued
	delta   map[*node]int   // planned change in child count
	moves   []planMove
}

type planMove struct{ n, to *node }

func newPlanner(t *Tree) *planner {
	return &planner{
		t:       t,
		gone:    make(map[*node]bool),
		pending: make(map[*node]bool),
		vpar:    make(map[*node]*node),
		delta:   make(map[*node]int),
	}
}

func (p *planner) parent(n *node) *node {
	if v, ok := p.vpar[n]; ok {
		return v
	}
	return n.parent
}

func (p *planner) free(n *node) int { return n.use - len(n.children) - p.delta[n] }

func (p *planner) move(n, to *node) {
	if old := p.parent(n); old != nil {
		p.delta[old]--
	}
	p.vpar[n] = to
	if to != nil {
		p.delta[to]++
	}
	p.moves = append(p.moves, planMove{n, to})
}

// locate reports whether n is connected to the root in the planned tree
// without passing through avoid, and how many re-encodes a child of n would
// see there.
func (p *planner) locate(n, avoid *node) (ok bool, class int) {
	for m := n; m != p.t.root; m = p.parent(m) {
		if m == nil || m == avoid || p.gone[m] || p.pending[m] {
			return false, 0
		}
		if reencodes(m) {
			class++
		}
	}
	return true, class
}

// allowedClass is the most re-encodes above o that o's subtree can bear.
func (t *Tree) allowedClass(o *node) int {
	switch {
	case t.relayClass(o):
		return 0 // a Go relay, and everything below it, stays below Go only
	case t.carriesRelay(o):
		return 0 // a pass-through browser can carry a Go relay; it stays below Go only
	case len(o.children) == 0:
		return t.cfg.MaxBrowserHops
	}
	in, relay := t.inner(o)
	if relay {
		return 0 // an unproven Go viewer feeding a Go relay: both stay in the Go part
	}
	return t.cfg.MaxBrowserHops - in
}

// inner is the largest number of re-encodes inside n's subtree on a path
// from n to a descendant, and whether a relay-class node is in it. Only
// called for non-relay nodes, whose subtrees are small (browsers:
// capacity^hops; an unproven Go node has one child); it stops at a relay.
func (t *Tree) inner(n *node) (int, bool) {
	if len(n.children) == 0 {
		return 0, false
	}
	best := 0
	for _, c := range n.children {
		if t.relayClass(c) {
			return 0, true
		}
		in, relay := t.inner(c)
		if relay {
			return 0, true
		}
		best = max(best, in)
	}
	if reencodes(n) {
		best++
	}
	return best, false
}

// planLeave plans Leave(x): the heir takes x's slot, the other children
// follow in rank order.
func (t *Tree) planLeave(x *node) *planner {
	p := newPlanner(t)
	p.gone[x] = true
	p.move(x, nil)
	if len(x.children) == 0 {
		return p
	}
	orphans := t.rank(x.children)
	for _, o := range orphans {
		p.pending[o] = true
	}
	heir := orphans[0]
	delete(p.pending, heir)
	// Moving up one level never adds re-encodes, and a relay's path was all
	// Go, so the heir always fits x's slot.
	p.move(heir, x.parent)
	p.placeAll(orphans[1:], heir)
	return p
}

// placeAll plans a place for each orphan in turn: below the heir if it has
// room, else the shallowest slot that bears the orphan's subtree, else the
// slot of an evicted leaf, else the orphan is queued and its children join
// the work list.
func (p *planner) placeAll(work []*node, heir *node) {
	t := p.t
	for i := 0; i < len(work); i++ {
		o := work[i]
		delete(p.pending, o)
		maxClass := t.allowedClass(o)
		if heir != nil && p.free(heir) > 0 {
			if ok, c := p.locate(heir, o); ok && c <= maxClass {
				p.move(o, heir)
				continue
			}
		}
		if s := p.findSlot(o, maxClass); s != nil {
			p.move(o, s)
			continue
		}
		if len(o.children) > 0 {
			if l, par := p.findEvict(o, maxClass); l != nil {
				p.gone[l] = true
				p.move(l, nil)
				p.move(o, par)
				continue
			}
		}
		p.gone[o] = true
		p.move(o, nil)
		kids := t.rank(o.children)
		for _, k := range kids {
			p.pending[k] = true
		}
		work = append(work, kids...)
	}
}

// findSlot returns the shallowest usable free slot for o's subtree.
func (p *planner) findSlot(o *node, maxClass int) *node {
	ix := p.t.ix
	for d := range ix.slots {
		for c := 0; c <= maxClass && c < ix.classes; c++ {
			if s := p.search(ix.slots[d][c], func(s *node) bool {
				ok, cl := p.locate(s, o)
				return ok && cl <= maxClass && p.free(s) > 0
			}); s != nil {
				return s
			}
		}
	}
	return nil
}

// findEvict returns the deepest cheapest leaf whose slot bears o's subtree,
// and that slot's parent.
func (p *planner) findEvict(o *node, maxClass int) (leaf, parent *node) {
	ix := p.t.ix
	for d := len(ix.leaves) - 1; d > 0; d-- {
		for h := 0; h <= maxClass && h < ix.classes; h++ {
			if l := p.search(ix.leaves[d][h], func(l *node) bool {
				if _, moved := p.vpar[l]; moved || p.pending[l] || p.delta[l] != 0 || l.parent == nil {
					return false
				}
				ok, cl := p.locate(l.parent, o)
				return ok && cl <= maxClass
			}); l != nil {
				return l, l.parent
			}
		}
	}
	return nil, nil
}

// search returns the first node of h, in heap order, that satisfies ok. It
// pops and pushes back, which leaves the heap's order (not its layout)
// unchanged.
func (p *planner) search(h *nodeHeap, ok func(*node) bool) *node {
	var stash []*node
	var found *node
	for h.len() > 0 {
		n := h.pop()
		stash = append(stash, n)
		if !p.gone[n] && ok(n) {
			found = n
			break
		}
	}
	for _, n := range stash {
		h.push(n)
	}
	return found
}

// apply carries out a plan. leaver, if any, is detached and dropped.
func (t *Tree) apply(p *planner, leaver *node, ch *[]Change) {
	var queued []*node
	for _, mv := range p.moves {
		n := mv.n
		from := n.parent
		t.detach(n)
		if n == leaver {
			continue
		}
		if mv.to == nil {
			n.placed = false
			queued = append(queued, n)
		} else {
			t.attach(n, mv.to)
		}
		t.note(ch, n, from, mv.to)
	}
	// Queue only now: a queued orphan's children leave it in later moves.
	for _, n := range queued {
		n.queued = true
		t.reindex(n)
	}
}

// Standby returns the parent id would get if its parent crashed now, as
// Leave would place it; "" if id is unknown, queued, a child of the source
// (it would wait for a new source), or would be queued.
func (t *Tree) Standby(id string) string {
	n := t.nodes[id]
	if n == nil || !n.placed || n.parent == nil || n.parent == t.root {
		return ""
	}
	p := t.planLeave(n.parent)
	return idOf(p.vpar[n])
}
