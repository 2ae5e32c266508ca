package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"time"

	"canopy/mesh/framesig"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Signed frames, the coordinator's part (README "Signed frames"): it hands
// the source's key to every peer (welcome; a source that comes back with a
// new key re-welcomes everyone), tells each peer whether its path carries
// signatures (parent.verify, or a sourceKey message when a move above it
// changes that), and judges tampered reports: it checks the evidence
// against the key, moves the reporter at once, and bars a parent that
// enough children caught from relaying.

const (
	// tamperBar is the weight of tampered reports that bars a parent from
	// relaying for the stream (bars.go): two children that played (each
	// witnessWeight), or four that never did. One child cannot bar its
	// parent alone: a lying child costs its parent nothing but that child.
	tamperBar = 2.0
	// falseReportLimit is how many tampered reports whose evidence shows a
	// genuine frame a peer may send before it is barred from relaying
	// itself: a peer that accuses good parents is not one to feed others.
	falseReportLimit = 3
)

// signBook is what the coordinator knows of the stream's signatures.
// Guarded by the coordinator's mu.
type signBook struct {
	key     string            // the source's public key as its hello gave it; "" unsigned
	pub     ed25519.PublicKey // key, decoded
	prev    ed25519.PublicKey // the source before: its last frames may still be on their way
	flipped []string          // peers whose path changed between verifiable and not, in this apply
	told    map[string]bool   // peers told their path is unverified
	reports map[string]map[string]bool
	weight  map[string]float64 // parent → weight of the reports against it
	barred  map[string]bool    // barred for tampering
	lies    map[string]int     // reporter → reports refuted by their own evidence
}

func (b *signBook) init() {
	if b.told == nil {
		b.told, b.reports = make(map[string]bool), make(map[string]map[string]bool)
		b.weight, b.barred, b.lies = make(map[string]float64), make(map[string]bool), make(map[string]int)
	}
}

// setKey records a new source's key (validated by protocol: "" or 32 bytes).
func (b *signBook) setKey(key string) {
	b.init()
	if b.pub != nil {
		b.prev = b.pub
	}
	b.key, b.pub = "", nil
	if pub, err := framesig.DecodeKey(key); err == nil {
		b.key, b.pub = key, pub
	}
}

func (b *signBook) forget(id string) {
	b.init()
	delete(b.told, id)
	delete(b.reports, id)
	delete(b.weight, id)
	delete(b.barred, id)
	delete(b.lies, id)
	for _, r := range b.reports {
		delete(r, id)
	}
}

// genuine reports whether evidence shows a frame the source signed that
// the reporter had no reason to refuse: a valid signature, and a counter
// above the last one it says it accepted (else it is a replay).
func (b *signBook) genuine(e *protocol.Evidence) bool {
	return b.signedBy(b.pub, e)
}

// signedBy reports whether e shows a frame pub signed, not replayed.
func (b *signBook) signedBy(pub ed25519.PublicKey, e *protocol.Evidence) bool {
	if pub == nil || e.Sig == "" || e.Last >= e.Counter {
		return false
	}
	h, err1 := base64.RawURLEncoding.DecodeString(e.Hash)
	sig, err2 := base64.RawURLEncoding.DecodeString(e.Sig)
	if err1 != nil || err2 != nil || len(h) != sha256.Size {
		return false
	}
	return framesig.Check(pub, framesig.Kind(e.Track[0]), e.Counter, [sha256.Size]byte(h), sig)
}

// verifyFlag is a parent message's verify field for child: false when a
// browser above it re-encodes, absent otherwise.
func (c *coordinator) verifyFlag(child string) *bool {
	c.signed.init()
	unverified := c.unverified(child)
	if c.signed.told[child] != unverified {
		c.signed.flipped = append(c.signed.flipped, child)
	}
	c.signed.told[child] = unverified
	if !unverified {
		return nil
	}
	f := false
	return &f
}

// refreshVerify tells the peers below moved nodes whose path changed
// between verifiable and not (they got no parent message of their own).
// Only a moved node whose own path changed has such peers below it: a
// node's children are unverified when it is or it re-encodes, and a move
// does not change the latter.
func (c *coordinator) refreshVerify() {
	c.signed.init()
	flipped := c.signed.flipped
	c.signed.flipped = nil
	var walk func(id string, depth int)
	walk = func(id string, depth int) {
		for _, k := range c.tree.Children(id) {
			unverified := c.unverified(k)
			if q := c.peers[k]; q != nil && unverified != c.signed.told[k] {
				c.signed.told[k] = unverified
				v := !unverified
				q.send(&protocol.Message{Type: protocol.TypeSourceKey, SourceKey: c.signed.key, Verify: &v})
			}
			if depth < 1<<10 {
				walk(k, depth+1)
			}
		}
	}
	for _, id := range flipped {
		walk(id, 0)
	}
}

// tampered handles a child's report that a frame from its parent failed
// verification. Called with c.mu held.
func (c *coordinator) tampered(reporter string, m *protocol.Message) {
	b := &c.signed
	b.init()
	parent, e := m.Peer, m.Evidence
	if c.source == nil || b.pub == nil {
		return // offline, or an unsigned stream: nothing to verify
	}
	cur, ok := c.tree.Parent(reporter)
	if !ok || cur != parent && c.moving[reporter] != parent {
		return // not its parent, nor the one it is leaving
	}
	if b.signedBy(b.prev, e) {
		return // the source before this one signed it: on its way still as the key changed, nobody's fault
	}
	if parent == c.source.id || b.genuine(e) {
		b.lies[reporter]++
		c.log.Warn("tampered report refuted by its own evidence", "peer", reporter, "parent", parent, "counter", e.Counter, "refuted", b.lies[reporter])
		if b.lies[reporter] >= falseReportLimit && !c.trust.banned[reporter] {
			c.trust.banned[reporter] = true
			c.setTrust(reporter, tree.TrustBarred, "false tampered reports")
		}
		return
	}
	if cur == parent {
		changes, err := c.tree.Reattach(reporter)
		if err != nil {
			c.log.Warn("reattach", "peer", reporter, "err", err)
		}
		c.log.Info("moving the reporter of forged frames", "peer", reporter, "parent", parent, "moves", len(changes))
		c.apply(changes)
	}
	if b.reports[parent] == nil {
		b.reports[parent] = make(map[string]bool)
	}
	if b.reports[parent][reporter] {
		return
	}
	b.reports[parent][reporter] = true
	w := witnessWeight
	if !c.trust.everPlayed[reporter] {
		w = blindWeight
	}
	b.weight[parent] += w
	c.log.Warn("child reports forged frames from its parent", "peer", reporter, "parent", parent,
		"track", e.Track, "counter", e.Counter, "weight", b.weight[parent])
	if b.weight[parent] >= tamperBar && !b.barred[parent] {
		b.barred[parent] = true
		c.trust.banned[parent] = true
		delete(c.trust.probation, parent)
		c.views.tree = nil // the tree API shows it at once
		c.setTrust(parent, tree.TrustBarred, "tampered with frames")
		if changes, err := c.tree.SetCapacity(parent, 0); err == nil {
			c.apply(changes) // none left to move: barred trust moved them
		}
		c.barForStream(parent, time.Now()) // its next sessions too (bars.go)
	}
}

// markTampering flags the peers barred for tampering in a tree view.
func (c *coordinator) markTampering(nodes []tree.NodeInfo) {
	for i := range nodes {
		if c.signed.barred[nodes[i].ID] {
			nodes[i].Tampering = true
		}
	}
}
