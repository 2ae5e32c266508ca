package tree

import (
	"fmt"
	"slices"

	"canopy/mesh/protocol"
)

// Restore rebuilds a tree from a Snapshot of another one (a stream's new
// owner rebuilding the tree its dead owner had): every node goes back under
// the parent the snapshot names, with its capacity, trust, measured bound
// (an Usable below what its trust allows) and pass-through, so nothing
// moves. Nodes whose parent the snapshot does not hold, and queued nodes,
// are placed as a new node would be. The result is then checked; if it
// breaks an invariant (a snapshot from a build with another policy, say),
// the rebuilt tree is thrown away and every node is placed afresh, source
// first and shallowest first, which keeps most edges where placement
// agrees. The Changes say which nodes' parents differ from the snapshot's;
// fixed reports that the fallback ran, with the Check error that caused it.
func Restore(cfg Config, nodes []NodeInfo) (t *Tree, ch []Change, fixed error) {
	t = New(cfg)
	if err := t.graft(nodes, &ch); err == nil {
		if err = t.Check(); err == nil {
			return t, ch, nil
		}
		fixed = err
	} else {
		fixed = err
	}
	t, ch = New(cfg), nil
	t.replace(nodes, &ch)
	return t, ch, fixed
}

// byDepth orders a snapshot shallowest first, then by id (a stable order
// for ties: the original join order is not in a snapshot).
func byDepth(nodes []NodeInfo) []NodeInfo {
	out := slices.Clone(nodes)
	slices.SortFunc(out, func(a, b NodeInfo) int {
		da, db := a.Depth, b.Depth
		if da < 0 {
			da = 1 << 30
		}
		if db < 0 {
			db = 1 << 30
		}
		if da != db {
			return da - db
		}
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

// restored makes the node info describes, not yet in the tree.
func (t *Tree) restored(info NodeInfo) (*node, error) {
	switch {
	case !protocol.ValidID(info.ID):
		return nil, fmt.Errorf("%w: id %q", ErrInvalid, info.ID)
	case info.Role != protocol.RoleRelay && info.Role != protocol.RoleViewer:
		return nil, fmt.Errorf("%w: role %q", ErrInvalid, info.Role)
	case info.Kind != protocol.KindGo && info.Kind != protocol.KindBrowser:
		return nil, fmt.Errorf("%w: kind %q", ErrInvalid, info.Kind)
	case info.Trust > TrustBarred || info.Capacity < 0:
		return nil, fmt.Errorf("%w: %q trust %d capacity %d", ErrInvalid, info.ID, info.Trust, info.Capacity)
	case t.nodes[info.ID] != nil:
		return nil, fmt.Errorf("%w: %q", ErrExists, info.ID)
	}
	t.seq++
	n := &node{id: info.ID, role: info.Role, kind: info.Kind, cap: t.clamp(info.Kind, info.Capacity),
		seq: t.seq, trust: info.Trust, passthrough: info.Passthrough}
	if info.Usable >= 0 && info.Usable < t.trustUsable(n) {
		n.measured, n.sustain = true, info.Usable // its measured upload held it there
	}
	n.use = t.usable(n)
	for k := range n.hidx {
		n.hidx[k] = -1
	}
	return n, nil
}

// setRoot puts the snapshot's source (if any) at the root.
func (t *Tree) setRoot(nodes []NodeInfo) {
	for _, info := range nodes {
		if info.Role == protocol.RoleSource && protocol.ValidID(info.ID) {
			c := info.Capacity
			if c <= 0 || c > t.cfg.SourceCapacity {
				c = t.cfg.SourceCapacity
			}
			t.root.cap, t.root.use = c, c
			t.root.id = info.ID
			t.seq++
			t.root.seq = t.seq
			t.nodes[info.ID] = t.root
			t.reindex(t.root)
			return
		}
	}
	// A vacant root keeps the last source's capacity, which a snapshot does
	// not say: as many slots as it has children, so none is free.
	kids := 0
	for _, info := range nodes {
		if info.Parent == "" && info.Depth == 1 {
			kids++
		}
	}
	if kids > 0 && kids < t.cfg.SourceCapacity {
		t.root.cap, t.root.use = kids, kids
		t.reindex(t.root)
	}
}

// graft puts every node back under its snapshot parent, shallowest first.
func (t *Tree) graft(nodes []NodeInfo, ch *[]Change) error {
	t.setRoot(nodes)
	var later []*node
	var laterFrom []string
	for _, info := range byDepth(nodes) {
		if info.Role == protocol.RoleSource {
			continue
		}
		n, err := t.restored(info)
		if err != nil {
			return err
		}
		t.nodes[n.id] = n
		var p *node
		switch {
		case info.Queued || info.Depth < 0:
			n.queued = true
			t.reindex(n)
			continue
		case info.Parent == "" && info.Depth == 1:
			p = t.root // below a vacant root, waiting for a source
		case info.Parent != "":
			p = t.nodes[info.Parent]
		}
		if p == nil || !p.placed || p.queued {
			later, laterFrom = append(later, n), append(laterFrom, info.Parent)
			continue
		}
		t.attach(n, p)
	}
	for i, n := range later {
		if !t.place(n, nil, ch) {
			n.queued = true
			t.reindex(n)
			*ch = append(*ch, Change{Node: n.id, From: laterFrom[i]})
			continue
		}
		if k := len(*ch) - 1; k >= 0 && (*ch)[k].Node == n.id {
			(*ch)[k].From = laterFrom[i]
		}
	}
	t.settle(ch)
	return nil
}

// replace places every node afresh, shallowest first; the Changes are
// those whose parent is not the snapshot's.
func (t *Tree) replace(nodes []NodeInfo, ch *[]Change) {
	t.setRoot(nodes)
	was := make(map[string]string, len(nodes))
	for _, info := range byDepth(nodes) {
		if info.Role == protocol.RoleSource {
			continue
		}
		n, err := t.restored(info)
		if err != nil {
			continue // a node the snapshot got wrong: its peer joins again
		}
		was[n.id] = info.Parent
		t.nodes[n.id] = n
		if !t.place(n, nil, new([]Change)) {
			n.queued = true
			t.reindex(n)
		}
	}
	t.settle(new([]Change))
	ids := make([]string, 0, len(was))
	for id := range was {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		now, _ := t.Parent(id)
		if now != was[id] {
			*ch = append(*ch, Change{Node: id, From: was[id], To: now})
		}
	}
}
