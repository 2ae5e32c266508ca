package tree

// The tree keeps a few indexes so that placement never scans all nodes: free
// slots by (depth, class), leaves by (depth, hops), the Go/browser frontier by
// depth, and two queues. Each is a binary heap with a total order (ties end on
// the join sequence number), so placement is deterministic whatever the heap's
// internal layout.

// Heap membership slots in a node: a node is in at most one heap of each kind.
const (
	hSlot   = iota // has a free slot and may relay
	hLeaf          // has no children (relay leaves and other leaves apart)
	hFront         // a non-relay node directly below the Go part of the tree
	hQueue         // waiting for a place
	hBarred        // a barred leaf, whose place a node with nowhere else to go takes
	numHeaps
)

type nodeHeap struct {
	kind  int
	less  func(a, b *node) bool
	items []*node
}

func newHeap(kind int, less func(a, b *node) bool) *nodeHeap {
	return &nodeHeap{kind: kind, less: less}
}

func (h *nodeHeap) len() int { return len(h.items) }

func (h *nodeHeap) top() *node {
	if len(h.items) == 0 {
		return nil
	}
	return h.items[0]
}

func (h *nodeHeap) push(n *node) {
	n.heap[h.kind] = h
	n.hidx[h.kind] = len(h.items)
	h.items = append(h.items, n)
	h.up(len(h.items) - 1)
}

func (h *nodeHeap) pop() *node {
	n := h.top()
	if n != nil {
		h.remove(n)
	}
	return n
}

func (h *nodeHeap) remove(n *node) {
	i := n.hidx[h.kind]
	last := len(h.items) - 1
	if i != last {
		h.swap(i, last)
	}
	h.items[last] = nil
	h.items = h.items[:last]
	n.heap[h.kind] = nil
	n.hidx[h.kind] = -1
	if i != last {
		if !h.down(i) {
			h.up(i)
		}
	}
}

func (h *nodeHeap) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].hidx[h.kind] = i
	h.items[j].hidx[h.kind] = j
}

func (h *nodeHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(h.items[i], h.items[p]) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h *nodeHeap) down(i int) bool {
	start := i
	for {
		l := 2*i + 1
		if l >= len(h.items) {
			break
		}
		m := l
		if r := l + 1; r < len(h.items) && h.less(h.items[r], h.items[l]) {
			m = r
		}
		if !h.less(h.items[m], h.items[i]) {
			break
		}
		h.swap(i, m)
		i = m
	}
	return i > start
}

// Orders. Slots: oldest parent first. Leaves and frontier: the cheapest node
// to move first (lowest capacity, then the latest to join). Queues: the
// highest capacity first (it adds the most room), then first come.
func slotLess(a, b *node) bool {
	// Free slots of parents whose measured upload holds them below what
	// they declared (sustain.go) come after the others: those are probing
	// their way back up, one child at a time, while the others have shown
	// no limit yet.
	if ha, hb := held(a), held(b); ha != hb {
		return hb
	}
	return a.seq < b.seq
}

func cheapLess(a, b *node) bool {
	if a.use != b.use {
		return a.use < b.use
	}
	return a.seq > b.seq
}

// barredLess orders barred leaves shallowest first (the most valuable
// place to hand back), then the longest there.
func barredLess(a, b *node) bool {
	if a.depth != b.depth {
		return a.depth < b.depth
	}
	return a.seq < b.seq
}

func queueLess(a, b *node) bool {
	if a.use != b.use {
		return a.use > b.use
	}
	return a.seq < b.seq
}

// index holds the heaps; depth-indexed slices grow on demand.
type index struct {
	classes int           // MaxBrowserHops+1
	slots   [][]*nodeHeap // [depth][class]: nodes with a free slot whose children would have class browser hops
	leaves  [][]*nodeHeap // [depth][hops]: non-relay nodes without children
	rleaves []*nodeHeap   // [depth]: relay-class nodes without children
	front   []*nodeHeap   // [depth]: non-relay nodes with no browser above them
	barred  []*nodeHeap   // [hops]: barred leaves
	qRelay  *nodeHeap     // queued relay-class nodes
	qOther  *nodeHeap     // other queued nodes
	qBarred *nodeHeap     // queued barred nodes: placed only in free slots
	qStrict *nodeHeap     // queued nodes that cannot verify, on a signed stream (noverify.go)
}

func newIndex(classes int) *index {
	ix := &index{
		classes: classes,
		qRelay:  newHeap(hQueue, queueLess),
		qOther:  newHeap(hQueue, queueLess),
		qBarred: newHeap(hQueue, queueLess),
		qStrict: newHeap(hQueue, queueLess),
	}
	for range classes {
		ix.barred = append(ix.barred, newHeap(hBarred, barredLess))
	}
	return ix
}

// grow makes sure depth d has its heaps.
func (ix *index) grow(d int) {
	for len(ix.slots) <= d {
		s := make([]*nodeHeap, ix.classes)
		l := make([]*nodeHeap, ix.classes)
		for c := range ix.classes {
			s[c] = newHeap(hSlot, slotLess)
			l[c] = newHeap(hLeaf, cheapLess)
		}
		ix.slots = append(ix.slots, s)
		ix.leaves = append(ix.leaves, l)
		ix.rleaves = append(ix.rleaves, newHeap(hLeaf, func(a, b *node) bool { return a.seq > b.seq }))
		ix.front = append(ix.front, newHeap(hFront, cheapLess))
	}
}

// want reports the heaps node n belongs in, given its current state.
func (t *Tree) want(n *node) (w [numHeaps]*nodeHeap) {
	ix := t.ix
	if n.queued {
		switch {
		case t.strict(n):
			w[hQueue] = ix.qStrict
		case n.trust == TrustBarred:
			w[hQueue] = ix.qBarred
		case t.relayClass(n):
			w[hQueue] = ix.qRelay
		default:
			w[hQueue] = ix.qOther
		}
		return w
	}
	if !n.placed {
		return w
	}
	ix.grow(n.depth)
	if c := t.below(n); len(n.children) < n.use && c < ix.classes {
		w[hSlot] = ix.slots[n.depth][c]
	}
	if n == t.root {
		return w
	}
	if t.strict(n) {
		// Only placeStrict moves it: compaction, a Go relay taking its
		// place and a browser swapping in above it would each hang it below
		// a parent of the wrong kind.
		return w
	}
	switch {
	case t.relayClass(n):
		if len(n.children) == 0 {
			w[hLeaf] = ix.rleaves[n.depth]
		}
	default:
		if len(n.children) == 0 && n.hops < ix.classes {
			w[hLeaf] = ix.leaves[n.depth][n.hops]
		}
		if n.hops == 0 {
			w[hFront] = ix.front[n.depth]
		}
	}
	if n.trust == TrustBarred && len(n.children) == 0 && n.hops < ix.classes {
		w[hBarred] = ix.barred[n.hops]
	}
	return w
}

// reindex puts n in the heaps its state calls for.
func (t *Tree) reindex(n *node) {
	t.touch(n)
	t.heapsFor(n)
}

// heapsFor is reindex without recording n as changed: a subtree's
// nodes below a moved node change only their depth (journal.go).
func (t *Tree) heapsFor(n *node) {
	w := t.want(n)
	for k := range numHeaps {
		if h := n.heap[k]; h != nil {
			h.remove(n)
		}
		if w[k] != nil {
			w[k].push(n)
		}
	}
}

// unindex takes n out of every heap.
func (t *Tree) unindex(n *node) {
	t.touch(n)
	for k := range numHeaps {
		if h := n.heap[k]; h != nil {
			h.remove(n)
		}
	}
}

// bestSlot returns the shallowest node with a free slot for a child that may
// sit below at most maxClass browser hops, preferring fewer hops, then age.
func (t *Tree) bestSlot(maxClass int) *node {
	for d := range t.ix.slots {
		for c := 0; c <= maxClass && c < t.ix.classes; c++ {
			if n := t.ix.slots[d][c].top(); n != nil {
				return n
			}
		}
	}
	return nil
}
