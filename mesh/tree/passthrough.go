package tree

import (
	"fmt"

	"canopy/mesh/protocol"
)

// reencodes reports whether n's children receive a stream n decoded and
// encoded again: a browser that relays its decoded track. A pass-through
// browser forwards the encoded frames it receives, byte for byte, so its hop
// costs no quality and does not count against MaxBrowserHops.
func reencodes(n *node) bool {
	return n.kind == protocol.KindBrowser && !n.passthrough
}

// SetPassthrough records that browser id relays the encoded frames it
// receives unchanged (its hello said so). The re-encode count of everything
// below it drops by one, which never breaks a bound, so nobody moves; room
// it opens for re-encoding relays may place queued nodes, reported as
// Changes. A browser's mode lasts as long as its session (a reconnect is a
// new node), so there is no way back.
func (t *Tree) SetPassthrough(id string) ([]Change, error) {
	n := t.nodes[id]
	switch {
	case n == nil:
		return nil, fmt.Errorf("%w: %q", ErrUnknown, id)
	case n.kind != protocol.KindBrowser:
		return nil, fmt.Errorf("%w: %q is not a browser", ErrInvalid, id)
	case n.passthrough:
		return nil, nil
	case n.noverify:
		return nil, fmt.Errorf("%w: %q cannot verify, so it cannot pass frames through", ErrInvalid, id)
	}
	n.passthrough = true
	t.touch(n)
	var ch []Change
	if n.placed {
		t.setPos(n, n.depth, n.hops) // recomputes the hops of its subtree
	}
	t.settle(&ch)
	return ch, nil
}

// carriesRelay reports whether a relay-class node is in n's subtree. Only a
// pass-through browser's subtree can hold one (a Go relay may take a slot
// with no re-encode above it), and the walk stops at the first relay: the
// browser part of a subtree is small (capacity^depth of browsers).
func (t *Tree) carriesRelay(n *node) bool {
	for _, c := range n.children {
		if t.relayClass(c) || t.carriesRelay(c) {
			return true
		}
	}
	return false
}
