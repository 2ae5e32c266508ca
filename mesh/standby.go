package mesh

import (
	"time"

	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// Hot standby parents (README "Standby parents"). As a child, a node keeps
// a second upstream connection, to the standby parent the server names:
// negotiated like any parent's (the standby parent offers), so ICE and DTLS
// are done and kept alive, but no media flows on it. When the current
// parent fails (its connection failed or closed, or no decodable video for
// stallTimeout) the node makes that link its parent at once, tells the
// server (`promote`), and the standby parent starts sending when the
// server passes the promote on: no offer, no answer, no ICE, and the
// standby parent's GOP cache gives a picture within a frame or two. As a
// parent, a node holds standby links for the children-to-be the server
// names, up to standbyPerSlot per child slot.

// standbyPerSlot bounds the standby links a node holds, per child slot it
// declared: the server plans at most that many (server/standby.go), this
// bound protects the node from a server that plans more.
const standbyPerSlot = 2

// standbyState is the node's hot standby links. Owned by the run goroutine.
type standbyState struct {
	// Child side: the link to the standby parent, and when the server last
	// refused to make it the tree edge (it is not promoted again for
	// stallRepeat).
	link      *upstreamConn
	refusedAt time.Time
	// promoted is n.cur when the node promoted its standby link itself and
	// no media has arrived on it yet: the server may still refuse.
	promoted *upstreamConn
	// Parent side: standby links to children-to-be, by child id.
	held map[string]*peer.Downstream
}

// Standby is the id of the node's standby parent, "" if it has none.
func (n *Node) Standby() string {
	if s, ok := n.standbyID.Load().(string); ok {
		return s
	}
	return ""
}

func (n *Node) onStandby(m *protocol.Message) {
	if m.Peer != "" {
		n.holdStandby(m.Peer)
		return
	}
	n.setStandby(m.Standby)
}

// setStandby makes id the standby parent ("" none): the old link closes, a
// new one waits for id's offer.
func (n *Node) setStandby(id string) {
	if old := n.sb.link; old != nil {
		if old.parent == id {
			return
		}
		n.closeUpstream(old)
		n.sb.link = nil
	}
	if id != "" && (n.cur == nil || n.cur.parent != id) {
		n.sb.link = n.dialUpstream(id)
		n.sb.refusedAt = time.Time{}
	}
	if n.sb.link == nil {
		id = ""
	}
	n.standbyID.Store(id)
	n.emit(Event{Kind: EventStandby, Standby: id})
}

// promoteStandby switches to the standby link when the current parent has
// failed, and tells the server. It reports false when there is no usable
// link: none, not connected (a link that never came up is no standby), or
// refused by the server moments ago.
func (n *Node) promoteStandby(failed bool) bool {
	s, old := n.sb.link, n.cur
	if s == nil || old == nil || !s.up.Connected() || time.Since(n.sb.refusedAt) < stallRepeat {
		return false
	}
	n.sb.link = nil
	n.standbyID.Store("")
	_ = n.send(&protocol.Message{Type: protocol.TypePromote, Peer: s.parent})
	n.log.Info("parent failed; switched to the standby link", "parent", old.parent, "standby", s.parent, "failed", failed)
	n.switchTo(s, n.Depth())
	n.sb.promoted = s
	return true
}

// switchTo makes an open connection the current parent; the old one stays
// as the previous (make before break) until the new one delivers.
func (n *Node) switchTo(uc *upstreamConn, depth int) {
	if n.prev != nil {
		n.closeUpstream(n.prev)
	}
	n.prev = n.cur
	if n.prev != nil {
		n.prev.retired = time.Now()
	}
	uc.created = time.Now() // the stall timer starts now
	n.cur = uc
	n.current.Store(uc)
	n.depth.Store(int64(depth))
	n.emit(Event{Kind: EventParent, Peer: uc.parent, Depth: depth, Hot: true})
}

// reuseUpstream handles a new parent the node already has a connection to:
// its standby link (the server's plan after a failure, or the confirmation
// of the node's own switch), or, after the server refused the node's
// switch, the previous parent it keeps for now (the link it switched to
// becomes its standby link again).
func (n *Node) reuseUpstream(id string, depth int) bool {
	switch {
	case n.sb.link != nil && n.sb.link.parent == id:
		s := n.sb.link
		n.sb.link = nil
		n.standbyID.Store("")
		n.switchTo(s, depth)
		return true
	case n.prev != nil && n.prev.parent == id && n.sb.promoted != nil && n.sb.promoted == n.cur:
		back, refused := n.prev, n.cur
		n.prev, n.sb.promoted = nil, nil
		if n.sb.link != nil {
			n.closeUpstream(n.sb.link)
		}
		n.sb.link, n.sb.refusedAt = refused, time.Now()
		n.standbyID.Store(refused.parent)
		n.cur = back
		n.current.Store(back)
		n.depth.Store(int64(depth))
		n.log.Info("standby switch refused; back to the parent", "parent", id, "standby", refused.parent)
		n.emit(Event{Kind: EventParent, Peer: id, Depth: depth, Hot: true})
		return true
	}
	return false
}

// renewIfReoffered replaces the current upstream with a new one when its
// parent sends an offer on a connection whose offer was applied already:
// the parent made a new connection (it had no standby link to promote).
func (n *Node) renewIfReoffered(m *protocol.Message) {
	if !n.cur.up.Reoffered(*m.Sig) {
		return
	}
	uc := n.dialUpstream(n.cur.parent)
	if uc == nil {
		return
	}
	n.log.Info("parent renegotiates; a new connection", "parent", uc.parent)
	old := n.cur
	n.cur = uc
	n.current.Store(uc)
	if n.sb.promoted == old {
		n.sb.promoted = nil
	}
	n.closeUpstream(old)
}

// holdStandby prepares a standby link to child: offered like a child's
// connection, fed nothing until promoteChild.
func (n *Node) holdStandby(child string) {
	if n.sb.held == nil {
		n.sb.held = make(map[string]*peer.Downstream)
	}
	if old := n.sb.held[child]; old != nil {
		_ = old.Close()
		delete(n.sb.held, child)
	}
	if n.downstreams[child] != nil {
		return // already a child
	}
	if limit := n.standbyLimit(); len(n.sb.held) >= limit {
		n.log.Warn("standby link refused: too many held", "child", child, "held", len(n.sb.held), "limit", limit)
		return
	}
	d, err := n.apiFor(child).NewStandbyDownstream(child, n.forwarders(), n.sendSignal(child), n.childOptions(child)...)
	if err != nil {
		n.log.Error("standby downstream", "child", child, "err", err)
		return
	}
	n.sb.held[child] = d
}

// standbyLimit is how many standby links the node holds at most. A source
// that left its capacity to the server's default takes the server's word.
func (n *Node) standbyLimit() int {
	if n.cfg.Role == protocol.RoleSource && n.cfg.Capacity == 0 {
		return standbyPerSlot * protocol.MaxCapacity
	}
	return standbyPerSlot * n.cfg.Capacity
}

// promoteChild starts media to child on its standby link, which becomes an
// ordinary child connection; without a usable link, it attaches the child
// afresh (a new offer).
func (n *Node) promoteChild(child string) {
	d := n.sb.held[child]
	delete(n.sb.held, child)
	if d != nil {
		select {
		case <-d.Done():
			_ = d.Close()
			d = nil
		default:
		}
	}
	if d == nil {
		n.log.Info("promote without a standby link; attaching afresh", "child", child)
		n.attach(child)
		return
	}
	if old := n.downstreams[child]; old != nil {
		_ = old.Close()
	}
	d.Promote()
	n.downstreams[child] = d
	n.children.Store(int64(len(n.downstreams)))
	n.log.Debug("standby link promoted", "child", child)
}

// routeStandby passes a signal to the standby link it belongs to; ok is
// false when there is none.
func (n *Node) routeStandby(m *protocol.Message) (ok bool, err error) {
	if s := n.sb.link; s != nil && s.parent == m.Peer {
		if s.up.Reoffered(*m.Sig) {
			// The standby parent made a new link (it was planned away and
			// back): a new connection takes its offer.
			if fresh := n.dialUpstream(s.parent); fresh != nil {
				n.closeUpstream(s)
				n.sb.link, s = fresh, fresh
			}
		}
		return true, s.up.HandleSignal(*m.Sig)
	}
	if d := n.sb.held[m.Peer]; d != nil {
		return true, d.HandleSignal(*m.Sig)
	}
	return false, nil
}

// dropStandby closes the standby link to or from id, if there is one.
func (n *Node) dropStandby(id string) bool {
	if d := n.sb.held[id]; d != nil {
		_ = d.Close()
		delete(n.sb.held, id)
		return true
	}
	if s := n.sb.link; s != nil && s.parent == id {
		n.closeUpstream(s)
		n.sb.link = nil
		n.standbyID.Store("")
		return true
	}
	return false
}

func (n *Node) closeStandbys() {
	for id, d := range n.sb.held {
		_ = d.Close()
		delete(n.sb.held, id)
	}
	if n.sb.link != nil {
		n.closeUpstream(n.sb.link)
		n.sb.link = nil
	}
}

// forwarders are the stream's forwarders in track order.
func (n *Node) forwarders() []*peer.Forwarder {
	ts := n.media.Load()
	fwds := make([]*peer.Forwarder, 0, len(ts.tracks))
	for _, t := range ts.tracks {
		fwds = append(fwds, ts.fwds[t.ID])
	}
	return fwds
}
