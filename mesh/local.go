package mesh

import (
	"context"

	"canopy/mesh/peer"
)

// AttachLocal serves a child that is not a node of the tree from this
// node's forwarders, answering the child's own offer: how a server's relay
// node serves WHEP players. The child gets what a tree child gets (the
// cached GOP, its own queue, NACKs answered from its ring, keyframe
// requests merged upstream) and keeps its tracks across a change of parent
// or a returning source. The caller owns the Downstream and closes it; it
// stops receiving once the node closes.
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
	return n.api.NewDownstreamForOffer(ctx, id, fwds, offer)
}
