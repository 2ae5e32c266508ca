package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
	"canopy/server/cluster"
)

// Limits of the signaling connection. Timeouts and rates are in Limits
// (limits.go) so tests can shorten them.
const (
	// maxFrameSize is the largest WebSocket frame read at all; past it the
	// connection is closed with 1009. Messages between protocol.MaxMessageSize
	// and this get a too_large error and the connection stays up.
	maxFrameSize = 1 << 20
	// sendBuffer is how many messages may wait for a slow peer before the
	// server gives up on it; a peer that cannot keep up with signaling is
	// treated as gone rather than allowed to stall its stream.
	sendBuffer = 256
	// maxBadMessages is how many invalid messages a peer may send in a row
	// before it is disconnected; each is forgiven after badForgiven
	// (budget.go), so a long-lived peer's rare mistakes never add up.
	maxBadMessages = 8
)

// guard admits /ws connections: tokens, per-address limits, timeouts and
// the TURN credentials each peer is handed.
type guard struct {
	auth *authenticator
	ips  *ipLimiter
	lim  Limits
	turn *TURNCredentials
}

func newGuard(cfg Config) *guard {
	lim := cfg.Limits.withDefaults()
	return &guard{auth: newAuthenticator(cfg.Auth), ips: newIPLimiter(lim), lim: lim, turn: cfg.TURN}
}

// peerConn is one peer's signaling connection.
type peerConn struct {
	id string
	// edgeRenewed is when its parent last offered it a new connection
	// (trust.go, renewEdge); under the coordinator's lock.
	edgeRenewed time.Time
	// ponged is when the last pong went out (UnixNano; sendq.go, pong).
	ponged     atomic.Int64
	log        *slog.Logger
	conn       wireConn                   // a WebSocket, or the pipe of a node hosted in-process (local.go)
	out        sendQueue                  // written by a flush goroutine (sendq.go)
	pinger     atomic.Pointer[time.Timer] // pings every PingInterval
	iceServers []protocol.ICEServer
	lim        Limits
	// grant is the credential verified on the upgrade request, if any;
	// after hello, the one the peer was admitted with.
	grant *grant
	// hello is the admitted hello; later capacity claims are clamped as it was.
	hello *protocol.Message
	// origin is what the gate made of the upgrade's Origin header.
	origin originClass
	// reclaim is the secret a source is handed in its welcome (caps.go).
	reclaim string
	// private: a viewer in private mode, set at admission (privacy.go).
	private bool
	// remote is the client's address as its edge saw it: the owner logs
	// it and bars a tampering relay's (bars.go).
	remote string
	// hosted: a node the server hosts itself, on an in-process connection (local.go).
	hosted bool
	// onForward is Config.onForward, for tests.
	onForward func(from, to string, sig *protocol.Signal)
	// stats is the peer's last report; guarded by its coordinator's mu.
	stats protocol.Stats
	// budgets bound the signals it sends along each edge and receives
	// (budget.go); guarded by its coordinator's mu.
	budgets signalBudgets

	// resumer renews the peer's resume token (resume.go); token is its
	// current one, held its signals kept while it is suspended (nil while
	// it is connected).
	resumer *resumer
	token   atomic.Pointer[resumeToken]
	held    atomic.Pointer[heldSignals]
	// probing: a resume for this peer arrived while it is connected; it
	// must answer a ping within probeTimeout or be suspended (suspend.go).
	probing atomic.Bool

	closeOnce sync.Once
	closed    chan struct{}
}

// newPeerID names a peer connected here: prefixed with this server's id,
// so the id says which edge holds its connection.
func (s *Server) newPeerID() string { return newPeerID(s.node.ID()) }

// newPeerID is prefix, a dash and 12 random hex digits.
func newPeerID(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// send queues m without blocking. A peer whose buffer is full is
// disconnected: the coordinator calls send under its lock and must never
// wait on one peer's network.
func (p *peerConn) send(m *protocol.Message) {
	if p.held.Load() != nil {
		return // suspended: its resumed welcome will say where it stands
	}
	data, err := protocol.Encode(m)
	if err != nil {
		p.log.Error("encode", "type", m.Type, "err", err)
		return
	}
	p.sendData(data)
}

// close ends the connection: what is queued is written, then a close
// frame, then the socket closes (flush, sendq.go).
func (p *peerConn) close() {
	p.closeOnce.Do(func() {
		close(p.closed)
		if t := p.pinger.Load(); t != nil {
			t.Stop()
		}
		p.out.mu.Lock()
		p.startWriter()
		p.out.mu.Unlock()
	})
}

// handleWS admits the request (per-address limits, then the token if one
// came with it), upgrades it and runs the peer's session. The origin check
// is the upgrader's (403).
func (s *Server) handleWS(c *gin.Context) {
	g := s.guard
	release, err := g.ips.acquire(clientKey(c.Request.RemoteAddr))
	if err != nil {
		c.Header("Retry-After", "1")
		writeError(c, http.StatusTooManyRequests, err)
		return
	}
	var gr *grant
	if tok, ok := requestToken(c.Request); ok {
		if gr, err = g.auth.verify(tok); err != nil {
			release()
			c.Header("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeError(c, http.StatusUnauthorized, errBadToken)
			return
		}
	}
	conn, err := s.upgrader.Upgrade(c.Writer, c.Request, nil)
	if err != nil {
		release()
		return // the upgrader has written the HTTP error
	}
	releasePeer, ok := s.peers.acquire()
	if !ok {
		release()
		// Told over the socket, so every client can show why.
		refuseSocket(conn, g.lim.WriteTimeout, fmt.Errorf("%w (%d); try again later", errTooManyPeers, s.peers.max))
		return
	}
	p := &peerConn{
		id:     s.newPeerID(),
		remote: c.Request.RemoteAddr,
		conn:   conn,
		closed: make(chan struct{}),
		lim:    g.lim,
		grant:  gr,
		origin: s.gate.classify(c.Request),

		resumer: s.hub.resumer,

		onForward: s.cfg.onForward,
	}
	p.iceServers = s.cfg.ICEServers
	if g.turn != nil {
		p.iceServers = append(append([]protocol.ICEServer(nil), s.cfg.ICEServers...),
			g.turn.ICEServer(p.id, c.Request.Host, time.Now()))
	}
	p.log = s.log.With("peer", p.id, "remote", c.Request.RemoteAddr)
	p.startPings()
	// The session outlives the handler: once it returns, net/http lets go
	// of the HTTP connection's write buffer, the request and gin's context
	// (~8 KB a connection), and the session starts on a fresh, shallow
	// stack. Nothing of c may be used past this point. The request's
	// context would end with the handler; a hijacked connection's never
	// ended before it anyway.
	go s.session(context.Background(), p, func() { releasePeer(); release() })
}

// refuseSocket sends one error message on a fresh connection and closes it
// with 1013 (try again later).
func refuseSocket(conn *websocket.Conn, timeout time.Duration, err error) {
	defer conn.Close()
	data, encErr := protocol.Encode(protocol.Errorf(errorCode(err), "%v", err))
	if encErr != nil {
		return
	}
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	if conn.WriteMessage(websocket.TextMessage, data) == nil {
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseTryAgainLater, "server full"), time.Now().Add(timeout))
	}
}

// session reads the peer's messages until it leaves or fails: its edge's
// half (owner.go has the other). Before the hello it answers here
// (awaitHello); the admitted hello goes to the stream's owner, and so does
// every frame after it (relayFrames). done runs once the session has
// ended. A panic while handling one peer ends only that peer.
//
// An admitted peer's frames are read on a goroutine of its own, so that an
// idle peer's stack holds only the read: the runtime halves a stack at a
// collection only while less than a quarter of it is used, and below the
// hello's frames an idle session kept the 8 KB the hello had grown (half of
// its signaling connection's memory); on its own it keeps 4 KB.
func (s *Server) session(ctx context.Context, p *peerConn, done func()) {
	var link *cluster.Link
	reason := "connection closed"
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic in peer session", "panic", r)
			reason = "internal error"
		}
		if link != nil && reason == "" {
			go s.relaySession(ctx, p, link, done)
			return
		}
		endSession(p, link, reason, done)
	}()
	reason = s.awaitHello(ctx, p, &link)
}

// relaySession is session's second half, once p is admitted.
func (s *Server) relaySession(ctx context.Context, p *peerConn, link *cluster.Link, done func()) {
	reason := "internal error"
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic in peer session", "panic", r)
		}
		endSession(p, link, reason, done)
	}()
	reason = relayFrames(ctx, p, link)
}

// endSession closes p's session: its link to the owner, if any, then p.
func endSession(p *peerConn, link *cluster.Link, reason string, done func()) {
	defer done()
	if link != nil {
		link.Close(reason)
	}
	p.close()
}

// awaitHello reads p's frames until its hello is admitted (*link set, "") or
// the session ends (why).
func (s *Server) awaitHello(ctx context.Context, p *peerConn, link **cluster.Link) string {
	conn := p.conn
	conn.SetReadLimit(maxFrameSize)
	_ = conn.SetReadDeadline(time.Now().Add(p.lim.HelloTimeout))
	// Before the hello the hello timeout stands: pongs do not extend it.
	conn.SetPongHandler(func(string) error { return nil })
	budget := newSessionBudget(p.lim)
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return readEnded(p, err)
		}
		if end := s.beforeHello(p, budget, data, link); end != "" {
			return end
		}
		if *link != nil {
			// The owner holds the admitted hello and runs the rest; what
			// the edge kept of it for admission can go.
			p.hello, p.grant = nil, nil
			return ""
		}
		if ended(ctx, p) {
			return "connection closed"
		}
	}
}

// readEnded is why a read error ends p's session.
func readEnded(p *peerConn, err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		return "frame too large" // gorilla has sent close 1009
	case errors.As(err, &ne) && ne.Timeout() && !p.probing.Load():
		return "ping timeout" // silent for PongTimeout: gone, not resumable (suspend.go)
	}
	return "connection closed"
}

// alive extends p's read deadline: a pong or any message proves the peer
// is alive; one that answers neither within PongTimeout is dropped and its
// children re-attached.
func (p *peerConn) alive() {
	p.probing.Store(false) // it answered (suspend.go, probe)
	_ = p.conn.SetReadDeadline(time.Now().Add(p.lim.PongTimeout))
}

// relayFrames passes an admitted peer's frames to its stream's owner until
// the connection ends; it returns why. Its loop only reads: what a frame
// needs is relayFrame's, whose locals are off the stack while the peer is
// idle (see session).
func relayFrames(ctx context.Context, p *peerConn, link *cluster.Link) string {
	p.alive()
	p.conn.SetPongHandler(func(string) error { p.alive(); return nil })
	for {
		_, data, err := p.conn.ReadMessage()
		if err != nil {
			return readEnded(p, err)
		}
		if why := relayFrame(ctx, p, link, data); why != "" {
			return why
		}
	}
}

// relayFrame passes one frame of p's to the owner, or answers a ping; it
// returns why the session ends, or "".
//
//go:noinline
func relayFrame(ctx context.Context, p *peerConn, link *cluster.Link, data []byte) string {
	p.alive()
	if bytes.Equal(data, pingFrame) {
		p.pong() // answered here: a ping asks whether this server, the edge, is there
		return ""
	}
	if err := link.Send(data); err != nil {
		p.log.Warn("lost the stream's owner", "err", err)
		return "owner unreachable"
	}
	if ended(ctx, p) {
		return "connection closed"
	}
	return ""
}

// ended reports whether p's connection is closed or ctx done.
func ended(ctx context.Context, p *peerConn) bool {
	select {
	case <-p.closed:
		return true
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

// decodeWithin decodes one frame of p's within its budgets. It returns the
// message, or nil and why the session ends ("" when it goes on: the frame
// was answered with an error and dropped).
func (s *Server) decodeWithin(p *peerConn, budget *sessionBudget, data []byte) (*protocol.Message, string) {
	if !budget.frame() {
		if budget.reply() {
			p.send(protocol.Errorf(protocol.CodeRateLimited, "%v", errMessageBudget))
		}
		if budget.badMessage() {
			return nil, "message rate"
		}
		return nil, ""
	}
	m, err := protocol.Decode(data)
	if err != nil {
		p.send(protocol.Errorf(errorCode(err), "%v", err))
		if budget.badMessage() {
			return nil, "too many bad messages"
		}
		return nil, ""
	}
	// Signals are budgeted once their edge is known (relaySignal).
	if m.Type != protocol.TypeSignal && !budget.message() {
		p.send(protocol.Errorf(protocol.CodeRateLimited, "%v", errMessageBudget))
		if budget.badMessage() {
			return nil, "message rate"
		}
		return nil, ""
	}
	if s.cfg.onMessage != nil {
		s.cfg.onMessage(m)
	}
	return m, ""
}

// beforeHello handles a message before the peer's hello was admitted; an
// admitted hello sets *link. It returns why the session ends, or "".
func (s *Server) beforeHello(p *peerConn, budget *sessionBudget, data []byte, link **cluster.Link) string {
	m, end := s.decodeWithin(p, budget, data)
	if m == nil {
		return end
	}
	switch m.Type {
	case protocol.TypeHello:
		if err := s.admit(p, m); err != nil {
			p.send(protocol.Errorf(errorCode(err), "%v", err))
			return "unauthorized"
		}
		stop := p.pingWhileAttaching()
		l, err := s.attach(p, m, p.remote)
		stop()
		if err != nil {
			p.send(protocol.Errorf(errorCode(err), "%v", err))
			return "join refused"
		}
		l.SetUser(p)
		*link = l
	case protocol.TypeSignal:
		budget.message()
		p.send(protocol.Errorf(protocol.CodeState, "signal before hello"))
	case protocol.TypeCapacity, protocol.TypePromote, protocol.TypeLive, protocol.TypeStalled, protocol.TypeStats, protocol.TypeTampered:
		p.send(protocol.Errorf(protocol.CodeState, "%s before hello", m.Type))
	case protocol.TypeLeave:
		return "left"
	case protocol.TypePing:
		p.pong()
	default:
		bad := budget.badMessage()
		p.send(protocol.Errorf(protocol.CodeBadMessage, "peers may not send %q", m.Type))
		if bad {
			return "too many bad messages"
		}
	}
	return ""
}

// handleMessage is the owner's handling of one message of an admitted
// peer (ownerSession.Frame). It returns why the session ends, or "".
func (s *Server) handleMessage(coord *coordinator, p *peerConn, budget *sessionBudget, data []byte, left func()) string {
	m, end := s.decodeWithin(p, budget, data)
	if m == nil {
		return end
	}
	bad := false
	switch m.Type {
	case protocol.TypeHello:
		p.send(protocol.Errorf(protocol.CodeState, "hello sent twice"))
	case protocol.TypeSignal:
		bad = relaySignal(coord, p, m, budget)
	case protocol.TypeCapacity:
		h := *p.hello
		h.Capacity = m.Capacity
		capacity, err := s.guard.auth.authorize(&h, p.grant)
		if err != nil {
			p.send(protocol.Errorf(protocol.CodeUnauthorized, "%v", err))
			return ""
		}
		coord.setCapacity(p, privateCapacity(p, capacity))
	case protocol.TypePromote:
		coord.promote(p, m.Peer)
	case protocol.TypeLive, protocol.TypeStalled, protocol.TypeStats, protocol.TypeTampered:
		coord.report(p, m)
	case protocol.TypeLeave:
		// A graceful leave: the peer keeps its connection, and feeds its
		// children, until they play from their new parents.
		left()
		coord.depart(p, "left")
	case protocol.TypePing:
		p.pong() // a ping its edge did not recognise (another encoding)
	default:
		bad = budget.badMessage()
		p.send(protocol.Errorf(protocol.CodeBadMessage, "peers may not send %q", m.Type))
	}
	if bad {
		return "too many bad messages"
	}
	return ""
}

// admit asks the gate about the hello, with its credential (its token,
// else the one verified on the upgrade) and the upgrade's origin, and
// clamps the claimed capacity to what the grant allows. The tree then
// clamps it again by policy. A refusal is counted as a join refused.
func (s *Server) admit(p *peerConn, hello *protocol.Message) error {
	who := caller{grant: p.grant, origin: p.origin}
	if hello.Token != "" {
		var err error
		if who.grant, err = s.guard.auth.verify(hello.Token); err != nil {
			s.hub.refused(hello.Stream, hello.Role, outcomeRefused)
			return err
		}
	}
	capacity, gr, err := s.gate.check(who, hello)
	if err != nil {
		s.hub.refused(hello.Stream, hello.Role, outcomeRefused)
		return err
	}
	if capacity != hello.Capacity {
		p.log.Info("capacity clamped by token", "claimed", hello.Capacity, "allowed", capacity)
		hello.Capacity = capacity
	}
	if err := s.privacy.admit(p, hello); err != nil {
		s.hub.refused(hello.Stream, hello.Role, outcomeRefused)
		return err
	}
	p.grant, p.hello = gr, hello
	return nil
}

func errorCode(err error) string {
	switch {
	case errors.Is(err, protocol.ErrTooLarge):
		return protocol.CodeTooLarge
	case errors.Is(err, errResumeLive):
		return protocol.CodeResumeLive
	case errors.Is(err, errResumeRefused):
		return protocol.CodeResumeRefused
	case errors.Is(err, errStreamTaken), errors.Is(err, errReserved):
		return protocol.CodeStreamTaken
	case errors.Is(err, errTooManyStreams), errors.Is(err, errTooManyPeers), errors.Is(err, cluster.ErrOwnerBusy):
		return protocol.CodeFull
	case errors.Is(err, errNotNeighbour):
		return protocol.CodeNotNeighbour
	case errors.Is(err, errEdgeBudget), errors.Is(err, errPeerBusy), errors.Is(err, errMessageBudget):
		return protocol.CodeRateLimited
	case errors.Is(err, errUnauthorized), errors.Is(err, errBadToken):
		return protocol.CodeUnauthorized
	case errors.Is(err, errNoStream), errors.Is(err, ErrHidden):
		return protocol.CodeNotFound
	case errors.Is(err, ErrOrigin):
		return protocol.CodeUnauthorized
	case errors.Is(err, errPrivateNeedsTURN):
		return protocol.CodeUnavailable
	case errors.Is(err, tree.ErrSourcePresent):
		return protocol.CodeStreamTaken
	case errors.Is(err, tree.ErrInvalid), errors.Is(err, tree.ErrExists):
		return protocol.CodeBadMessage
	case errors.Is(err, protocol.ErrMalformed), errors.Is(err, protocol.ErrUnknownType), errors.Is(err, protocol.ErrInvalid):
		return protocol.CodeBadMessage
	default:
		return protocol.CodeInternal
	}
}

// originOK is the upgrader's origin check: every page may open the
// signaling WebSocket (what it may do there the gate decides at hello, by
// origin: another site's page watches public streams as a leaf) except
// pages of sites that -embed-origins leaves out, which get 403.
func (s *Server) originOK(r *http.Request) bool {
	return s.gate.classify(r) != originRefused
}
