package tree

import (
	"container/heap"
	"slices"
)

// A planner decides where orphaned subtrees go without touching the tree, so
// that Leave and Standby share one rule. It sees the tree through the moves
// it has planned so far: virtual parents, virtual child counts, and nodes
// that are gone (the leaver, queued orphans, evicted leaves) or pending (an
// orphan not yet planned: nothing may attach below it, since its position,
// and so its depth and hops, is not known yet).
type planner struct {
	t     *Tree
	epoch uint64 // the planner's marks in nodes (planMark) carry it
	moves []planMove
	// firstOnly stops placeAll once the nodes it was given are planned:
	// what becomes of a queued orphan's children (the rest of the work)
	// cannot change where those went (planOrphans).
	firstOnly bool
	// reference makes search pop every node in order, the plain form its
	// scan must agree with (tests).
	reference bool
	// via names hot standby parents to try first (planLeaveVia).
	via map[string]string
	// noSlot remembers the orphans findSlot found no slot for, by what its
	// search depends on: the re-encodes their subtree bears (bit maxClass)
	// of strict ones ([1]) and others ([0]). See findSlot. noEvict is the
	// same for findEvict.
	noSlot, noEvict [2]uint64
	// evict keeps, per leaf heap, what findEvict's scans of it left (see
	// evictCands), for each memo key it was scanned with.
	evict map[*nodeHeap][]*evictCands
}

type planMove struct{ n, to *node }

// planMark is what a planner knows of a node: gone, pending, its planned
// parent, its planned change in child count. It lives in the node, valid
// while its epoch is the planner's: the planner's maps were a quarter of a
// load ramp's CPU (a standby plan reads them for every leaf it tries).
// One planner is used at a time, from its making to its last read.
type planMark struct {
	epoch   uint64
	gone    bool
	pending bool
	moved   bool  // vpar is set
	vpar    *node // planned parent; nil: queued
	delta   int
}

func newPlanner(t *Tree) *planner {
	t.planEpoch++
	return &planner{t: t, epoch: t.planEpoch}
}

// mark is n's mark for writing (reset if an older planner's).
func (p *planner) mark(n *node) *planMark {
	if n.plan.epoch != p.epoch {
		n.plan = planMark{epoch: p.epoch}
	}
	return &n.plan
}

func (p *planner) isGone(n *node) bool    { return n.plan.epoch == p.epoch && n.plan.gone }
func (p *planner) isPending(n *node) bool { return n.plan.epoch == p.epoch && n.plan.pending }
func (p *planner) setGone(n *node)        { p.mark(n).gone = true }
func (p *planner) setPending(n *node, v bool) {
	if v || n.plan.epoch == p.epoch {
		p.mark(n).pending = v
	}
}

// planned is n's planned parent and whether the planner moved n.
func (p *planner) planned(n *node) (*node, bool) {
	if n.plan.epoch != p.epoch || !n.plan.moved {
		return nil, false
	}
	return n.plan.vpar, true
}

func (p *planner) delta(n *node) int {
	if n.plan.epoch != p.epoch {
		return 0
	}
	return n.plan.delta
}

func (p *planner) parent(n *node) *node {
	if v, ok := p.planned(n); ok {
		return v
	}
	return n.parent
}

func (p *planner) free(n *node) int { return n.use - len(n.children) - p.delta(n) }

func (p *planner) move(n, to *node) {
	if old := p.parent(n); old != nil {
		p.mark(old).delta--
	}
	m := p.mark(n)
	m.vpar, m.moved = to, true
	if to != nil {
		p.mark(to).delta++
		if n.use > 0 || len(n.children) > 0 {
			// n's slots, or its subtree's slots and leaves, are in reach now
			p.noSlot, p.noEvict = [2]uint64{}, [2]uint64{}
			if len(n.children) > 0 && p.evict != nil {
				p.evictReach(n)
			}
		}
	}
	p.moves = append(p.moves, planMove{n, to})
}

// locate reports whether n is connected to the root in the planned tree
// without passing through avoid, and how many re-encodes a child of n would
// see there.
func (p *planner) locate(n, avoid *node) (ok bool, class int) {
	for m := n; m != p.t.root; m = p.parent(m) {
		if m == nil || m == avoid || p.isGone(m) || p.isPending(m) {
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
func (t *Tree) planLeave(x *node) *planner { return t.planDeparture(x, false, nil) }

// planLeaveVia plans LeaveVia(x, via): first the orphans that can go to
// the parent via names for them (in rounds: a standby that is another
// orphan takes children once it is placed), then the heir, if none of
// those took x's slot, then the rest in rank order, each still trying its
// standby first.
func (t *Tree) planLeaveVia(x *node, via map[string]string) *planner {
	return t.planDeparture(x, false, via)
}

// planOrphans plans where Leave(x) puts x's children, and only them: the
// standby plans (StandbysOf, Standby) read nothing else. Their places are
// decided before any of the later work (the children of an orphan that
// found no place), and a later step never moves a node already planned
// (an evicted leaf is one not moved yet), so they are Leave's exactly. In
// a tree whose relays are still earning their slots most orphans of a
// wide relay find none, and their children were most of the plan's cost.
func (t *Tree) planOrphans(x *node) *planner { return t.planDeparture(x, true, nil) }

func (t *Tree) planDeparture(x *node, firstOnly bool, via map[string]string) *planner {
	p := newPlanner(t)
	p.firstOnly = firstOnly
	p.setGone(x)
	p.move(x, nil)
	if len(x.children) == 0 {
		return p
	}
	orphans := t.rank(x.children)
	for _, o := range orphans {
		p.setPending(o, true)
	}
	p.via = via
	var heir *node
	for len(via) > 0 {
		var left []*node
		for _, o := range orphans {
			if s := p.standbyOf(o); s != nil {
				p.setPending(o, false)
				p.move(o, s)
				if s == x.parent && heir == nil {
					heir = o
				}
				continue
			}
			left = append(left, o)
		}
		if len(left) == len(orphans) {
			break
		}
		orphans = left
	}
	if len(orphans) == 0 {
		return p
	}
	if heir != nil {
		p.placeAll(orphans, heir)
		return p
	}
	// The heir is the best child that may hang below x's parent (a child
	// that cannot verify may not, unless that parent strips or
	// re-encodes); with none, every child is placed afresh.
	hi := slices.IndexFunc(orphans, func(o *node) bool { return t.feeds(x.parent, o) })
	if hi < 0 {
		p.placeAll(orphans, nil)
		return p
	}
	heir = orphans[hi]
	p.setPending(heir, false)
	// Moving up one level never adds re-encodes, and a relay's path was all
	// Go, so the heir always fits x's slot (no standby move took it: those
	// that did are heirs).
	p.move(heir, x.parent)
	p.placeAll(slices.Delete(orphans, hi, hi+1), heir)
	return p
}

// standbyOf is the parent p.via names for o when the planned tree lets o
// go there now, else nil: placed (not gone, not an orphan still pending),
// outside o's subtree, with a free slot, feeding o, and where o's
// subtree's re-encodes fit.
func (p *planner) standbyOf(o *node) *node {
	s := p.t.nodes[p.via[o.id]]
	if s == nil || !s.placed || p.isGone(s) || p.isPending(s) || p.free(s) <= 0 || !p.t.feeds(s, o) {
		return nil
	}
	if ok, class := p.locate(s, o); !ok || class > p.t.allowedClass(o) {
		return nil
	}
	return s
}

// waitsForStandby reports whether o's standby is not placed yet in the
// plan (it is, or hangs below, an orphan still pending), so that o should
// be planned after the others.
func (p *planner) waitsForStandby(o *node) bool {
	s := p.t.nodes[p.via[o.id]]
	for m := s; m != nil && m != p.t.root; m = p.parent(m) {
		if p.isPending(m) {
			return m != o
		}
		if p.isGone(m) {
			return false
		}
	}
	return false
}

// placeAll plans a place for each orphan in turn: below the heir if it has
// room, else the shallowest slot that bears the orphan's subtree, else the
// slot of an evicted leaf, else the orphan is queued and its children join
// the work list.
func (p *planner) placeAll(work []*node, heir *node) {
	t := p.t
	given := len(work)
	var waited map[*node]bool
	for i := 0; i < len(work); i++ {
		if p.firstOnly && i == given {
			return
		}
		o := work[i]
		if p.via != nil {
			if s := p.standbyOf(o); s != nil {
				p.setPending(o, false)
				p.move(o, s)
				continue
			}
			if !waited[o] && p.waitsForStandby(o) {
				if waited == nil {
					waited = make(map[*node]bool)
				}
				waited[o] = true
				work = append(work, o) // once: after the orphan its standby hangs below
				continue
			}
		}
		p.setPending(o, false)
		maxClass := t.allowedClass(o)
		if heir != nil && p.free(heir) > 0 && t.feeds(heir, o) {
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
				p.setGone(l)
				p.move(l, nil)
				p.move(o, par)
				continue
			}
		}
		p.setGone(o)
		p.move(o, nil)
		kids := t.rank(o.children)
		for _, k := range kids {
			p.setPending(k, true)
		}
		work = append(work, kids...)
	}
}

// findSlot returns the shallowest usable free slot for o's subtree.
//
// Once it finds none for an orphan, it finds none for a later one with the
// same maxClass and strictness (what the heaps scanned and feeds depend on)
// until a node with slots, or with a subtree, is placed: during a plan free
// slots outside gone nodes only ever fill (an eviction frees the slot it
// takes), and the other reasons a slot fails (below a gone or pending node,
// or below the orphan itself, which is then placed or gone) stay true until
// such a move. In a full tree (relays still earning their slots) every
// orphan of a wide relay scanned every heap in vain: most of a load ramp's
// CPU.
func (p *planner) findSlot(o *node, maxClass int) *node {
	key, bit := p.memoKey(o, maxClass)
	if p.noSlot[key]&bit != 0 {
		return nil
	}
	ix := p.t.ix
	for d := range ix.slots {
		for c := 0; c <= maxClass && c < ix.classes; c++ {
			if s := p.search(ix.slots[d][c], func(s *node) bool {
				ok, cl := p.locate(s, o)
				return ok && cl <= maxClass && p.free(s) > 0 && p.t.feeds(s, o)
			}); s != nil {
				return s
			}
		}
	}
	p.noSlot[key] |= bit
	return nil
}

// memoKey is where noSlot and noEvict keep o's failure: which array
// (strict or not) and which bit (maxClass); bit 0 (nothing remembered) in
// reference mode or past 63 re-encodes.
func (p *planner) memoKey(o *node, maxClass int) (key int, bit uint64) {
	if p.t.strict(o) {
		key = 1
	}
	if maxClass < 64 && !p.reference {
		bit = 1 << maxClass
	}
	return key, bit
}

// findEvict returns the deepest cheapest leaf whose slot bears o's subtree,
// and that slot's parent.
//
// Its failures are remembered as findSlot's are, for the same reasons: the
// candidates are leaves not yet planned, and a plan only takes them away
// (an eviction places an orphan with a subtree, which resets the memo)
// until a node with slots or a subtree is placed, bringing its leaves in
// reach. At 30 000 peers over 3 servers every relay orphan of a full tree
// scanned every leaf of the deepest level: 17 % of the owner's CPU.
func (p *planner) findEvict(o *node, maxClass int) (leaf, parent *node) {
	key, bit := p.memoKey(o, maxClass)
	if p.noEvict[key]&bit != 0 {
		return nil, nil
	}
	ix := p.t.ix
	fits := func(l *node) bool {
		if _, moved := p.planned(l); moved || p.isPending(l) || p.delta(l) != 0 || l.parent == nil {
			return false
		}
		ok, cl := p.locate(l.parent, o)
		return ok && cl <= maxClass && p.t.feeds(l.parent, o)
	}
	for d := len(ix.leaves) - 1; d > 0; d-- {
		for h := 0; h <= maxClass && h < ix.classes; h++ {
			hp := ix.leaves[d][h]
			if p.reference {
				if l := p.searchAll(hp, fits); l != nil {
					return l, l.parent
				}
				continue
			}
			if c := p.evictCandsOf(hp, key, maxClass); c != nil {
				if l := c.first(p, fits); l != nil {
					return l, l.parent
				}
				continue
			}
			// The cheapest leaves are the newest, which in a ramp are most
			// often o's own children (their slot is below o): popping them
			// does not count against the pops before the heap is scanned.
			if l, whole := p.popSearch(hp, o, fits); l != nil {
				return l, l.parent
			} else if whole {
				continue
			}
			if l := p.scanEvict(hp, key, maxClass, fits).first(p, fits); l != nil {
				return l, l.parent
			}
		}
	}
	p.noEvict[key] |= bit
	return nil, nil
}

// evictCands is what findEvict keeps of one leaf heap for one memo key
// during a plan: the leaves that fitted when it scanned the heap, and those
// that came in reach since, as a heap in the leaf heap's order.
//
// A leaf that does not fit an orphan keeps not fitting later ones of the
// same key until a node with a subtree is placed (findEvict's memo, for the
// same reasons: it is gone, moved, pending, holds a planned child, or sits
// below a gone or pending node or below the orphan, which is then placed or
// gone), and such a placement adds that subtree's leaves here. So each
// scan of a heap serves the rest of the plan: the first candidate that
// fits is the heap's first leaf in order that fits, and one that does not
// is dropped for good. Scanning a whole depth for each relay orphan of a
// full tree was 68 % of the owner's CPU at 54 000 viewers over 3 servers.
type evictCands struct {
	key, maxClass int
	less          func(a, b *node) bool
	items         []*node
}

func (p *planner) evictCandsOf(h *nodeHeap, key, maxClass int) *evictCands {
	for _, c := range p.evict[h] {
		if c.key == key && c.maxClass == maxClass {
			return c
		}
	}
	return nil
}

// scanEvict scans h once for the leaves that fit and keeps them.
func (p *planner) scanEvict(h *nodeHeap, key, maxClass int, fits func(*node) bool) *evictCands {
	c := &evictCands{key: key, maxClass: maxClass, less: h.less}
	for _, n := range h.items {
		if !p.isGone(n) && fits(n) {
			c.items = append(c.items, n)
		}
	}
	heap.Init(c)
	if p.evict == nil {
		p.evict = make(map[*nodeHeap][]*evictCands)
	}
	p.evict[h] = append(p.evict[h], c)
	return c
}

// first returns the least candidate that fits, dropping those that do not.
func (c *evictCands) first(p *planner, fits func(*node) bool) *node {
	for len(c.items) > 0 {
		if n := c.items[0]; !p.isGone(n) && fits(n) {
			return n
		}
		heap.Pop(c)
	}
	return nil
}

// heap.Interface, in the leaf heap's order (nodeHeap keeps its place in
// the nodes, so it cannot hold them twice).
func (c *evictCands) Len() int           { return len(c.items) }
func (c *evictCands) Less(i, j int) bool { return c.less(c.items[i], c.items[j]) }
func (c *evictCands) Swap(i, j int)      { c.items[i], c.items[j] = c.items[j], c.items[i] }
func (c *evictCands) Push(x any)         { c.items = append(c.items, x.(*node)) }
func (c *evictCands) Pop() any {
	last := len(c.items) - 1
	n := c.items[last]
	c.items[last] = nil
	c.items = c.items[:last]
	return n
}

// evictReach adds the leaves of n's subtree, which n's placement brought
// in reach, to every scanned leaf heap's candidates they belong to.
func (p *planner) evictReach(n *node) {
	for _, k := range n.children {
		if len(k.children) > 0 {
			p.evictReach(k)
			continue
		}
		for _, c := range p.evict[k.heap[hLeaf]] {
			heap.Push(c, k)
		}
	}
}

// searchPops is how many nodes search takes from a heap in order before
// it scans the rest: the first free slot usually fits, while an eviction
// in a tree of unproven relays may fail for every leaf of a depth.
const searchPops = 8

// search returns the first node of h, in heap order, that satisfies ok
// (ok has no side effects). It pops the first few and pushes them back,
// which leaves the heap's order (not its layout) unchanged; past them it
// scans the rest for the least node that satisfies ok, which the order
// being total makes the same node. Popping all of a heap of 4 000 leaves
// that all failed was a third of a load run's CPU.
func (p *planner) search(h *nodeHeap, ok func(*node) bool) *node {
	if p.reference {
		return p.searchAll(h, ok)
	}
	found, whole := p.popSearch(h, nil, ok)
	if found == nil && !whole {
		for _, n := range h.items {
			if p.isGone(n) || (found != nil && !h.less(n, found)) {
				continue
			}
			if ok(n) {
				found = n
			}
		}
	}
	return found
}

// popSearch pops the first searchPops nodes of h in order (children of own,
// which ok rejects, not counted) and pushes them back, returning the first
// that satisfies ok; whole reports that they were all of h.
func (p *planner) popSearch(h *nodeHeap, own *node, ok func(*node) bool) (found *node, whole bool) {
	var buf [searchPops]*node // more only past own children: a bigger array costs every search its clearing
	stash := buf[:0]
	for pops := 0; h.len() > 0 && pops < searchPops; {
		n := h.pop()
		stash = append(stash, n)
		if own == nil || n.parent != own {
			pops++
		}
		if !p.isGone(n) && ok(n) {
			found = n
			break
		}
	}
	whole = found == nil && h.len() == 0
	for _, n := range stash {
		h.push(n)
	}
	return found, whole
}

// searchAll is search by popping in order until ok: the reference.
func (p *planner) searchAll(h *nodeHeap, ok func(*node) bool) *node {
	var stash []*node
	var found *node
	for h.len() > 0 {
		n := h.pop()
		stash = append(stash, n)
		if !p.isGone(n) && ok(n) {
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
	p := t.planOrphans(n.parent)
	to, _ := p.planned(n)
	return idOf(to)
}
