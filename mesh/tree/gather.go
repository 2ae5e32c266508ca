package tree

import (
	"fmt"
	"maps"
	"slices"
)

// KeepChildren, as a capacity given to Gather, is the number of children
// the node has once the moves are done (at least one for the source): it
// sheds none and takes no more.
const KeepChildren = -1

// Gather moves each of ids, with its subtree, directly below parent while
// parent has room, then gives every node in caps its new capacity
// (clamped as SetCapacity clamps it, or KeepChildren; children beyond it
// are re-attached elsewhere), and settles once. An id that is unknown, queued, the root,
// parent itself, already parent's child, above parent, or whose subtree
// may not sit below it stays where it is. caps[parent] is applied before
// the moves, so that parent has the room.
//
// It is for a server that hands a small audience back to a node of its
// own (server -p2p-min-viewers): the moves free slots above parent (the
// source's), which compaction would otherwise fill again at once with the
// very leaves just moved; lowering those capacities in the same step
// keeps the audience where it was put.
func (t *Tree) Gather(parent string, ids []string, caps map[string]int) ([]Change, error) {
	p := t.nodes[parent]
	switch {
	case p == nil:
		return nil, fmt.Errorf("%w: %q", ErrUnknown, parent)
	case !p.placed:
		return nil, fmt.Errorf("%w: %q is not placed", ErrInvalid, parent)
	}
	for id, c := range caps {
		if t.nodes[id] == nil {
			return nil, fmt.Errorf("%w: %q", ErrUnknown, id)
		}
		if c < KeepChildren {
			return nil, fmt.Errorf("%w: capacity %d", ErrInvalid, c)
		}
	}
	if c, ok := caps[parent]; ok && c != KeepChildren {
		t.setCap(p, c)
	}
	var ch []Change
	for _, id := range ids {
		n := t.nodes[id]
		if n == nil || !n.placed || n == t.root || n == p || n.parent == p || len(p.children) >= p.use ||
			t.Under(parent, id) || t.below(p) > t.allowedClass(n) || !t.feeds(p, n) {
			continue
		}
		t.move(n, p, &ch)
	}
	// KeepChildren last: what the others shed may have found room there.
	ids = slices.Sorted(maps.Keys(caps))
	slices.SortStableFunc(ids, func(a, b string) int {
		return btoi(caps[a] == KeepChildren) - btoi(caps[b] == KeepChildren)
	})
	for _, id := range ids {
		if id == parent {
			continue
		}
		n := t.nodes[id]
		c := caps[id]
		if c == KeepChildren {
			c = len(n.children)
			if n == t.root {
				c = max(c, 1) // the source's 0 means its default
			}
		}
		t.setCap(n, c)
		if n.placed {
			t.shed(n, &ch)
		}
	}
	t.settle(&ch)
	return ch, nil
}

// setCap sets n's declared capacity as SetCapacity does (for the root, 0
// means Config.SourceCapacity) and its usable capacity, without moving
// anything.
func (t *Tree) setCap(n *node, capacity int) {
	if n == t.root {
		if capacity == 0 || capacity > t.cfg.SourceCapacity {
			capacity = t.cfg.SourceCapacity
		}
	} else {
		capacity = t.clamp(n.kind, capacity)
	}
	n.cap = capacity
	n.use = t.usable(n)
	t.reindex(n)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
