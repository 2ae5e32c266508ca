package tree

import (
	"fmt"
	"slices"

	"canopy/mesh/protocol"
)

// Browsers that cannot verify (README "Signed frames in the browser"). A
// browser without a receive transform cannot check the source's frame
// signatures, nor take the VP8/Opus trailer off before its decoder sees it
// (broken audio, maybe picture). While the stream is signed (SetSigned),
// such a node is strict: its parent must be one whose frames carry no
// signature for it, either a node that strips them for it (the server's
// own relay node, SetStrips) or a browser that re-encodes (its output is
// unsigned). The rule is about the edge alone, so it survives moves of
// the parent with its subtree: a parent's hops change when it moves, its
// kind and mode do not. Never a Go relay or a pass-through browser, which
// forward the trailers. A strict node with nowhere to go waits in the
// queue (its own, so it never holds up the others) until a stripping
// parent has room.

// JoinOptions are what a hello says beyond role, kind and capacity.
type JoinOptions struct {
	// NoVerify: a browser that cannot check or strip signatures.
	NoVerify bool
}

// JoinWith is Join for a node with options: a NoVerify browser is placed
// by the strict rule from the start while the stream is signed.
func (t *Tree) JoinWith(id string, role Role, kind Kind, capacity int, o JoinOptions) ([]Change, error) {
	if o.NoVerify && kind != protocol.KindBrowser {
		return nil, fmt.Errorf("%w: %q: only a browser declares noVerify", ErrInvalid, id)
	}
	t.pendingNoVerify = o.NoVerify
	defer func() { t.pendingNoVerify = false }()
	return t.Join(id, role, kind, capacity)
}

// SetStrips records that id takes the signatures off what it sends its
// children that cannot verify: the server's relay node. Queued strict
// nodes may find a place with it, reported as Changes.
func (t *Tree) SetStrips(id string) ([]Change, error) {
	n := t.nodes[id]
	switch {
	case n == nil:
		return nil, fmt.Errorf("%w: %q", ErrUnknown, id)
	case n == t.root || n.kind != protocol.KindGo:
		return nil, fmt.Errorf("%w: %q: only a Go relay or viewer strips", ErrInvalid, id)
	case n.strips:
		return nil, nil
	}
	n.strips = true
	t.touch(n)
	t.strippers[n] = true
	var ch []Change
	t.settle(&ch)
	return ch, nil
}

// SetSigned says whether the stream's frames are signed now (its source
// declared a key). Turning it on moves every strict node whose parent
// forwards signatures, with its subtree, to a parent that strips or
// re-encodes; the server carries the moves out make before break. One
// with no such parent yet stays where it is, playing (Misplaced), rather
// than be cut off, and moves as soon as a parent that feeds it has room
// (the server's relay joining, say). Turning it off moves nobody;
// placement treats those nodes as any other from then on.
func (t *Tree) SetSigned(signed bool) []Change {
	if t.signed == signed {
		return nil
	}
	t.signed = signed
	for n := range t.noverify {
		t.reindex(n) // strict or not changes their heaps
		if t.strict(n) && n.placed && n.parent != nil && !t.feeds(n.parent, n) {
			t.misplaced[n] = true
		}
	}
	var ch []Change
	t.settle(&ch)
	return ch
}

// Misplaced returns the nodes that cannot verify and still hang below a
// parent that forwards signatures, waiting for one that feeds them
// (SetSigned), sorted.
func (t *Tree) Misplaced() []string {
	out := make([]string, 0, len(t.misplaced))
	for n := range t.misplaced {
		out = append(out, n.id)
	}
	slices.Sort(out)
	return out
}

// reseat moves one misplaced node, with its subtree, to a parent that
// feeds it, and forgets those that no longer need it (moved by another
// operation, queued, or the stream unsigned).
func (t *Tree) reseat(ch *[]Change) bool {
	if len(t.misplaced) == 0 {
		return false
	}
	ns := make([]*node, 0, len(t.misplaced))
	for n := range t.misplaced {
		if !t.strict(n) || !n.placed || n.parent == nil || t.feeds(n.parent, n) {
			delete(t.misplaced, n)
			continue
		}
		ns = append(ns, n)
	}
	for _, n := range t.rank(ns) {
		p := newPlanner(t)
		p.setPending(n, true) // nothing of its own subtree
		if s := p.findSlot(n, t.allowedClass(n)); s != nil {
			delete(t.misplaced, n)
			t.move(n, s, ch)
			return true
		}
	}
	return false
}

// Signed reports what SetSigned said last.
func (t *Tree) Signed() bool { return t.signed }

// strict reports whether n may hang only below a parent whose frames carry
// no signature for it.
func (t *Tree) strict(n *node) bool { return t.signed && n.noverify }

// feeds reports whether p may be n's parent as far as signatures go.
func (t *Tree) feeds(p, n *node) bool {
	return !t.strict(n) || p.strips || (p != t.root && reencodes(p))
}

// placeStrict puts a strict node without children at the shallowest free
// slot of a parent that feeds it (a stripping node first at equal depth,
// being the server's own), or in the place of a leaf child of a stripping
// node that has a place elsewhere; false if neither exists.
func (t *Tree) placeStrict(n, from *node, ch *[]Change) bool {
	var best *node
	for s := range t.strippers {
		if s.placed && len(s.children) < s.use && t.below(s) <= t.cfg.MaxBrowserHops &&
			(best == nil || s.depth < best.depth || s.depth == best.depth && s.seq < best.seq) {
			best = s
		}
	}
	p := newPlanner(t)
	for d := range t.ix.slots {
		if best != nil && d >= best.depth {
			break
		}
		for c := 1; c < t.ix.classes; c++ {
			if s := p.search(t.ix.slots[d][c], func(s *node) bool { return t.feeds(s, n) }); s != nil {
				best = s
				break
			}
		}
		if best != nil && best.depth == d {
			break
		}
	}
	if best != nil {
		t.attach(n, best)
		t.note(ch, n, from, best)
		return true
	}
	if n.trust == TrustBarred {
		return false
	}
	// Every stripping parent is full: take the place of one of their
	// leaves that has somewhere else to go, and place it again.
	for s := range t.strippers {
		if !s.placed || t.below(s) > t.cfg.MaxBrowserHops {
			continue
		}
		for _, v := range t.rank(s.children) {
			if len(v.children) > 0 || t.strict(v) || t.bestSlot(t.allowedClass(v)) == nil {
				continue
			}
			t.detach(v)
			v.placed = false
			t.reindex(v)
			t.attach(n, s)
			t.note(ch, n, from, s)
			if !t.place(v, s, ch) {
				v.queued = true
				t.reindex(v)
				t.note(ch, v, s, nil)
			}
			return true
		}
	}
	return false
}

// checkStrict verifies that every strict node hangs below a parent that
// feeds it, and that the strict queue holds only strict nodes.
func (t *Tree) checkStrict(bad func(string, ...any)) {
	for n := range t.noverify {
		if t.nodes[n.id] != n {
			bad("noverify %q is not in the tree", n.id)
		}
		if n.placed && n.parent != nil && !t.feeds(n.parent, n) && !t.misplaced[n] {
			bad("%q cannot verify but hangs below %q, which forwards signatures", n.id, n.parent.id)
		}
	}
	for s := range t.strippers {
		if t.nodes[s.id] != s {
			bad("stripping %q is not in the tree", s.id)
		}
	}
	for n := range t.misplaced {
		switch {
		case t.nodes[n.id] != n || !t.strict(n) || !n.placed || n.parent == nil || t.feeds(n.parent, n):
			bad("%q listed as misplaced, but it is not", n.id)
		default:
			p := newPlanner(t)
			p.setPending(n, true)
			if s := p.findSlot(n, t.allowedClass(n)); s != nil {
				bad("%q misplaced below %q while %q could feed it", n.id, n.parent.id, s.id)
			}
		}
	}
	for _, n := range t.ix.qStrict.items {
		if !t.strict(n) {
			bad("%q in the strict queue but not strict", n.id)
		}
	}
}

// NoVerify reports whether id declared it cannot verify (JoinWith).
func (t *Tree) NoVerify(id string) bool {
	n := t.nodes[id]
	return n != nil && n.noverify
}

// Strips reports whether id strips signatures for such children (SetStrips).
func (t *Tree) Strips(id string) bool {
	n := t.nodes[id]
	return n != nil && n.strips
}

// NoVerifyLen returns the number of nodes that cannot verify.
func (t *Tree) NoVerifyLen() int { return len(t.noverify) }
