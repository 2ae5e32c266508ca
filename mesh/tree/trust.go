package tree

import (
	"encoding/json"
	"fmt"

	"canopy/mesh/protocol"
)

// Trust is what a node has shown of forwarding media; it bounds the
// children placement gives it (its usable capacity). With Config.Prove a
// node joins as TrustNew; the server raises it as the node plays and its
// children play from it, and lowers it on evidence that it does not
// deliver. Without Prove every node joins as TrustProven.
type Trust uint8

// Trust levels, from what a node has shown.
const (
	// TrustNew has not played from its parent yet: no children, so a peer
	// that never connects media never gets any. Except a node that joined
	// as a relay (with auth on that takes a relay grant): it gets one child
	// on trial at once, so that it can enter a full tree by taking a
	// viewer's place (the viewer keeps its old feed until it plays from the
	// relay: make before break).
	TrustNew Trust = iota
	// TrustPlayed plays from its parent but no child has played from it
	// yet: one child at a time, on trial.
	TrustPlayed
	// TrustProven has had a child play from it: its full clamped capacity.
	TrustProven
	// TrustHeld is held back by the server (stall evidence, probation): no
	// children, but it keeps its own place.
	TrustHeld
	// TrustBarred never delivered to a child, or never played: no children,
	// and a node with nowhere else to go takes its place (it is queued).
	TrustBarred
)

var trustNames = [...]string{"new", "played", "proven", "held", "barred"}

func (tr Trust) String() string {
	if int(tr) < len(trustNames) {
		return trustNames[tr]
	}
	return fmt.Sprintf("trust(%d)", uint8(tr))
}

// MarshalJSON writes the name, for the dashboard and the tree API.
func (tr Trust) MarshalJSON() ([]byte, error) { return json.Marshal(tr.String()) }

// UnmarshalJSON reads a name written by MarshalJSON.
func (tr *Trust) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	for i, name := range trustNames {
		if name == s {
			*tr = Trust(i)
			return nil
		}
	}
	return fmt.Errorf("%w: trust %q", ErrInvalid, s)
}

// trustUsable is n's capacity as its trust allows: a node on trial feeds
// one child, so a peer that lies about forwarding strands one viewer for a
// few seconds (until that viewer reports it) rather than a subtree. usable
// bounds it by the measured upload too (sustain.go).
func (t *Tree) trustUsable(n *node) int {
	if n == t.root {
		return n.cap
	}
	switch n.trust {
	case TrustProven:
		return n.cap
	case TrustPlayed:
		return min(n.cap, 1)
	case TrustNew:
		if n.role == protocol.RoleRelay {
			return min(n.cap, 1)
		}
	}
	return 0
}

// Trust returns id's trust level; the source is always TrustProven.
func (t *Tree) Trust(id string) (Trust, bool) {
	n := t.nodes[id]
	if n == nil {
		return 0, false
	}
	return n.trust, true
}

// Usable returns the number of children id may have now (its capacity
// bounded by its trust), or -1 if id is unknown.
func (t *Tree) Usable(id string) int {
	n := t.nodes[id]
	if n == nil {
		return -1
	}
	return n.use
}

// SetTrust sets id's trust level. Children beyond the new usable capacity
// move, with their subtrees, lowest ranked first; a Go node that becomes a
// relay below a browser moves up to the Go part of the tree; a barred leaf
// is handed to a queued node; added room places queued nodes. The source's
// trust never changes (a no-op).
func (t *Tree) SetTrust(id string, tr Trust) ([]Change, error) {
	n := t.nodes[id]
	switch {
	case n == nil:
		return nil, fmt.Errorf("%w: %q", ErrUnknown, id)
	case tr > TrustBarred:
		return nil, fmt.Errorf("%w: trust %d", ErrInvalid, tr)
	case n == t.root || n.trust == tr:
		return nil, nil
	}
	var ch []Change
	n.trust = tr
	t.refit(n, &ch)
	return ch, nil
}

// Reattach moves id, with its subtree, to the best place outside its
// parent's subtree: for a child that cannot receive from a parent that
// delivers to others (a broken path between the two), which must not cost
// that parent anything. It stays where it is (no Change) when nothing else
// fits, or when its parent is the source.
func (t *Tree) Reattach(id string) ([]Change, error) {
	n := t.nodes[id]
	switch {
	case n == nil:
		return nil, fmt.Errorf("%w: %q", ErrUnknown, id)
	case !n.placed || n == t.root || n.parent == nil || n.parent == t.root:
		return nil, nil
	}
	p := newPlanner(t)
	p.setGone(n.parent) // neither the parent nor anywhere below it
	p.setPending(n, true)
	p.placeAll([]*node{n}, nil)
	to, _ := p.planned(n)
	if to == nil || len(n.children) == 0 && to.depth >= n.parent.depth+1 {
		// Queued, or a leaf so deep that compaction would pull it straight
		// back into the slot it left: better where it is.
		return nil, nil
	}
	var ch []Change
	t.apply(p, nil, &ch)
	t.settle(&ch)
	return ch, nil
}
