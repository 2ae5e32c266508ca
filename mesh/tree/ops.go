package tree

import (
	"fmt"
	"slices"

	"canopy/mesh/protocol"
)

// SetSource puts source id at the root with the given capacity (0 means
// Config.SourceCapacity; larger claims are clamped to it). Nodes that waited
// below the vacant root become its children; if the new capacity is smaller
// than the number of such children, the lowest-ranked are re-attached
// elsewhere with their subtrees. It fails with ErrSourcePresent while another
// source holds the root.
func (t *Tree) SetSource(id string, capacity int) ([]Change, error) {
	switch {
	case !protocol.ValidID(id) || capacity < 0:
		return nil, fmt.Errorf("%w: source %q capacity %d", ErrInvalid, id, capacity)
	case t.root.id != "":
		return nil, ErrSourcePresent
	case t.nodes[id] != nil:
		return nil, fmt.Errorf("%w: %q", ErrExists, id)
	}
	if capacity == 0 || capacity > t.cfg.SourceCapacity {
		capacity = t.cfg.SourceCapacity
	}
	var ch []Change
	t.root.cap, t.root.use = capacity, capacity
	t.reindex(t.root)
	t.shed(t.root, &ch) // while the root is still vacant: moves report From ""
	t.seq++
	t.root.id, t.root.seq = id, t.seq
	t.nodes[id] = t.root
	t.touch(t.root)
	for _, c := range t.root.children {
		ch = append(ch, Change{Node: c.id, To: id})
		t.touch(c) // its parent's id changed
	}
	t.settle(&ch)
	return ch, nil
}

// RemoveSource vacates the root; the tree below stays as it is and waits for
// a source. The root's children get Changes with To == "".
func (t *Tree) RemoveSource() []Change {
	if t.root.id == "" {
		return nil
	}
	var ch []Change
	for _, c := range t.root.children {
		ch = append(ch, Change{Node: c.id, From: t.root.id})
		t.touch(c) // its parent's id changed
	}
	t.touch(t.root)
	delete(t.nodes, t.root.id)
	t.root.id = ""
	return ch
}

// Join adds a relay or viewer and places it: at the shallowest free slot it
// may use, or in the place of a cheaper node that then becomes its child
// (a Go relay takes the place of the shallowest non-relay below the Go part
// of the tree; a browser or unproven Go viewer that can relay takes the place of a lower-capacity
// leaf) when that puts it higher. The claimed capacity is clamped by policy.
// When nothing fits, the node is queued (Queued reports it, Depth is -1) and
// a later operation that frees room places it, reporting the Change then.
func (t *Tree) Join(id string, role Role, kind Kind, capacity int) ([]Change, error) {
	switch {
	case !protocol.ValidID(id):
		return nil, fmt.Errorf("%w: id %q", ErrInvalid, id)
	case role != protocol.RoleRelay && role != protocol.RoleViewer:
		return nil, fmt.Errorf("%w: role %q (use SetSource for a source)", ErrInvalid, role)
	case kind != protocol.KindGo && kind != protocol.KindBrowser:
		return nil, fmt.Errorf("%w: kind %q", ErrInvalid, kind)
	case capacity < 0:
		return nil, fmt.Errorf("%w: capacity %d", ErrInvalid, capacity)
	case t.nodes[id] != nil:
		return nil, fmt.Errorf("%w: %q", ErrExists, id)
	}
	t.seq++
	n := &node{id: id, role: role, kind: kind, cap: t.clamp(kind, capacity), seq: t.seq, trust: TrustProven,
		noverify: t.pendingNoVerify && kind == protocol.KindBrowser}
	if n.noverify {
		t.noverify[n] = true
	}
	if t.cfg.Prove {
		n.trust = TrustNew
	}
	n.use = t.usable(n)
	for k := range n.hidx {
		n.hidx[k] = -1
	}
	t.nodes[id] = n
	var ch []Change
	if !t.place(n, nil, &ch) {
		n.queued = true
		t.reindex(n)
	}
	t.settle(&ch)
	return ch, nil
}

// Leave removes id, gracefully or after a crash: the topology is the same.
// Its highest-ranked child (relays first, then capacity) takes its place;
// the other children attach below that heir if it has room, else at the
// shallowest slot elsewhere, each with its subtree intact. Only when no
// slot fits a child's subtree does a leaf elsewhere go back to the queue to
// make room, and only when not even that fits is the child itself queued and
// its own children re-attached. Freed room then places queued nodes. The
// source leaving is RemoveSource. An unknown id is a no-op.
func (t *Tree) Leave(id string) []Change { return t.LeaveVia(id, nil) }

// LeaveVia is Leave where via names, for some of id's children, the parent
// each already holds a hot standby link to (its Standby when it was
// planned). Each goes there when that parent can take it once id is gone:
// a free slot (id's own, when it is id's parent), outside its own subtree,
// where its subtree's re-encodes fit. The plan then starts from those
// moves: an orphan whose standby is id's parent is the heir, and the
// others are placed as Leave places them. An orphan whose link is up may
// already play from that parent (it switched by itself), and one that is
// moved elsewhere stalls for a new connection; a standby plan gone stale
// (trust, or a measured uplink, reordered the heirs since) must not move
// it twice.
func (t *Tree) LeaveVia(id string, via map[string]string) []Change {
	n := t.nodes[id]
	switch {
	case n == nil:
		return nil
	case n == t.root:
		return t.RemoveSource()
	case n.queued:
		t.unindex(n)
		delete(t.nodes, id)
		delete(t.noverify, n)
		delete(t.strippers, n)
		delete(t.misplaced, n)
		return nil
	}
	delete(t.noverify, n)
	delete(t.strippers, n)
	delete(t.misplaced, n)
	var ch []Change
	p := t.planLeaveVia(n, via)
	t.apply(p, n, &ch)
	t.unindex(n)
	n.placed = false
	delete(t.nodes, id)
	t.settle(&ch)
	return ch
}

// SetCapacity changes id's capacity (clamped by policy; for the source, 0
// means Config.SourceCapacity). Children beyond the new capacity, lowest
// ranked first, are re-attached elsewhere with their subtrees; a Go node that
// becomes a relay below a browser moves up to the Go part of the tree.
func (t *Tree) SetCapacity(id string, capacity int) ([]Change, error) {
	n := t.nodes[id]
	if n == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknown, id)
	}
	if capacity < 0 {
		return nil, fmt.Errorf("%w: capacity %d", ErrInvalid, capacity)
	}
	if n == t.root {
		if capacity == 0 || capacity > t.cfg.SourceCapacity {
			capacity = t.cfg.SourceCapacity
		}
	} else {
		capacity = t.clamp(n.kind, capacity)
	}
	var ch []Change
	n.cap = capacity
	t.refit(n, &ch)
	return ch, nil
}

// refit brings n's place in line with its usable capacity after its
// capacity or trust changed: children beyond it move, a Go node that became
// a relay below a browser moves up to the Go part of the tree, and freed or
// added room is used.
func (t *Tree) refit(n *node, ch *[]Change) {
	n.use = t.usable(n)
	t.reindex(n)
	if n.placed {
		t.shed(n, ch)
		t.rise(n, ch)
	}
	t.settle(ch)
}

// rise moves a relay-class node that sits below a browser, with its
// subtree, to the Go part of the tree (or queues it when nothing fits).
func (t *Tree) rise(n *node, ch *[]Change) {
	if !t.relayClass(n) || n.hops == 0 {
		return
	}
	if len(n.children) == 0 {
		from := n.parent
		t.detach(n)
		n.placed = false
		t.reindex(n)
		if !t.place(n, from, ch) {
			n.queued = true
			t.reindex(n)
			t.note(ch, n, from, nil)
		}
		return
	}
	// A proven Go viewer with a child: carry the subtree along.
	p := newPlanner(t)
	p.setPending(n, true)
	p.placeAll([]*node{n}, nil)
	t.apply(p, nil, ch)
}

// shed re-attaches n's lowest-ranked children beyond its capacity.
func (t *Tree) shed(n *node, ch *[]Change) {
	if len(n.children) <= n.use {
		return
	}
	excess := t.rank(n.children)[n.use:]
	p := newPlanner(t)
	for _, o := range excess {
		p.setPending(o, true)
	}
	p.placeAll(excess, nil)
	t.apply(p, nil, ch)
}

func (t *Tree) note(ch *[]Change, n, from, to *node) {
	if f, g := idOf(from), idOf(to); f != g {
		*ch = append(*ch, Change{Node: n.id, From: f, To: g})
	}
}

// detach cuts n from its parent; its subtree stays below it.
func (t *Tree) detach(n *node) {
	p := n.parent
	if p == nil {
		return
	}
	i := slices.Index(p.children, n)
	p.children = slices.Delete(p.children, i, i+1)
	n.parent = nil
	t.reindex(p)
}

// attach hangs n (and its subtree) below p.
func (t *Tree) attach(n, p *node) {
	n.parent = p
	p.children = append(p.children, n)
	t.reindex(p)
	t.setPos(n, p.depth+1, t.below(p))
}

func (t *Tree) setPos(n *node, depth, hops int) {
	n.placed, n.queued = true, false
	n.depth, n.hops = depth, hops
	t.reindex(n)
	for _, c := range n.children {
		t.setBelow(c, depth+1, t.below(n))
	}
}

// setBelow is setPos for a node whose parent did not change: only its
// depth and hops may, which a journal does not record.
func (t *Tree) setBelow(n *node, depth, hops int) {
	if !n.placed || n.queued {
		t.touch(n)
	}
	n.placed, n.queued = true, false
	n.depth, n.hops = depth, hops
	t.heapsFor(n)
	for _, c := range n.children {
		t.setBelow(c, depth+1, t.below(n))
	}
}

// place puts an unplaced node without children into the tree, reporting
// false if nothing fits; from is its former parent, for the Change.
func (t *Tree) place(n, from *node, ch *[]Change) bool {
	if t.strict(n) {
		return t.placeStrict(n, from, ch)
	}
	relay := t.relayClass(n)
	maxClass := t.cfg.MaxBrowserHops
	if relay {
		maxClass = 0
	}
	slot := t.bestSlot(maxClass)
	limit := int(^uint(0) >> 1)
	if slot != nil {
		limit = slot.depth + 1
	}
	var v *node
	switch {
	case relay:
		v = t.frontAbove(limit)
	case n.use > 0: // a browser, or a Go viewer on trial
		v = t.leafAbove(limit, n.use)
	}
	if v != nil {
		p := v.parent
		t.detach(v)
		t.attach(n, p)
		t.attach(v, n)
		t.note(ch, n, from, p)
		t.note(ch, v, p, n)
		return true
	}
	if slot == nil {
		return t.displace(n, maxClass, from, ch)
	}
	t.attach(n, slot)
	t.note(ch, n, from, slot)
	return true
}

// displace gives n, which fits nowhere else, the place of the shallowest
// barred leaf it may use; the barred node goes to the queue. A barred node
// never displaces another.
func (t *Tree) displace(n *node, maxClass int, from *node, ch *[]Change) bool {
	if n.trust == TrustBarred {
		return false
	}
	var b *node
	for c := 0; c <= maxClass && c < t.ix.classes; c++ {
		if v := t.ix.barred[c].top(); v != nil && (b == nil || barredLess(v, b)) {
			b = v
		}
	}
	if b == nil {
		return false
	}
	p := b.parent
	t.detach(b)
	b.placed, b.queued = false, true
	t.reindex(b)
	t.attach(n, p)
	t.note(ch, b, p, nil)
	t.note(ch, n, from, p)
	return true
}

// frontAbove returns the cheapest non-relay node with only Go above it at
// the shallowest depth below limit, or nil.
func (t *Tree) frontAbove(limit int) *node {
	for d := 1; d < limit && d < len(t.ix.front); d++ {
		if v := t.ix.front[d].top(); v != nil {
			return v
		}
	}
	return nil
}

// leafAbove returns a leaf with capacity below c at the shallowest depth
// below limit whose slot a browser may take and still relay to it.
func (t *Tree) leafAbove(limit, c int) *node {
	for d := 1; d < limit && d < len(t.ix.leaves); d++ {
		for h := 0; h < t.cfg.MaxBrowserHops; h++ {
			if v := t.ix.leaves[d][h].top(); v != nil && v.use < c {
				return v
			}
		}
	}
	return nil
}

// settle places queued nodes and pulls deep leaves up into shallow free slots
// until neither applies. Both steps terminate: placing shrinks the queue, and
// each pull lowers the sum of depths.
func (t *Tree) settle(ch *[]Change) {
	for t.drain(ch) || t.reseat(ch) || t.compact(ch) {
	}
}

func (t *Tree) drain(ch *[]Change) bool {
	moved := false
	for _, q := range []*nodeHeap{t.ix.qRelay, t.ix.qOther, t.ix.qStrict, t.ix.qBarred} {
		for q.len() > 0 {
			n := q.top()
			q.remove(n)
			n.queued = false
			if !t.place(n, nil, ch) {
				n.queued = true
				t.reindex(n)
				break
			}
			moved = true
		}
	}
	return moved
}

// compact moves one leaf that could sit at least one level higher.
func (t *Tree) compact(ch *[]Change) bool {
	ix := t.ix
	if s := t.bestSlot(t.cfg.MaxBrowserHops); s != nil {
		for d := len(ix.leaves) - 1; d >= s.depth+2; d-- {
			for h := ix.classes - 1; h >= 0; h-- {
				if l := ix.leaves[d][h].top(); l != nil {
					t.move(l, s, ch)
					return true
				}
			}
		}
	}
	if s := t.bestSlot(0); s != nil {
		for d := len(ix.rleaves) - 1; d >= s.depth+2; d-- {
			if l := ix.rleaves[d].top(); l != nil {
				t.move(l, s, ch)
				return true
			}
		}
	}
	return false
}

func (t *Tree) move(n, to *node, ch *[]Change) {
	from := n.parent
	t.detach(n)
	t.attach(n, to)
	t.note(ch, n, from, to)
}
