package main

import (
	"sort"
	"time"

	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
	"canopy/server/cluster"
)

// The coordinator's half of resume (resume.go): a peer whose WebSocket
// dropped is suspended, not removed. It stays in c.peers and in the tree;
// messages about the tree are not kept for it (its resumed welcome says
// where it stands), signals to it are (heldSignals), up to a bound. When
// the grace period ends first, it is removed as a crashed peer always was.

// suspension is a dropped peer waiting for its resume.
type suspension struct {
	p     *peerConn // the dropped connection, still c.peers[id]
	timer *time.Timer
	since time.Time
}

// resumable reports whether a session that ended for reason may be
// resumed: only a remote peer's connection that closed or failed, not a
// leave, a refusal, a peer the server cut off for misbehaving, or a node
// the server hosts (its in-process pipe closes only on purpose).
func resumable(p *peerConn, reason string) bool {
	return p.socket() && (reason == "connection closed" || reason == cluster.EdgeLost)
}

// dropped is called once p's connection has ended: p is suspended for
// the grace period when it may resume, gone otherwise.
func (c *coordinator) dropped(p *peerConn, reason string) {
	if resumable(p, reason) && c.suspend(p) {
		return
	}
	c.gone(p, reason)
}

// suspend keeps p's place for the grace period. It reports false when p
// has no place to keep (it left, or was removed meanwhile).
func (c *coordinator) suspend(p *peerConn) bool {
	if !c.resume.on() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed || c.peers[p.id] != p || c.suspended[p.id] != nil {
		return false
	}
	p.held.Store(&heldSignals{})
	s := &suspension{p: p, since: time.Now()}
	s.timer = time.AfterFunc(c.resume.grace, func() { c.expire(p) })
	if c.suspended == nil {
		c.suspended = make(map[string]*suspension)
	}
	c.suspended[p.id] = s
	c.resume.counts.suspended.Add(1)
	c.log.Info("peer suspended; its place is kept", "peer", p.id, "grace", c.resume.grace)
	c.tellQuiet(p.id, false)
	return true
}

// tellQuiet tells id's children that its signaling dropped (back false) or
// came back (back true). A crashed relay looks like a blip until its media
// stops: its children give that media a short window, not the stall
// timeout, before they switch to their standbys (a SIGKILLed relay
// otherwise costs them 1.5 s). Once it resumed, that window ends: a parent
// that is back is a live one, and a gap in its media on a loaded machine
// (370 ms in CI) is not a reason to leave it. Called with c.mu held.
func (c *coordinator) tellQuiet(id string, back bool) {
	for _, kid := range c.tree.Children(id) {
		if k := c.peers[kid]; k != nil {
			k.send(&protocol.Message{Type: protocol.TypeQuiet, Peer: id, Resumed: back})
		}
	}
}

// expire ends p's suspension when the grace period passed without a
// resume: p is removed, its children re-attached.
func (c *coordinator) expire(p *peerConn) {
	c.mu.Lock()
	s := c.suspended[p.id]
	if s == nil || s.p != p {
		c.mu.Unlock()
		return
	}
	delete(c.suspended, p.id)
	c.resume.counts.graceOver.Add(1)
	c.mu.Unlock()
	c.gone(p, "resume grace ended")
}

// resumePeer gives p, a new connection whose hello carried tok, the place
// of the suspended peer tok names. Nothing changes when it is refused.
func (c *coordinator) resumePeer(p *peerConn, hello *protocol.Message, tok resumeToken) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return errResumeGone
	}
	s := c.suspended[tok.peer]
	if s == nil {
		if q := c.peers[tok.peer]; q != nil {
			if t := q.token.Load(); t != nil && t.gen == tok.gen {
				q.probe() // its own token: its old connection may be half-open
			}
			return errResumeLive
		}
		return errResumeGone
	}
	old := s.p
	if t := old.token.Load(); t == nil || t.gen != tok.gen {
		return errResumeStale
	}
	if old.hello.Role != hello.Role || old.hello.Kind != hello.Kind || old.private != p.private {
		return errResumeMismatch
	}
	s.timer.Stop()
	delete(c.suspended, tok.peer)
	c.resume.counts.resumed.Add(1)

	p.id = old.id
	p.log = p.log.With("resumed", old.id)
	p.reclaim = old.reclaim
	p.stats = old.stats
	p.budgets = old.budgets
	c.peers[p.id] = p
	c.markPeer(p.id)
	if c.source == old {
		c.source = p
	}
	w := c.welcome(p, tok.gen+1)
	c.describePlace(w)
	p.send(w)
	if c.source == nil && hello.Role != protocol.RoleSource {
		p.send(&protocol.Message{Type: protocol.TypeOffline, Reason: "the stream's source is not connected"})
	}
	held, lost := old.held.Load().take()
	for _, data := range held {
		p.sendData(data)
	}
	c.tellQuiet(p.id, true)
	// A resume from a barred address bars the peer too (bars.go).
	if hello.Role != protocol.RoleSource && !c.signed.barred[p.id] && c.barredForStream(p, time.Now()) {
		c.apply(c.rebar(p))
	}
	// A capacity changed while away (a tab turning relaying off) comes in
	// the hello; compared with the tree's, which capacity messages set.
	if capacity := c.barCapacity(p, privateCapacity(p, hello.Capacity)); hello.Role != protocol.RoleSource && capacity != c.tree.Capacity(p.id) {
		if changes, err := c.tree.SetCapacity(p.id, capacity); err == nil {
			c.apply(changes)
		}
	}
	c.log.Info("peer resumed", "peer", p.id, "after", time.Since(s.since).Round(time.Millisecond),
		"signals", len(held), "signals_lost", lost, "children", len(w.Children))
	return nil
}

// welcome is the welcome for p at generation gen of its place: its id,
// the stream's tracks, its ICE servers and its resume token.
func (c *coordinator) welcome(p *peerConn, gen uint64) *protocol.Message {
	w := &protocol.Message{Type: protocol.TypeWelcome, ID: p.id, Stream: c.id, Tracks: c.tracks,
		ICEServers: p.iceServers, Reclaim: p.reclaim, Private: p.private, SourceKey: c.signed.key}
	if c.resume.on() {
		w.Resume = c.resume.issue(p, c.id, gen)
		c.markPeer(p.id) // its generation
		w.Grace = int(c.resume.grace / time.Millisecond)
	}
	return w
}

// describePlace fills a resumed welcome with the peer's place as the
// coordinator has it now: its parent, depth and standby parent, the
// children it feeds (tree children, and children moving away or leaving
// whose old edge to it is still up), and the standby links it holds.
// Called with c.mu held.
func (c *coordinator) describePlace(w *protocol.Message) {
	id := w.ID
	w.Resumed = true
	if parent, ok := c.tree.Parent(id); ok {
		w.Peer = parent
	}
	if from, ok := c.moving[id]; ok && w.Peer == "" {
		w.Peer = from // queued while moving: the old edge still feeds it
	}
	w.Depth = max(0, c.tree.Depth(id)) // a queued peer has none (-1)
	w.Standby = c.standby.of[id]
	kids := map[string]bool{}
	for _, k := range c.tree.Children(id) {
		kids[k] = true
	}
	for child, from := range c.moving {
		if from == id {
			kids[child] = true
		}
	}
	for child, parent := range c.departed {
		if parent == id {
			kids[child] = true
		}
	}
	w.Children = sortedKeys(kids, protocol.MaxCapacity)
	w.Held = sortedKeys(c.standby.held[id], protocol.MaxHeld)
}

func sortedKeys(m map[string]bool, limit int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

// resume finds the stream of a hello carrying a resume token and resumes
// p there.
func (h *hub) resume(p *peerConn, hello *protocol.Message) (*coordinator, error) {
	c, err := h.resumeAt(p, hello)
	if err != nil {
		h.resumer.counts.refused.Add(1)
		p.log.Info("resume refused", "err", err)
	}
	return c, err
}

func (h *hub) resumeAt(p *peerConn, hello *protocol.Message) (*coordinator, error) {
	tok, err := h.resumer.verify(hello.Resume, hello.Stream)
	if err != nil {
		return nil, err
	}
	c := h.get(hello.Stream)
	if c == nil {
		return nil, errResumeGone
	}
	if err := c.resumePeer(p, hello, tok); err != nil {
		return nil, err
	}
	return c, nil
}

// lostMedia ends parent's suspension at once when one of its children
// that played from it says its media stopped too (a stall report, or a
// switch to its standby link): a peer whose process died looks like one
// whose signaling dropped until then, and its children must not wait out
// the grace period. A child that never played from it (one placed under
// it during the suspension waits for its offer) is no such evidence.
// Called with c.mu held.
func (c *coordinator) lostMedia(parent, reporter string) {
	s := c.suspended[parent]
	if s == nil {
		return
	}
	if cur, ok := c.tree.Parent(reporter); !ok || cur != parent || !c.trust.playedFrom(reporter, parent) {
		return // not its child (a stale report), or never fed by it: no evidence
	}
	s.timer.Stop()
	delete(c.suspended, parent)
	c.resume.counts.mediaLost.Add(1)
	c.log.Info("suspended peer's media stopped too; removing it", "peer", parent, "reporter", reporter)
	c.goneLocked(s.p, "its children lost its media") // as its connection's end always did
}

// probe asks a connected peer to prove its connection is alive: a ping
// now, and a read deadline of probeTimeout. A pong (or any message) ends
// the probe (session's alive); a read that times out meanwhile ends the
// session as a drop, which is resumable. One probe at a time.
func (p *peerConn) probe() {
	if rc, ok := p.conn.(*remoteConn); ok {
		rc.probeRemote() // at the peer's edge (owner.go)
		return
	}
	ws, ok := p.conn.(*websocket.Conn)
	if !ok || !p.probing.CompareAndSwap(false, true) {
		return
	}
	_ = ws.SetReadDeadline(time.Now().Add(probeTimeout))
	if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(p.lim.WriteTimeout)); err != nil {
		_ = ws.Close()
	}
}

// aboveSuspended reports whether id's parent is suspended: when id falls
// silent, the likeliest cause is that its parent died (its suspension
// ends on its own children's reports, and id is re-attached with its
// subtree), so id's children must not switch away from it meanwhile.
// Called with c.mu held.
func (c *coordinator) aboveSuspended(id string) bool {
	up, ok := c.tree.Parent(id)
	return ok && up != "" && c.suspended[up] != nil
}
