// Package tree is Canopy's overlay topology for one stream: where each peer
// attaches, how many children it may feed, and how the tree heals when a peer
// leaves or crashes. It does no I/O and starts no goroutines; a Tree is not
// safe for concurrent use (the server's per-stream coordinator owns one).
//
// Placement puts a node at the shallowest free slot, keeps Go relays (which
// forward without re-encoding) above browsers, bounds the number of browser
// re-encode hops on any path, and re-attaches a departed node's children with
// their subtrees intact. Every mutating method returns the parent changes the
// server must signal, in order. Check verifies every invariant.
package tree

import (
	"errors"
	"slices"

	"canopy/mesh/protocol"
)

// Role is a peer's place in a stream (protocol.RoleSource, RoleRelay, RoleViewer).
type Role = protocol.Role

// Kind is what runs a peer (protocol.KindGo or protocol.KindBrowser).
type Kind = protocol.Kind

// Defaults for zero Config fields.
const (
	DefaultSourceCapacity     = 4
	DefaultGoMaxCapacity      = 64
	DefaultBrowserMaxCapacity = 2
	DefaultMaxBrowserHops     = 3
)

// Config is the placement policy. A zero field takes its default; a negative
// BrowserMaxCapacity or MaxBrowserHops means 0 (browsers never relay).
type Config struct {
	SourceCapacity     int // most children of the source (a vacant root keeps the last source's capacity)
	GoMaxCapacity      int // clamp on a Go peer's claimed capacity
	BrowserMaxCapacity int // clamp on a browser's claimed capacity
	MaxBrowserHops     int // browsers that relay (re-encode) on any path from the source
	// Prove makes every node earn its children (see Trust): none until it
	// plays, one until a child plays from it, then its capacity. The server
	// sets it; without it a node gets its clamped capacity at once.
	Prove bool
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		switch {
		case *v == 0:
			*v = d
		case *v < 0:
			*v = 0
		}
	}
	def(&c.SourceCapacity, DefaultSourceCapacity)
	def(&c.GoMaxCapacity, DefaultGoMaxCapacity)
	def(&c.BrowserMaxCapacity, DefaultBrowserMaxCapacity)
	def(&c.MaxBrowserHops, DefaultMaxBrowserHops)
	if c.SourceCapacity == 0 {
		c.SourceCapacity = DefaultSourceCapacity
	}
	return c
}

// Change says that Node's upstream parent changed From → To. "" means no
// parent to connect to: the node is queued (see Queued) or sits below a
// vacant root waiting for a source. Changes never have From == To, and are
// only about nodes still in the tree (never the one that left).
type Change struct {
	Node string `json:"node"`
	From string `json:"from"`
	To   string `json:"to"`
}

// NodeInfo describes one node in a Snapshot.
type NodeInfo struct {
	ID       string   `json:"id"`
	Parent   string   `json:"parent"` // "" for the source, a child of the vacant root, or a queued node
	Role     Role     `json:"role"`
	Kind     Kind     `json:"kind"`
	Capacity int      `json:"capacity"` // after clamping by policy
	Usable   int      `json:"usable"`   // children placement may give it now (Capacity bounded by Trust)
	Trust    Trust    `json:"trust"`
	Depth    int      `json:"depth"` // 0 for the source, -1 while queued
	Hops     int      `json:"hops"`  // browsers above this node that re-encode its stream
	Queued   bool     `json:"queued,omitempty"`
	Children []string `json:"children"` // sorted

	// Passthrough: a browser that relays without re-encoding (SetPassthrough).
	Passthrough bool `json:"passthrough,omitempty"`
	// Unverified: a browser above re-encodes (Hops > 0), so the source's
	// frame signatures do not reach this node (README "Signed frames").
	Unverified bool `json:"unverified,omitempty"`
	// Tampering: the server barred this peer for altering frames; the tree
	// package never sets it (the server's view does).
	Tampering bool `json:"tampering,omitempty"`
	// NoVerify: a browser that cannot check signatures (no receive
	// transform); always Unverified. Strips: the node takes signatures off
	// for such children (the server's relay node). See noverify.go.
	NoVerify bool `json:"noVerify,omitempty"`
	Strips   bool `json:"strips,omitempty"`
}

// Errors returned by Tree methods.
var (
	// ErrInvalid means an id, role, kind or capacity is not acceptable.
	ErrInvalid = errors.New("tree: invalid argument")
	// ErrExists means the id is already in the tree.
	ErrExists = errors.New("tree: node already exists")
	// ErrSourcePresent means the stream already has a source.
	ErrSourcePresent = errors.New("tree: stream already has a source")
	// ErrUnknown means no node has that id.
	ErrUnknown = errors.New("tree: unknown node")
)

type node struct {
	id       string
	role     Role
	kind     Kind
	cap      int    // declared capacity, clamped by policy
	use      int    // usable capacity: cap bounded by trust (see usable)
	trust    Trust  // what it has shown of forwarding media
	seq      uint64 // join order: the final tie-break everywhere
	parent   *node
	children []*node
	depth    int  // edges from the root
	hops     int  // browser ancestors, i.e. re-encodes above this node
	placed   bool // in the tree (the root always is)
	queued   bool

	// passthrough: a browser that forwards the encoded frames it receives
	// unchanged, so its children see no re-encode of its own (SetPassthrough).
	passthrough bool

	// noverify: a browser that cannot verify nor strip signatures; strips:
	// a node that strips them for such children (noverify.go).
	noverify, strips bool

	// measured: the server bounds n by what its measured upload sustains,
	// sustain children (SetSustain); the declared cap stays the upper bound.
	measured bool
	sustain  int

	heap [numHeaps]*nodeHeap
	hidx [numHeaps]int
	plan planMark // the current planner's view of n (plan.go)
}

// Tree is one stream's overlay. The zero value is not usable; call New.
type Tree struct {
	cfg   Config
	root  *node // always present; id "" while no source
	nodes map[string]*node
	seq   uint64
	ix    *index
	// planEpoch numbers planners: a node's planMark is the current
	// planner's if it carries its epoch (plan.go).
	planEpoch uint64

	// Signed frames (noverify.go): whether the stream is signed, the nodes
	// that cannot verify and those that strip for them.
	signed          bool
	noverify        map[*node]bool
	strippers       map[*node]bool
	misplaced       map[*node]bool // strict nodes left below a parent that forwards signatures (SetSigned)
	pendingNoVerify bool           // JoinWith's option, read by Join

	// journal: the ids of nodes changed since Touched, when on (journal.go).
	journal map[string]struct{}
}

// New returns an empty tree with a vacant root.
func New(cfg Config) *Tree {
	cfg = cfg.withDefaults()
	t := &Tree{cfg: cfg, nodes: make(map[string]*node), ix: newIndex(cfg.MaxBrowserHops + 1),
		noverify: make(map[*node]bool), strippers: make(map[*node]bool), misplaced: make(map[*node]bool)}
	t.root = &node{role: protocol.RoleSource, kind: protocol.KindGo, cap: cfg.SourceCapacity, use: cfg.SourceCapacity, trust: TrustProven, placed: true}
	t.reindex(t.root)
	return t
}

// Config returns the effective policy (defaults filled in).
func (t *Tree) Config() Config { return t.cfg }

// relayClass reports whether n is placed as a Go relay, above every
// browser: a Go node that may have children now and either joined as a
// relay (which, with auth on, takes a relay grant) or has proven it
// forwards. An unproven Go viewer is placed like any viewer.
func (t *Tree) relayClass(n *node) bool {
	return n != t.root && n.kind == protocol.KindGo && n.use > 0 &&
		(n.role == protocol.RoleRelay || n.trust == TrustProven)
}

// below is the number of re-encodes a child of n would see.
func (t *Tree) below(n *node) int {
	if reencodes(n) {
		return n.hops + 1
	}
	return n.hops
}

func (t *Tree) clamp(kind Kind, c int) int {
	hi := t.cfg.GoMaxCapacity
	if kind == protocol.KindBrowser {
		hi = t.cfg.BrowserMaxCapacity
	}
	return min(max(c, 0), hi)
}

func idOf(n *node) string {
	if n == nil {
		return ""
	}
	return n.id
}

// rank orders nodes best first: relay-class, higher capacity, earlier join.
func (t *Tree) rank(ns []*node) []*node {
	out := slices.Clone(ns)
	slices.SortFunc(out, func(a, b *node) int {
		if ra, rb := t.relayClass(a), t.relayClass(b); ra != rb {
			if ra {
				return -1
			}
			return 1
		}
		if a.use != b.use {
			return b.use - a.use
		}
		if a.seq < b.seq {
			return -1
		}
		return 1
	})
	return out
}

// Source returns the source's id, or "" while the root is vacant.
func (t *Tree) Source() string { return t.root.id }

// Parent returns id's parent ("" for the source and children of a vacant
// root) and whether id is placed in the tree. Queued and unknown ids give
// ("", false).
func (t *Tree) Parent(id string) (string, bool) {
	n := t.nodes[id]
	if n == nil || !n.placed {
		return "", false
	}
	return idOf(n.parent), true
}

// Children returns the ids of id's children, sorted.
func (t *Tree) Children(id string) []string {
	n := t.nodes[id]
	if n == nil {
		return nil
	}
	return childIDs(n)
}

func childIDs(n *node) []string {
	out := make([]string, len(n.children))
	for i, c := range n.children {
		out[i] = c.id
	}
	slices.Sort(out)
	return out
}

// Depth returns id's distance from the root (the source is 0), or -1 if id
// is queued or unknown.
func (t *Tree) Depth(id string) int {
	n := t.nodes[id]
	if n == nil || !n.placed {
		return -1
	}
	return n.depth
}

// Hops returns the number of browsers that re-encode id's stream, or -1 if
// id is queued or unknown.
func (t *Tree) Hops(id string) int {
	n := t.nodes[id]
	if n == nil || !n.placed {
		return -1
	}
	return n.hops
}

// Queued reports whether id waits for a free slot.
func (t *Tree) Queued(id string) bool {
	n := t.nodes[id]
	return n != nil && n.queued
}

// Len returns the number of nodes, the source and queued nodes included.
func (t *Tree) Len() int { return len(t.nodes) }

// QueueLen returns the number of queued nodes.
func (t *Tree) QueueLen() int {
	return t.ix.qRelay.len() + t.ix.qOther.len() + t.ix.qBarred.len() + t.ix.qStrict.len()
}

// MaxDepth returns the depth of the deepest placed node.
func (t *Tree) MaxDepth() int {
	for d := len(t.ix.slots) - 1; d > 0; d-- {
		for c := range t.ix.classes {
			if t.ix.leaves[d][c].len() > 0 {
				return d
			}
		}
		if t.ix.rleaves[d].len() > 0 {
			return d
		}
	}
	return 0
}

// info is n's row of a Snapshot.
func (t *Tree) info(n *node) NodeInfo {
	info := NodeInfo{
		ID: n.id, Parent: idOf(n.parent), Role: n.role, Kind: n.kind,
		Capacity: n.cap, Usable: n.use, Trust: n.trust, Depth: n.depth, Hops: n.hops, Queued: n.queued,
		Children: childIDs(n),
	}
	if !n.placed {
		info.Depth, info.Hops = -1, -1
	}
	info.Passthrough = n.passthrough
	info.Unverified = n.placed && (n.hops > 0 || n.noverify)
	info.NoVerify, info.Strips = n.noverify, n.strips
	return info
}

// Snapshot describes every node, sorted by id.
func (t *Tree) Snapshot() []NodeInfo {
	out := make([]NodeInfo, 0, len(t.nodes))
	for _, n := range t.nodes {
		out = append(out, t.info(n))
	}
	slices.SortFunc(out, func(a, b NodeInfo) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}
