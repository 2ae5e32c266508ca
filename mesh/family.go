package mesh

import (
	"sync/atomic"
	"time"

	"github.com/pion/rtp"

	"canopy/mesh/media"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// upstreamConn is one connection to a parent. A node has one current
// parent and, while it changes parent, the previous one too: both feed the
// same ingress, which passes each packet once, and the previous connection
// closes as soon as the new parent's media arrives (make before break).
type upstreamConn struct {
	parent  string
	up      *peer.Upstream
	created time.Time
	live    atomic.Bool
	last    atomic.Int64 // unix nanoseconds of the last packet, any track
	// Liveness is judged per kind: in a stream with video, only decodable
	// video (a whole frame that parses, after a key frame) keeps the parent
	// alive, so a parent that sends audio alone, or noise, is stalled.
	hasVideo  bool                         // the stream has a video track
	lastVideo atomic.Int64                 // unix nanoseconds of the last decodable video frame
	checks    map[string]*media.FrameCheck // per video track; used under its ingress's mu
	refused   atomic.Bool                  // its offer was refused: report it at once
	// Owned by the run goroutine.
	stalled  time.Time // when the server was last told this parent stalled
	reported bool      // the server was told this connection is live
	retired  time.Time // when it became the previous connection
	quiet    time.Time // when the server said this parent's signaling dropped; zero once it said it is back
}

// setParent connects to a new parent. The old connection stays open until
// the new one delivers, so nothing is lost when the old parent is leaving
// gracefully; forwarders and children are untouched.
func (n *Node) setParent(id string, depth int, standby string) {
	if n.cur != nil && n.cur.parent == id {
		n.depth.Store(int64(depth)) // e.g. the server confirming a standby switch
		return
	}
	if n.reuseUpstream(id, depth) {
		return // the standby link, already up (standby.go)
	}
	uc := n.dialUpstream(id)
	if uc == nil {
		return
	}
	if n.prev != nil {
		n.closeUpstream(n.prev) // a third parent in a row: the oldest goes now
	}
	n.prev = n.cur
	if n.prev != nil {
		n.prev.retired = time.Now()
	}
	n.cur = uc
	n.current.Store(uc)
	n.depth.Store(int64(depth))
	n.log.Debug("new parent", "parent", id, "depth", depth, "standby", standby)
	n.emit(Event{Kind: EventParent, Peer: id, Depth: depth, Standby: standby})
}

// dialUpstream makes a connection to parent id; it answers id's offer.
func (n *Node) dialUpstream(id string) *upstreamConn {
	uc := &upstreamConn{parent: id, created: time.Now(), checks: make(map[string]*media.FrameCheck)}
	for _, t := range n.Tracks() {
		if t.Kind == "video" {
			uc.hasVideo = true
			uc.checks[t.ID] = media.NewFrameCheck(t.MimeType)
		}
	}
	up, err := n.apiFor(id).NewUpstream(id, n.Tracks(), n.sendSignal(id), func(t protocol.Track, p *rtp.Packet) { n.ingest(uc, t, p) })
	if err != nil {
		n.log.Error("upstream", "parent", id, "err", err)
		return nil
	}
	uc.up = up
	return uc
}

// ingest is the sink of every upstream connection: one goroutine per track
// per connection calls it.
func (n *Node) ingest(uc *upstreamConn, t protocol.Track, p *rtp.Packet) {
	now := time.Now().UnixNano()
	uc.last.Store(now)
	ts := n.media.Load()
	g := ts.in[t.ID]
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	// Judged before admit, which renumbers: this parent's own stream.
	alive := !uc.hasVideo
	if t.Kind == "video" {
		c := uc.checks[t.ID]
		alive = c == nil || c.Push(p) // a track added since: as before, any packet
		if alive {
			uc.lastVideo.Store(now)
		}
	}
	if alive && !uc.live.Load() {
		uc.live.Store(true)
		select {
		case n.liveCh <- uc:
		default: // the run loop is busy; the watchdog also notices uc.live
		}
	}
	if !g.admit(p) {
		return
	}
	if f := ts.fwds[t.ID]; f != nil {
		if kids := n.children.Load(); kids > 0 {
			n.relayed.Add(uint64(len(p.Payload)+rtpHeaderSize) * uint64(kids))
		}
		_ = f.WriteRTP(p)
	}
	if n.cfg.OnPacket != nil {
		n.cfg.OnPacket(t, p)
	}
	if n.cfg.OnFrame != nil {
		n.checkPacket(uc.parent, t, p)
	}
}

// onLive runs when a connection's media first arrives.
func (n *Node) onLive(uc *upstreamConn) {
	if uc != n.cur || uc.reported {
		return
	}
	uc.reported = true
	n.sb.promoted = nil // the standby switch holds: media flows
	_ = n.send(&protocol.Message{Type: protocol.TypeLive, Peer: uc.parent})
	n.emit(Event{Kind: EventLive, Peer: uc.parent, Depth: n.Depth()})
	if n.prev != nil {
		n.closeUpstream(n.prev)
		n.prev = nil
	}
}

// watchdog notices a parent whose media stopped or whose connection failed
// and tells the server, which moves this node (with its subtree) elsewhere.
func (n *Node) watchdog() {
	now := time.Now()
	if n.prev != nil && now.Sub(n.prev.retired) > overlapTimeout {
		n.closeUpstream(n.prev)
		n.prev = nil
	}
	uc := n.cur
	if uc == nil || n.offline.Load() {
		return
	}
	if uc.live.Load() && !uc.reported {
		n.onLive(uc) // its notice was dropped from the full channel
	}
	last := uc.created
	l := uc.last.Load()
	if uc.hasVideo {
		l = uc.lastVideo.Load()
	}
	if l != 0 {
		last = time.Unix(0, l)
	}
	failed := uc.refused.Load()
	select {
	case <-uc.up.Done():
		failed = true
	default:
	}
	// After a quiet notice a short silence is enough to switch to a
	// standby link (make before break: nothing is lost if the parent was
	// only blinking); a stall report still waits for stallTimeout, since
	// it ends the parent's suspension and moves its subtree.
	quiet := !uc.quiet.IsZero() && now.Sub(uc.quiet) < quietFor
	silent := now.Sub(last)
	if !failed && silent < stallTimeout {
		if !quiet {
			return
		}
		if silent < quietSilence {
			n.wakeQuiet(quietSilence - silent)
			return
		}
		_ = n.promoteStandby(false)
		return
	}
	if n.promoteStandby(failed) {
		return // playing from the standby link; the server was told
	}
	// Repeat the report while the silence lasts: the server acts only when
	// enough of the parent's children agree, which may take a while.
	if !uc.stalled.IsZero() && now.Sub(uc.stalled) < stallRepeat {
		return
	}
	uc.stalled = now
	n.log.Info("parent stalled", "parent", uc.parent, "failed", failed, "silent", now.Sub(last).Round(time.Millisecond))
	_ = n.send(&protocol.Message{Type: protocol.TypeStalled, Peer: uc.parent})
	n.emit(Event{Kind: EventStalled, Peer: uc.parent})
}

// wakeQuiet runs the watchdog again after d, when a quiet parent's
// silence reaches quietSilence. Called from run (Go 1.23 timers: Reset
// leaves no stale tick in the channel).
func (n *Node) wakeQuiet(d time.Duration) {
	d += time.Millisecond
	if n.quietWake != nil {
		n.quietWake.Reset(d)
		return
	}
	n.quietWake = time.NewTimer(d)
}

func (n *Node) closeUpstream(uc *upstreamConn) {
	if uc != nil {
		_ = uc.up.Close()
	}
}

// setOffline records that the source is gone. The numbering of a returning
// source starts afresh, so the ingress forgets the old one.
func (n *Node) setOffline(reason string) {
	n.offline.Store(true)
	for _, g := range n.media.Load().in {
		g.reset()
	}
	n.emit(Event{Kind: EventOffline, Reason: reason})
}

func (n *Node) attach(child string) {
	if old := n.downstreams[child]; old != nil {
		_ = old.Close()
	}
	ts := n.media.Load()
	fwds := make([]*peer.Forwarder, 0, len(ts.tracks))
	for _, t := range ts.tracks {
		fwds = append(fwds, ts.fwds[t.ID])
	}
	d, err := n.apiFor(child).NewDownstream(child, fwds, n.sendSignal(child), n.childOptions(child)...)
	if err != nil {
		n.log.Error("downstream", "child", child, "err", err)
		return
	}
	n.downstreams[child] = d
	n.children.Store(int64(len(n.downstreams)))
}

// detach closes the connection to a child, or to the parent when the
// server has no new parent to give (the node waits in the queue).
func (n *Node) detach(id string) {
	if n.dropStandby(id) {
		return
	}
	if d := n.downstreams[id]; d != nil {
		_ = d.Close()
		delete(n.downstreams, id)
		delete(n.strip, id)
		n.children.Store(int64(len(n.downstreams)))
		return
	}
	if n.prev != nil && n.prev.parent == id {
		n.closeUpstream(n.prev)
		n.prev = nil
		return
	}
	if n.cur != nil && n.cur.parent == id {
		n.closeUpstream(n.cur)
		n.cur = nil
		n.current.Store(nil)
	}
}

// relayKeyframeRequests passes children's merged keyframe requests to the
// parent, or to the source's producer.
func (n *Node) relayKeyframeRequests(trackID string, f *peer.Forwarder) {
	defer n.wg.Done()
	for {
		select {
		case <-f.KeyframeRequests():
			if n.cfg.Role == protocol.RoleSource {
				if n.cfg.OnKeyframeRequest != nil {
					n.cfg.OnKeyframeRequest(trackID)
				}
				continue
			}
			if uc := n.current.Load(); uc != nil {
				uc.up.RequestKeyframe()
			}
		case <-n.done:
			return
		}
	}
}

// warnOverBudget logs the children whose NACKs asked for more than their
// retransmission budget since the last report: a child on a very lossy
// link, or one pulling retransmissions on purpose. It runs on the run
// goroutine, once per stats report.
func (n *Node) warnOverBudget() {
	if n.refusedSeen == nil {
		n.refusedSeen = make(map[string]uint64)
	}
	for id := range n.refusedSeen {
		if n.downstreams[id] == nil {
			delete(n.refusedSeen, id)
		}
	}
	for id, d := range n.downstreams {
		r := d.SendStats().Refused
		if r > n.refusedSeen[id] {
			n.log.Warn("child asks for more retransmissions than its budget", "child", id, "refused", r-n.refusedSeen[id])
		}
		n.refusedSeen[id] = r
	}
}
