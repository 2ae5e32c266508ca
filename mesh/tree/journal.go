package tree

import (
	"slices"

	"canopy/mesh/protocol"
)

// A journal records which nodes changed, so a user that keeps a copy of
// the tree elsewhere (a stream's state, published to the other servers of
// a cluster) sends what changed, not the whole tree: O(change), not O(N).
// A node counts as changed when its own row of a Snapshot changes, Depth
// and Hops aside: a move changes the depth of a whole subtree, and a copy
// derives depths from the parents (see Depths). Removed nodes are
// recorded too: Info then finds nothing.

// Journal starts (on) or stops recording changed nodes; stopping forgets
// what was recorded.
func (t *Tree) Journal(on bool) {
	switch {
	case on && t.journal == nil:
		t.journal = make(map[string]struct{})
	case !on:
		t.journal = nil
	}
}

// Touched returns the ids of the nodes changed or removed since the last
// call (or since the journal started), sorted, and starts afresh.
func (t *Tree) Touched() []string {
	if len(t.journal) == 0 {
		return nil
	}
	ids := make([]string, 0, len(t.journal))
	for id := range t.journal {
		ids = append(ids, id)
	}
	clear(t.journal)
	slices.Sort(ids)
	return ids
}

// touch records n as changed.
func (t *Tree) touch(n *node) {
	if t.journal != nil && n.id != "" {
		t.journal[n.id] = struct{}{}
	}
}

// Info describes the node id as Snapshot would; false if it is not in
// the tree.
func (t *Tree) Info(id string) (NodeInfo, bool) {
	n := t.nodes[id]
	if n == nil || id == "" {
		return NodeInfo{}, false
	}
	return t.info(n), true
}

// Depths sets each node's Depth from the parents the rows name (a copy
// whose rows were recorded at different times has stale depths below a
// moved node): the source 0, a child of the vacant root 1, queued or
// unplaced nodes (Depth < 0) and nodes whose parents do not lead to the
// root -1. It also sets each row's Children from the parents, sorted.
func Depths(nodes []NodeInfo) {
	at := make(map[string]int, len(nodes))
	for i, n := range nodes {
		at[n.ID] = i
		nodes[i].Children = nil
	}
	const unknown = -2
	depth := make([]int, len(nodes))
	for i := range depth {
		depth[i] = unknown
	}
	var walk func(i, steps int) int
	walk = func(i, steps int) int {
		if depth[i] != unknown {
			return depth[i]
		}
		n := &nodes[i]
		d := -1
		switch {
		case steps > len(nodes): // a cycle
		case n.Role == protocol.RoleSource:
			d = 0
		case n.Queued || n.Depth < 0:
		case n.Parent == "":
			d = 1
		default:
			if j, ok := at[n.Parent]; ok {
				if pd := walk(j, steps+1); pd >= 0 && !nodes[j].Queued {
					d = pd + 1
				}
			}
		}
		depth[i] = d
		return d
	}
	for i := range nodes {
		nodes[i].Depth = walk(i, 0)
	}
	for i, n := range nodes {
		if j, ok := at[n.Parent]; ok && n.Parent != "" && nodes[i].Depth >= 0 {
			nodes[j].Children = append(nodes[j].Children, n.ID)
		}
	}
	for i := range nodes {
		slices.Sort(nodes[i].Children)
		if nodes[i].Children == nil {
			nodes[i].Children = []string{}
		}
	}
}
