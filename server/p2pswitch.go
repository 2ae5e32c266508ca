package main

import (
	"slices"
	"strings"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Switching a gated stream's tree on and off (-p2p-min-viewers, see
// p2pmin.go): which peers get which capacity, and who moves where, in an
// order that never cuts a viewer off to be queued.

// switchGate turns the tree on or off (openGate, closeGate): it gives
// every peer the capacity the gate allows now, and moves who must move.
// Every move is a Change the caller applies, make before break, and the
// order makes room before it is needed, so no viewer is ever cut off to
// be queued.
func (c *coordinator) switchGate(open bool, audience int) []tree.Change {
	g := c.gate
	var ch []tree.Change
	if open {
		ch = c.openGate()
		c.log.Info("p2p tree on", "viewers", audience, "threshold", g.min, "moves", len(ch), "kept", g.kept)
	} else {
		ch = c.closeGate()
		if g.open {
			c.log.Warn("p2p tree stays on: the server's relay cannot be moved under the source", "relay", g.relay)
			return ch
		}
		c.log.Info("p2p tree off: the server's relay feeds every viewer", "viewers", audience, "threshold", g.min, "moves", len(ch))
	}
	g.switched, g.lowSince = time.Now(), time.Time{}
	g.switches++
	return ch
}

// gateSet gives id the capacity the gate allows it now.
func (c *coordinator) gateSet(id string) []tree.Change {
	q := c.peers[id]
	if q == nil || q.hello == nil {
		return nil
	}
	ch, err := c.tree.SetCapacity(id, c.gate.capacity(id, q.hello.Role))
	if err != nil {
		c.log.Warn("gate capacity", "peer", id, "err", err)
	}
	return ch
}

// gateMove moves id, with its subtree, below parent (tree.Adopt); false if
// the tree refused (no room, or parent is below id).
func (c *coordinator) gateMove(id, parent string, ch *[]tree.Change) bool {
	more, err := c.tree.Adopt(id, parent)
	if err != nil {
		return false
	}
	*ch = append(*ch, more...)
	return true
}

// sortedViewers are the audience's ids, shallowest first.
func (c *coordinator) sortedViewers() []string {
	ids := make([]string, 0, len(c.gate.viewers))
	for id := range c.gate.viewers {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		if d := c.tree.Depth(a) - c.tree.Depth(b); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	return ids
}

// openGate hands the relay's children to the tree, Go peers first (a Go
// parent forwards the source's packets as they are; a Go viewer moved
// below a Chromium relay here went 3-4 s without a frame in 3 of 4 runs,
// see README), then those that may feed others (their new places are room
// for the ones after them):
//  1. in one step (tree.Gather) the source gets its slots back and the
//     first children take them, leaving room for the viewer that turned
//     the tree on, which waits in the queue; restoring the source's
//     capacity alone would let compaction pull the relay's children up in
//     its own order;
//  2. the viewers get their slots back;
//  3. the rest go below a Go viewer with room, else to the best place the
//     tree has outside the relay (tree.Reattach), else stay where they are
//     (viewers that feed nobody, a full source): nobody is cut off to be
//     queued. The relay keeps room for those that stayed and nothing more.
func (c *coordinator) openGate() []tree.Change {
	g := c.gate
	g.open = true
	_, relayPlaced := c.tree.Parent(g.relay)
	relayPlaced = relayPlaced && g.relay != ""
	var kids []string
	if relayPlaced {
		kids = c.tree.Children(g.relay)
	}
	isGo := func(id string) bool {
		q := c.peers[id]
		return q != nil && q.hello != nil && q.hello.Kind == protocol.KindGo
	}
	slices.SortStableFunc(kids, func(a, b string) int {
		if ga, gb := isGo(a), isGo(b); ga != gb {
			if ga {
				return -1
			}
			return 1
		}
		return c.tree.Usable(b) - c.tree.Usable(a)
	})
	var ch []tree.Change
	if c.source != nil {
		src := c.source.id
		room := c.gate.capacity(src, protocol.RoleSource)
		if room == 0 || room > c.policy.SourceCapacity {
			room = c.policy.SourceCapacity
		}
		room -= len(c.tree.Children(src))
		for _, id := range c.sortedViewers() {
			if c.tree.Queued(id) {
				room--
			}
		}
		first := kids[:min(max(room, 0), len(kids))]
		more, err := c.tree.Gather(src, first, map[string]int{src: c.gate.capacity(src, protocol.RoleSource)})
		if err != nil {
			c.log.Warn("gate gather", "err", err)
		}
		ch = append(ch, more...)
	}
	for _, id := range c.sortedViewers() {
		ch = append(ch, c.gateSet(id)...)
	}
	if !relayPlaced {
		return ch
	}
	for _, k := range c.tree.Children(g.relay) {
		if isGo(k) && c.belowGoViewer(k, &ch) {
			continue
		}
		more, err := c.tree.Reattach(k)
		if err != nil {
			c.log.Warn("gate move", "peer", k, "err", err)
			continue
		}
		ch = append(ch, more...)
	}
	g.kept = len(c.tree.Children(g.relay))
	return append(ch, c.gateSet(g.relay)...)
}

// belowGoViewer moves Go peer id below a Go viewer among the source's
// children that has room for it.
func (c *coordinator) belowGoViewer(id string, ch *[]tree.Change) bool {
	if c.source == nil {
		return false
	}
	for _, p := range c.tree.Children(c.source.id) {
		q := c.peers[p]
		if p == id || p == c.gate.relay || q == nil || q.hello == nil || q.hello.Kind != protocol.KindGo ||
			q.hello.Role != protocol.RoleViewer || c.tree.Free(p) == 0 {
			continue
		}
		if c.gateMove(id, p, ch) {
			return true
		}
	}
	return false
}

// closeGate: the relay gets its N slots and goes directly under the
// source (taking one of the source's children along if the source is
// full); then, in one step (tree.Gather), every viewer under the source or
// under another viewer moves below the relay, shallowest first (a
// viewer's subtree moves with it, and its own children follow it), the
// viewers lose their slots and the source keeps only the children left
// (the relay, and Go relays), so nothing is shed and compaction pulls
// nobody back. If the relay cannot be put under the source (a source of
// capacity 1 whose one child sits above it), the tree stays on.
func (c *coordinator) closeGate() []tree.Change {
	g := c.gate
	src := c.tree.Source()
	if _, placed := c.tree.Parent(g.relay); !placed || g.relay == "" || src == "" {
		return nil // regate does not close without them
	}
	g.open = false
	ch := c.gateSet(g.relay)
	if p, _ := c.tree.Parent(g.relay); p != src {
		if c.tree.Free(src) == 0 {
			for _, k := range c.tree.Children(src) {
				if !c.tree.Under(g.relay, k) && c.gateMove(k, g.relay, &ch) {
					break
				}
			}
		}
		if !c.gateMove(g.relay, src, &ch) {
			g.open = true
			return append(ch, c.gateSet(g.relay)...)
		}
	}
	viewers := c.sortedViewers()
	var move []string
	caps := map[string]int{src: tree.KeepChildren}
	for _, id := range viewers {
		caps[id] = 0
		p, placed := c.tree.Parent(id)
		if !placed || p == g.relay {
			continue
		}
		if q := c.peers[p]; p == src || q != nil && q.hello != nil && q.hello.Role == protocol.RoleViewer {
			move = append(move, id) // a viewer's room under a Go relay it may keep
		}
	}
	more, err := c.tree.Gather(g.relay, move, caps)
	if err != nil {
		c.log.Warn("gate gather", "err", err)
	}
	ch = append(ch, more...)
	g.kept, g.srcKept = 0, c.tree.Capacity(src)
	return ch
}
