package mesh

import (
	"context"

	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// AttachLocal serves a child that is not a node of the tree from this
// node's forwarders, answering the child's own offer: how a server's relay
// node serves WHEP players. The child gets what a tree child gets (the
// cached GOP, its own queue, NACKs answered from its ring, keyframe
// requests merged upstream) and keeps its tracks across a change of parent
// or a returning source. The caller owns the Downstream and closes it; it
// stops receiving once the node closes. Such a child cannot verify: it
// gets VP8 and Opus frames without their signature trailers.
func (n *Node) AttachLocal(ctx context.Context, id, offer string) (*peer.Downstream, string, error) {
	select {
	case <-n.done:
		return nil, "", n.closedErr()
	default:
	}
	ts := n.media.Load()
	fwds := make([]*peer.Forwarder, 0, len(ts.tracks))
	for _, t := range ts.tracks {
		fwds = append(fwds, ts.fwds[t.ID])
	}
	return n.api.NewDownstreamForOffer(ctx, id, fwds, offer, peer.StripSignatures(n.signedNow))
}

// signedNow reports whether the stream's frames carry signatures now.
func (n *Node) signedNow() bool { v := n.verify.Load(); return v != nil && v.key != nil }

// noteStrip records whether the server said the child an attach, standby
// or promote names cannot verify: the server's relay node feeding a
// browser without a receive transform (README "Signed frames in the
// browser"). The last word counts: a child attached without strip gets
// signatures again.
func (n *Node) noteStrip(m *protocol.Message) {
	switch {
	case m.Type == protocol.TypeAttach, m.Type == protocol.TypePromote, m.Type == protocol.TypeStandby && m.Peer != "":
		if m.Strip {
			n.strip[m.Peer] = true
		} else if m.Type != protocol.TypePromote {
			delete(n.strip, m.Peer) // a promote without strip keeps what its standby said
		}
	}
}

// childOptions are the options of child's downstream: stripping for a
// child that cannot verify.
func (n *Node) childOptions(child string) []peer.DownstreamOption {
	if n.strip[child] {
		return []peer.DownstreamOption{peer.StripSignatures(n.signedNow)}
	}
	return nil
}
