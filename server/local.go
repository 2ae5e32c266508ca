package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"canopy/mesh"
	"canopy/mesh/protocol"
)

// wireConn is what a peer's session reads and the peer's flush goroutine (sendq.go) writes:
// the WebSocket of a remote peer, or the in-process pipe of a node the
// server hosts itself (localPipe). It is the part of *websocket.Conn the
// session uses, so the session is the same code for both.
type wireConn interface {
	ReadMessage() (messageType int, data []byte, err error)
	WriteMessage(messageType int, data []byte) error
	WriteControl(messageType int, data []byte, deadline time.Time) error
	SetReadLimit(limit int64)
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	SetPongHandler(h func(appData string) error)
	Close() error
}

var _ wireConn = (*websocket.Conn)(nil)

// Errors of the in-process pipe.
var (
	// errPipeClosed means one end of an in-process connection closed it.
	errPipeClosed = errors.New("in-process connection closed")
	// errPipeTimeout means a deadline of the in-process connection passed.
	errPipeTimeout = errors.New("in-process connection: deadline exceeded")
)

// pipeBuffer is how many messages each direction of an in-process
// connection holds. The server side's writer already has sendBuffer
// slots of its own (ws.go); a node drains its side at once.
const pipeBuffer = 64

// localPipe is an in-process signaling connection between a node the
// server hosts and its coordinator. Its server end (serverEnd) behaves as
// a WebSocket to the session: read and write deadlines, a read limit, and
// pings answered with pongs for as long as the node's end is open. Its node
// end (nodeEnd) is a mesh.Transport.
type localPipe struct {
	toServer chan []byte
	toNode   chan []byte
	pong     chan struct{} // a ping's answer, read on the session's goroutine

	closeOnce sync.Once
	closed    chan struct{}
}

func newLocalPipe() *localPipe {
	return &localPipe{
		toServer: make(chan []byte, pipeBuffer),
		toNode:   make(chan []byte, pipeBuffer),
		pong:     make(chan struct{}, 1),
		closed:   make(chan struct{}),
	}
}

func (p *localPipe) close() { p.closeOnce.Do(func() { close(p.closed) }) }

// deadlineC returns a channel that fires at d (nil: never) and its stop.
func deadlineC(d time.Time) (<-chan time.Time, func()) {
	if d.IsZero() {
		return nil, func() {}
	}
	t := time.NewTimer(time.Until(d))
	return t.C, func() { t.Stop() }
}

// serverEnd is the session's side of a localPipe.
type serverEnd struct {
	p *localPipe
	// Read side: touched only by the session's goroutine, as gorilla's.
	readLimit    int64
	readDeadline time.Time
	onPong       func(string) error
	// Write side: touched only by the flush goroutine (sendq.go).
	writeDeadline time.Time
}

func (e *serverEnd) ReadMessage() (int, []byte, error) {
	for {
		timeout, stop := deadlineC(e.readDeadline)
		select {
		case m := <-e.p.toServer:
			stop()
			if e.readLimit > 0 && int64(len(m)) > e.readLimit {
				e.p.close()
				return 0, nil, websocket.ErrReadLimit
			}
			return websocket.TextMessage, m, nil
		case <-e.p.pong:
			stop()
			if e.onPong != nil {
				if err := e.onPong(""); err != nil {
					return 0, nil, err
				}
			}
		case <-e.p.closed:
			stop()
			// What the node sent before it closed is still read, in order.
			select {
			case m := <-e.p.toServer:
				return websocket.TextMessage, m, nil
			default:
			}
			return 0, nil, errPipeClosed
		case <-timeout:
			e.p.close()
			return 0, nil, errPipeTimeout
		}
	}
}

func (e *serverEnd) WriteMessage(_ int, data []byte) error {
	timeout, stop := deadlineC(e.writeDeadline)
	defer stop()
	select {
	case e.p.toNode <- data:
		return nil
	case <-e.p.closed:
		return errPipeClosed
	case <-timeout:
		e.p.close() // a node that does not read is as good as gone
		return errPipeTimeout
	}
}

// WriteControl answers a ping at once while the node's end is open: an
// in-process node is alive exactly as long as its connection.
func (e *serverEnd) WriteControl(messageType int, _ []byte, _ time.Time) error {
	select {
	case <-e.p.closed:
		return errPipeClosed
	default:
	}
	switch messageType {
	case websocket.PingMessage:
		select {
		case e.p.pong <- struct{}{}:
		default: // one is pending already
		}
	case websocket.CloseMessage:
		e.p.close()
	}
	return nil
}

func (e *serverEnd) SetReadLimit(limit int64)                    { e.readLimit = limit }
func (e *serverEnd) SetReadDeadline(t time.Time) error           { e.readDeadline = t; return nil }
func (e *serverEnd) SetWriteDeadline(t time.Time) error          { e.writeDeadline = t; return nil }
func (e *serverEnd) SetPongHandler(h func(appData string) error) { e.onPong = h }
func (e *serverEnd) Close() error                                { e.p.close(); return nil }

// nodeEnd is the hosted node's side of a localPipe: a mesh.Transport.
type nodeEnd struct{ p *localPipe }

var _ mesh.Transport = nodeEnd{}

func (e nodeEnd) Send(msg []byte) error {
	select {
	case <-e.p.closed:
		return errPipeClosed
	default:
	}
	t := time.NewTimer(DefaultWriteTimeout)
	defer t.Stop()
	select {
	case e.p.toServer <- msg:
		return nil
	case <-e.p.closed:
		return errPipeClosed
	case <-t.C:
		e.p.close()
		return errPipeTimeout
	}
}

func (e nodeEnd) Receive() ([]byte, error) {
	select {
	case m := <-e.p.toNode:
		return m, nil
	case <-e.p.closed:
		select {
		case m := <-e.p.toNode: // the last words: an error, a detach
			return m, nil
		default:
		}
		return nil, errPipeClosed
	}
}

func (e nodeEnd) Close() error { e.p.close(); return nil }

// LocalTransport connects a node the server hosts itself to the stream's
// coordinator in-process: the same session as a WebSocket peer (hello,
// auth, the tree, signals between neighbours), without a socket and
// outside the per-address limits, which are for clients (it does take one
// of the server's -max-peers). gr is what the
// node's credential was verified as by the caller (a WHIP publisher's
// bearer token, the server's own grant for its WHEP relay); nil means the
// node's hello must carry a token, as the demo's does.
func (s *Server) LocalTransport(gr *grant) mesh.Transport {
	pipe := newLocalPipe()
	p := &peerConn{
		id:         s.newPeerID(),
		remote:     "in-process",
		conn:       &serverEnd{p: pipe},
		closed:     make(chan struct{}),
		lim:        s.guard.lim,
		grant:      gr,
		iceServers: s.cfg.ICEServers,
		hosted:     true,
	}
	p.log = s.log.With("peer", p.id, "remote", "in-process")
	p.startPings()
	s.hosted.Store(p.id, struct{}{})
	go func() { <-p.closed; s.hosted.Delete(p.id) }()
	// A hosted node takes one of the server's -max-peers slots like any
	// peer: what the cap bounds (sessions, goroutines, memory) it uses too.
	release, ok := s.peers.acquire()
	if !ok {
		// Refused as a WebSocket is, but after the node's hello, so the
		// node reads the reason instead of a closed connection.
		go func() {
			_ = p.conn.SetReadDeadline(time.Now().Add(p.lim.HelloTimeout))
			_, _, _ = p.conn.ReadMessage()
			p.send(protocol.Errorf(protocol.CodeFull, "%v (%d); try again later", errTooManyPeers, s.peers.max))
			p.close()
		}()
		return nodeEnd{pipe}
	}
	go s.session(context.Background(), p, release)
	return nodeEnd{pipe}
}

// isHosted reports whether id is a peer on an in-process connection: a
// node the server hosts (mesh.Config.LocalPeer).
func (s *Server) isHosted(id string) bool {
	_, ok := s.hosted.Load(id)
	return ok
}
