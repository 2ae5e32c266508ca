package main

import (
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Browsers that cannot verify (README "Signed frames in the browser"): a
// browser without a receive transform, or whose worker did not start (the
// web component on another origin), says noVerify in its hello. It cannot
// take the VP8/Opus signature trailer off before its decoder, so on a
// signed stream the tree (mesh/tree/noverify.go) hangs it only below a
// parent that sends it frames without one: the server's own relay node,
// told `strip` for that child in attach, standby and promote, or a
// browser that re-encodes. While such peers watch a signed stream the
// coordinator holds the server's relay in the tree (Server.keepRelay, as
// -p2p-min-viewers does) and trusts it at once: it is the server's node,
// and a peer waiting for it plays nothing.

// unverified reports whether id's frames arrive without signatures it
// checks: a browser above re-encodes, or it cannot verify at all.
func (c *coordinator) unverified(id string) bool {
	return c.tree.Hops(id) > 0 || c.tree.NoVerify(id)
}

// stripFor reports whether parent must strip signatures for child.
func (c *coordinator) stripFor(parent, child string) bool {
	return c.tree.NoVerify(child) && c.tree.Strips(parent)
}

// noVerifyJoined is called by join once p is in the tree and c.peers:
// the server's relay node strips, and a peer that cannot verify may need
// it held. The moves are returned to apply.
func (c *coordinator) noVerifyJoined(p *peerConn, hello *protocol.Message) []tree.Change {
	var ch []tree.Change
	if p.hosted && hello.Role == protocol.RoleRelay {
		more, err := c.tree.SetStrips(p.id)
		if err != nil {
			c.log.Warn("server relay strips", "peer", p.id, "err", err)
		}
		ch = append(ch, more...)
	}
	if hello.NoVerify {
		c.log.Info("peer cannot verify frames", "peer", p.id, "signed", c.tree.Signed())
	}
	return append(ch, c.noVerifyKeep()...)
}

// noVerifyKeep holds the server's relay while peers that cannot verify
// watch a signed stream, and trusts the relay, so they have somewhere to
// go; it lets the relay go once none does. Called with c.mu held.
func (c *coordinator) noVerifyKeep() []tree.Change {
	need := c.tree.Signed() && c.tree.NoVerifyLen() > 0 && c.source != nil
	switch {
	case need && c.stripKeep == nil && c.keepRelay != nil:
		c.stripKeep = c.keepRelay(c.id)
	case !need && c.stripKeep != nil:
		c.stripKeep() // the relay lingers a while (whip), then goes
		c.stripKeep = nil
	}
	if !need {
		return nil
	}
	var ch []tree.Change
	for id, q := range c.peers {
		if !q.hosted || !c.tree.Strips(id) {
			continue
		}
		if tr, ok := c.tree.Trust(id); ok && tr != tree.TrustProven && tr != tree.TrustBarred {
			more, err := c.tree.SetTrust(id, tree.TrustProven)
			if err != nil {
				c.log.Warn("server relay trust", "peer", id, "err", err)
			}
			ch = append(ch, more...)
		}
	}
	return ch
}
