package tree

import (
	"errors"
	"fmt"

	"canopy/mesh/protocol"
)

// Check verifies every invariant and the indexes, in O(N); tests call it
// after each operation.
//
//  1. Every placed node has exactly one path to the root; no cycles; depth
//     and hops are what the path says.
//  2. No node has more children than its capacity, and capacities are
//     within policy.
//  3. The tree is compact: no leaf could move up a level into a free slot it
//     may use, and no queued node could be placed.
//  4. (Subtrees intact on leave is a property of operations; see the tests.)
//  5. Relay-class Go nodes have no re-encoding browser above them; no path
//     has more than MaxBrowserHops browser re-encodes (a pass-through
//     browser's hop is not one).
func (t *Tree) Check() error {
	var errs []error
	bad := func(format string, args ...any) {
		if len(errs) < 10 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	if t.root.id != "" && t.nodes[t.root.id] != t.root {
		bad("source %q not registered", t.root.id)
	}
	if t.root.parent != nil || t.root.depth != 0 || t.root.hops != 0 || !t.root.placed {
		bad("root state corrupt")
	}
	if t.root.cap < 1 || t.root.cap > t.cfg.SourceCapacity {
		bad("source capacity %d outside 1..%d", t.root.cap, t.cfg.SourceCapacity)
	}
	H := t.cfg.MaxBrowserHops
	seen := map[*node]bool{t.root: true}
	stack := []*node{t.root}
	placed := 1
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if len(n.children) > n.use {
			bad("%q has %d children, usable capacity %d (declared %d, trust %s)", n.id, len(n.children), n.use, n.cap, n.trust)
		}
		if n.use != t.usable(n) {
			bad("%q usable capacity %d, its trust %s and capacity %d give %d", n.id, n.use, n.trust, n.cap, t.usable(n))
		}
		for _, c := range n.children {
			if seen[c] {
				bad("%q reached twice (cycle or shared child)", c.id)
				continue
			}
			seen[c] = true
			placed++
			if c.parent != n {
				bad("%q listed under %q but its parent is %q", c.id, n.id, idOf(c.parent))
			}
			if !c.placed || c.queued {
				bad("%q in the tree but placed=%v queued=%v", c.id, c.placed, c.queued)
			}
			if c.depth != n.depth+1 || c.hops != t.below(n) {
				bad("%q depth/hops %d/%d, want %d/%d", c.id, c.depth, c.hops, n.depth+1, t.below(n))
			}
			if c.hops > H {
				bad("%q has %d browser hops above it, max %d", c.id, c.hops, H)
			}
			if t.relayClass(c) && c.hops != 0 {
				bad("Go relay %q below a browser", c.id)
			}
			stack = append(stack, c)
		}
	}
	queued := 0
	for id, n := range t.nodes {
		if n.id != id {
			bad("node %q registered as %q", n.id, id)
		}
		if n != t.root {
			if n.role != protocol.RoleRelay && n.role != protocol.RoleViewer {
				bad("%q has role %q", id, n.role)
			}
			if n.cap != t.clamp(n.kind, n.cap) {
				bad("%q capacity %d outside policy for %s", id, n.cap, n.kind)
			}
		}
		if n.queued && n.use != t.usable(n) {
			bad("queued %q usable capacity %d, want %d", id, n.use, t.usable(n))
		}
		switch {
		case n.queued:
			queued++
			if n.placed || n.parent != nil || len(n.children) != 0 {
				bad("queued %q still attached", id)
			}
		case !seen[n]:
			bad("%q neither placed below the root nor queued", id)
		}
	}
	t.checkStrict(bad)
	if want := len(t.nodes) - queued; placed-boolInt(t.root.id == "") != want {
		bad("%d placed nodes reachable, %d registered", placed, want)
	}
	if err := t.checkIndex(seen); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := t.checkCompact(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkIndex verifies that every heap holds exactly the nodes it should and
// keeps its order.
func (t *Tree) checkIndex(placed map[*node]bool) error {
	check := func(n *node) error {
		w := t.want(n)
		for k := range numHeaps {
			if n.heap[k] != w[k] {
				return fmt.Errorf("index: %q in the wrong heap (kind %d)", n.id, k)
			}
			if h := n.heap[k]; h != nil && h.items[n.hidx[k]] != n {
				return fmt.Errorf("index: %q has a stale position (kind %d)", n.id, k)
			}
		}
		return nil
	}
	for n := range placed {
		if err := check(n); err != nil {
			return err
		}
	}
	for _, n := range t.nodes {
		if n.queued {
			if err := check(n); err != nil {
				return err
			}
		}
	}
	heaps := []*nodeHeap{t.ix.qRelay, t.ix.qOther, t.ix.qBarred, t.ix.qStrict}
	heaps = append(heaps, t.ix.barred...)
	for d := range t.ix.slots {
		heaps = append(heaps, t.ix.slots[d]...)
		heaps = append(heaps, t.ix.leaves[d]...)
		heaps = append(heaps, t.ix.rleaves[d], t.ix.front[d])
	}
	for _, h := range heaps {
		for i, n := range h.items {
			if n.heap[h.kind] != h || n.hidx[h.kind] != i {
				return fmt.Errorf("index: heap holds %q at %d, node disagrees", n.id, i)
			}
			if i > 0 && h.less(n, h.items[(i-1)/2]) {
				return fmt.Errorf("index: heap order broken at %q", n.id)
			}
			if !placed[n] && !n.queued {
				return fmt.Errorf("index: heap holds departed %q", n.id)
			}
		}
	}
	return nil
}

// checkCompact verifies invariant 3 in the form placement maintains it.
func (t *Tree) checkCompact() error {
	H := t.cfg.MaxBrowserHops
	if s := t.bestSlot(H); s != nil {
		for d := s.depth + 2; d < len(t.ix.leaves); d++ {
			for h := range t.ix.classes {
				if l := t.ix.leaves[d][h].top(); l != nil {
					return fmt.Errorf("compact: leaf %q at depth %d while %q has a free slot at depth %d", l.id, d, s.id, s.depth)
				}
			}
		}
		if t.ix.qOther.len() > 0 {
			return fmt.Errorf("compact: %q queued while %q has a free slot", t.ix.qOther.top().id, s.id)
		}
		if t.ix.qBarred.len() > 0 {
			return fmt.Errorf("compact: barred %q queued while %q has a free slot", t.ix.qBarred.top().id, s.id)
		}
	}
	if s := t.bestSlot(0); s != nil {
		for d := s.depth + 2; d < len(t.ix.rleaves); d++ {
			if l := t.ix.rleaves[d].top(); l != nil {
				return fmt.Errorf("compact: relay leaf %q at depth %d while %q has a free Go slot at depth %d", l.id, d, s.id, s.depth)
			}
		}
		if t.ix.qRelay.len() > 0 {
			return fmt.Errorf("compact: relay %q queued while %q has a free Go slot", t.ix.qRelay.top().id, s.id)
		}
	}
	for c, h := range t.ix.barred {
		if b := h.top(); b != nil {
			if q := t.ix.qOther.top(); q != nil {
				return fmt.Errorf("compact: %q queued while barred %q holds a place", q.id, b.id)
			}
			if q := t.ix.qRelay.top(); q != nil && c == 0 {
				return fmt.Errorf("compact: relay %q queued while barred %q holds a place in the Go part", q.id, b.id)
			}
		}
	}
	if q := t.ix.qRelay.top(); q != nil {
		if v := t.frontAbove(len(t.ix.front)); v != nil {
			return fmt.Errorf("compact: relay %q queued while it could take %q's place", q.id, v.id)
		}
	}
	if q := t.ix.qOther.top(); q != nil && q.use > 0 {
		if v := t.leafAbove(len(t.ix.leaves), q.use); v != nil {
			return fmt.Errorf("compact: %q queued while it could take leaf %q's place", q.id, v.id)
		}
	}
	return nil
}
