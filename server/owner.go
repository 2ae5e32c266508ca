package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
	"canopy/server/cluster"
)

// A peer's session has two halves: its edge (the server its WebSocket, or
// a hosted node's pipe, is connected to: ws.go's session) reads its frames,
// answers pings, admits its hello and sends everything after the hello to
// the stream's owner over NATS; the owner (this file) runs the rest of the
// session against the stream's coordinator. A single server is its own
// edge and owner, through the same NATS code path (cluster package).

// errNotOwner means this server does not own the stream: its edge looks
// for the owner again.
var errNotOwner = errors.New("this server does not own the stream")

// openInfo is what an edge tells the owner of a peer it admitted.
type openInfo struct {
	Hello      *protocol.Message    `json:"hello"`
	Grant      *grantInfo           `json:"grant,omitempty"`
	Origin     originClass          `json:"origin"`
	Private    bool                 `json:"private,omitempty"`
	ICEServers []protocol.ICEServer `json:"iceServers,omitempty"`
	Remote     string               `json:"remote,omitempty"`
	// Hosted: the peer is a node its edge hosts in-process, whose
	// session never resumes (suspend.go).
	Hosted bool `json:"hosted,omitempty"`
}

// grantInfo is a verified grant on the wire between servers.
type grantInfo struct {
	Stream      string `json:"stream"`
	Publish     bool   `json:"publish,omitempty"`
	Relay       bool   `json:"relay,omitempty"`
	MaxChildren int    `json:"maxChildren"`
}

func grantToInfo(g *grant) *grantInfo {
	if g == nil {
		return nil
	}
	return &grantInfo{Stream: g.stream, Publish: g.publish, Relay: g.relay, MaxChildren: g.maxChildren}
}

func (g *grantInfo) grant() *grant {
	if g == nil {
		return nil
	}
	return &grant{stream: g.Stream, publish: g.Publish, relay: g.Relay, maxChildren: g.MaxChildren}
}

// attachRetries bounds how often an edge looks for a stream's owner when
// claiming it lost a race (another server claimed it first, and its
// subscriptions are still on their way here).
const attachRetries = 20

// attach sends an admitted peer's hello to its stream's owner. A source's
// stream that nobody owns is claimed by this server.
func (s *Server) attach(p *peerConn, hello *protocol.Message, remote string) (*cluster.Link, error) {
	h := *hello
	h.Token = "" // verified here; the owner needs the grant, not the secret
	info, err := json.Marshal(openInfo{Hello: &h, Grant: grantToInfo(p.grant), Origin: p.origin,
		Private: p.private, ICEServers: p.iceServers, Remote: remote, Hosted: !p.socket()})
	if err != nil {
		return nil, err
	}
	began := time.Now()
	waited := false
	for try := 0; ; try++ {
		link, err := s.node.Open(hello.Stream, p.id, info, p.sendData, p.close)
		if !errors.Is(err, cluster.ErrNoOwner) {
			return link, err
		}
		if s.awaitOwner(hello.Stream, began) {
			continue // its owner is being replaced, from a state known here (handover.go)
		}
		if !waited && hello.Role != protocol.RoleSource {
			waited = true
			if s.awaitElection(p, hello.Stream) {
				continue // served again: the open goes to the new owner
			}
		}
		if hello.Resume != "" {
			// Nobody has the stream: its token is refused as the owner
			// would have, with why.
			s.hub.resumer.counts.refused.Add(1)
			if _, err := s.hub.resumer.verify(hello.Resume, hello.Stream); err != nil {
				return nil, err
			}
			return nil, errResumeGone
		}
		if hello.Role != protocol.RoleSource {
			s.hub.refused(hello.Stream, hello.Role, outcomeNotFound)
			return nil, errNoStream
		}
		if try == attachRetries {
			return nil, fmt.Errorf("%w: no owner after %d tries", errNotOwner, try)
		}
		if err := s.claim(hello.Stream); errors.Is(err, cluster.ErrOwned) {
			time.Sleep(time.Duration(try+1) * 10 * time.Millisecond) // its subscriptions are on their way
		} else if err != nil {
			return nil, err
		}
	}
}

// awaitElection holds a viewer's or relay's join while its stream, which
// had an owner a moment ago, has none (cluster/election.go): it reports
// whether a server serves the stream again within cluster.ElectionWait.
// The peer hears nothing meanwhile: its welcome comes from the new owner
// (a Go client takes any error before its welcome as the join's answer).
func (s *Server) awaitElection(p *peerConn, stream string) bool {
	if !s.node.Electing(stream) {
		return false
	}
	start := time.Now()
	p.log.Info("join waits for the stream's new owner", "stream", stream)
	ok := s.node.AwaitOwner(stream, cluster.ElectionWait, p.closed)
	p.log.Info("join waited for the stream's owner", "stream", stream, "served", ok, "waited", time.Since(start).Round(time.Millisecond))
	return ok
}

// ownerHandler runs the owner's half of the sessions of the streams this
// server owns.
type ownerHandler struct{ s *Server }

// Open takes a peer's admitted hello and joins it to the stream.
func (h ownerHandler) Open(r *cluster.Remote, data []byte) (cluster.Peer, error) {
	s := h.s
	var info openInfo
	if err := json.Unmarshal(data, &info); err != nil || info.Hello == nil {
		s.log.Warn("dropped a malformed open", "peer", r.ID(), "edge", r.Edge(), "err", err)
		r.Close()
		return &ownerSession{r: r}, nil
	}
	hello := info.Hello
	p := &peerConn{
		id:         r.ID(),
		closed:     make(chan struct{}),
		lim:        s.guard.lim,
		grant:      info.Grant.grant(),
		hello:      hello,
		origin:     info.Origin,
		private:    info.Private,
		iceServers: info.ICEServers,
		remote:     info.Remote, // what bars a tampering relay's address (bars.go)
		hosted:     info.Hosted, // the server's own node (its relay, WHEP): the gate and trust know it
		onForward:  s.cfg.onForward,
		resumer:    s.hub.resumer,
		log:        s.log.With("peer", r.ID(), "edge", r.Edge(), "remote", info.Remote),
	}
	o := &ownerSession{s: s, r: r, p: p, budget: newSessionBudget(p.lim)}
	p.conn = &remoteConn{o: o, socket: !info.Hosted}
	p.startRenewals()
	join := s.hub.join
	if hello.Resume != "" {
		join = s.hub.resume // the place of a peer whose connection dropped (suspend.go)
		s.reapDeadSession(hello)
	}
	if r.Adopted() {
		join = s.hub.adopt // its owner died or handed over: its place was restored (handover.go)
	}
	c, err := join(p, hello)
	if errors.Is(err, errNotOwner) {
		return nil, cluster.ErrNoOwner
	}
	if err != nil {
		p.send(protocol.Errorf(errorCode(err), "%v", err))
		o.finish("join refused")
		return o, nil
	}
	o.mu.Lock()
	o.coord = c
	o.mu.Unlock()
	return o, nil
}

// edgeProbeTimeout bounds how long an owner asks an edge whether a peer
// that resumes elsewhere is still connected there: an edge answers in well
// under a millisecond across loopback processes (FIELD-NOTES).
const edgeProbeTimeout = 300 * time.Millisecond

// reapDeadSession: a peer resuming on another server may have left its
// old session behind on an edge that died a moment ago, before this owner
// noticed the edge was gone (a TTL). Its old edge is asked; if it no longer
// has the peer, the old session ends as a lost edge's does (suspended), so
// the resume finds the place. A peer still connected at a live edge keeps
// it: a copied token takes no live place (errResumeLive).
func (s *Server) reapDeadSession(hello *protocol.Message) {
	tok, err := s.hub.resumer.verify(hello.Resume, hello.Stream)
	if err != nil {
		return
	}
	c := s.hub.get(hello.Stream)
	if c == nil {
		return
	}
	c.mu.Lock()
	old := c.peers[tok.peer]
	suspended := c.suspended[tok.peer] != nil
	c.mu.Unlock()
	if old == nil || suspended {
		return
	}
	rc, ok := old.conn.(*remoteConn)
	if !ok || rc.o.r.Alive(edgeProbeTimeout) {
		return
	}
	rc.o.finish(cluster.EdgeLost)
}

// ownerSession is the owner's half of one peer's session: what the
// session loop did after the hello, one frame at a time.
type ownerSession struct {
	s      *Server
	r      *cluster.Remote
	p      *peerConn
	budget *sessionBudget

	mu     sync.Mutex
	coord  *coordinator
	reason string // set by a graceful leave or a refusal; else the edge's
	done   bool
}

// Remote is the peer's address at its edge.
func (o *ownerSession) Remote() *cluster.Remote { return o.r }

// Frame handles one message of the peer's. A panic ends only this peer.
func (o *ownerSession) Frame(data []byte) {
	o.mu.Lock()
	coord, done := o.coord, o.done
	o.mu.Unlock()
	if done || coord == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			o.p.log.Error("panic in peer session", "panic", r)
			o.finish("internal error")
		}
	}()
	if reason := o.s.handleMessage(coord, o.p, o.budget, data, o.left); reason != "" {
		o.finish(reason)
	} else if o.p.isClosed() {
		o.finish("connection closed")
	}
}

// Closed ends the session: the edge saw the connection end.
func (o *ownerSession) Closed(reason string) { o.finish(reason) }

// finish removes the peer from its stream once, with the first reason
// given (a graceful leave's "left" stands when the socket then closes).
func (o *ownerSession) finish(reason string) {
	o.mu.Lock()
	if o.done {
		o.mu.Unlock()
		return
	}
	o.done = true
	if o.reason == "" || reason == "internal error" {
		o.reason = reason
	}
	coord, why := o.coord, o.reason
	o.mu.Unlock()
	if coord != nil {
		coord.dropped(o.p, why) // suspended for its resume, or gone (suspend.go)
	}
	if o.p != nil {
		o.p.close()
	}
}

// left records a graceful leave: the connection stays (its children
// move first), and its end is a leave, not a crash.
func (o *ownerSession) left() {
	o.mu.Lock()
	o.reason = "left"
	o.mu.Unlock()
}

// remoteConn is the owner's wire to a peer on an edge: what the peer's
// send queue writes (sendq.go) goes to its edge over NATS.
type remoteConn struct {
	o      *ownerSession
	socket bool // the edge holds a WebSocket, not a hosted node's pipe
}

// socket reports whether p's connection is a client's WebSocket, at this
// server or at its edge: only such a session may resume.
func (p *peerConn) socket() bool {
	switch c := p.conn.(type) {
	case *websocket.Conn:
		return true
	case *remoteConn:
		return c.socket
	}
	return false
}

// startRenewals renews an owner-side peer's resume token at the pace its
// edge pings it (the edge has no token to renew: the owner issued it).
func (p *peerConn) startRenewals() {
	t := time.AfterFunc(math.MaxInt64, p.renewTick)
	p.pinger.Store(t) // before it can fire: renewTick reads it
	t.Reset(p.lim.PingInterval)
}

func (p *peerConn) renewTick() {
	if p.isClosed() {
		return
	}
	p.resumer.renew(p)
	p.pinger.Load().Reset(p.lim.PingInterval)
}

func (c *remoteConn) ReadMessage() (int, []byte, error) { return 0, nil, errRemoteRead }
func (c *remoteConn) WriteMessage(_ int, data []byte) error {
	return c.o.r.Send(data)
}
func (c *remoteConn) WriteControl(int, []byte, time.Time) error { return nil }
func (c *remoteConn) SetReadLimit(int64)                        {}
func (c *remoteConn) SetReadDeadline(time.Time) error           { return nil }
func (c *remoteConn) SetWriteDeadline(time.Time) error          { return nil }
func (c *remoteConn) SetPongHandler(func(string) error)         {}

// Close tells the edge to close the peer's socket, after what was sent.
func (c *remoteConn) Close() error {
	c.o.r.Close()
	go c.o.finish("connection closed") // the coordinator may be calling us
	return nil
}

// socketOf is the edge's connection of an owner-side peer connected to
// this server (nil otherwise): tests cut it to drop a peer's signaling.
func (s *Server) socketOf(p *peerConn) wireConn {
	rc, ok := p.conn.(*remoteConn)
	if !ok {
		return p.conn
	}
	_, v := s.node.LinkOf(rc.o.r.ID())
	if edge, ok := v.(*peerConn); ok {
		return edge.conn
	}
	return nil
}

// Probe is the edge's half of a probe (suspend.go): the owner found a
// resume for this peer while its connection here looks up.
func (p *peerConn) Probe() { p.probe() }

// probeRemote is the owner's half: the peer's edge is asked; it pings the
// peer (and the peer's session ends as a drop if it does not answer),
// and an edge that does not answer at all is gone.
func (c *remoteConn) probeRemote() {
	go func() {
		if !c.o.r.Alive(edgeProbeTimeout) {
			c.o.finish(cluster.EdgeLost)
		}
	}()
}

// errRemoteRead: the owner never reads a remote peer's wire; its edge
// sends the frames (ownerSession.Frame).
var errRemoteRead = errors.New("a remote peer's frames come from its edge")

// fenced drops a stream whose lease this server lost: another server owns
// it now, and nothing this one sends is applied.
func (s *Server) fenced(stream string) {
	c := s.hub.get(stream)
	if c == nil {
		return
	}
	s.log.Warn("lost the stream's lease; dropping its coordinator", "stream", stream)
	s.hub.mu.Lock()
	if s.hub.streams[stream] == c {
		delete(s.hub.streams, stream) // a later takeover here restores it afresh
	}
	s.hub.mu.Unlock()
	c.mu.Lock()
	c.removed = true
	peers := make([]*peerConn, 0, len(c.peers))
	for _, p := range c.peers {
		peers = append(peers, p)
	}
	c.mu.Unlock()
	for _, p := range peers {
		p.close()
	}
}
