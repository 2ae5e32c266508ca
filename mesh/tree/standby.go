package tree

import (
	"errors"
	"fmt"
)

// ErrNoSlot means the parent named for Adopt has no free slot, or its
// position cannot bear the node's subtree.
var ErrNoSlot = errors.New("tree: no usable slot at that parent")

// Under reports whether id is anc or one of anc's descendants. Both must be
// placed; unknown or queued ids give false. It walks up from id: O(depth).
func (t *Tree) Under(id, anc string) bool {
	n, a := t.nodes[id], t.nodes[anc]
	if n == nil || a == nil || !n.placed || !a.placed {
		return false
	}
	for m := n; m != nil; m = m.parent {
		if m == a {
			return true
		}
	}
	return false
}

// Free returns how many more children id may take now (0 for unknown,
// queued or full nodes).
func (t *Tree) Free(id string) int {
	n := t.nodes[id]
	if n == nil || !n.placed {
		return 0
	}
	return max(n.use-len(n.children), 0)
}

// Adopt moves id, with its subtree, below parent: a child taking up its hot
// standby parent when its own parent failed. parent must be placed, outside
// id's subtree, have a free slot it may use now (trust included), and sit where id's subtree may go (a Go
// relay below Go only, no path over MaxBrowserHops re-encodes); otherwise
// the tree is unchanged and the error says why. Freed room then places
// queued nodes, as every operation does.
func (t *Tree) Adopt(id, parent string) ([]Change, error) {
	n, p := t.nodes[id], t.nodes[parent]
	switch {
	case n == nil || p == nil:
		return nil, fmt.Errorf("%w: %q or %q", ErrUnknown, id, parent)
	case n == t.root || !n.placed || !p.placed:
		return nil, fmt.Errorf("%w: %q cannot move below %q", ErrInvalid, id, parent)
	case n.parent == p:
		return nil, nil
	case t.Under(parent, id):
		return nil, fmt.Errorf("%w: %q is in %q's subtree", ErrInvalid, parent, id)
	case len(p.children) >= p.use:
		return nil, fmt.Errorf("%w: %q is full", ErrNoSlot, parent)
	case t.below(p) > t.allowedClass(n):
		return nil, fmt.Errorf("%w: %q's subtree would pass too many re-encodes below %q", ErrNoSlot, id, parent)
	case !t.feeds(p, n):
		return nil, fmt.Errorf("%w: %q cannot verify and %q forwards signatures", ErrNoSlot, id, parent)
	}
	var ch []Change
	t.move(n, p, &ch)
	t.settle(&ch)
	return ch, nil
}

// Capacity returns id's declared capacity after clamping by policy, not
// bounded by trust (0 for unknown ids).
func (t *Tree) Capacity(id string) int {
	if n := t.nodes[id]; n != nil {
		return n.cap
	}
	return 0
}

// StandbysOf returns Standby for each child of id, from one departure
// plan: what each would get if id crashed now. Nil for unknown ids, for
// the source's children (they would wait for a new source) and for a node
// without children.
func (t *Tree) StandbysOf(id string) map[string]string {
	n := t.nodes[id]
	if n == nil || !n.placed || n == t.root || len(n.children) == 0 {
		return nil
	}
	p := t.planOrphans(n)
	out := make(map[string]string, len(n.children))
	for _, c := range n.children {
		to, _ := p.planned(c)
		out[c.id] = idOf(to)
	}
	return out
}
