package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Limits of the signaling connection.
const (
	// maxFrameSize is the largest WebSocket frame read at all; past it the
	// connection is closed with 1009. Messages between protocol.MaxMessageSize
	// and this get a too_large error and the connection stays up.
	maxFrameSize = 1 << 20
	// sendBuffer is how many messages may wait for a slow peer before the
	// server gives up on it; a peer that cannot keep up with signaling is
	// treated as gone rather than allowed to stall its stream.
	sendBuffer   = 256
	writeTimeout = 5 * time.Second
	pongTimeout  = 30 * time.Second
	pingInterval = 10 * time.Second
	helloTimeout = 10 * time.Second
	// maxBadMessages is how many invalid messages a peer may send before it
	// is disconnected.
	maxBadMessages = 8
)

// peerConn is one peer's signaling connection.
type peerConn struct {
	id         string
	log        *slog.Logger
	conn       *websocket.Conn
	out        chan []byte
	iceServers []protocol.ICEServer
	// stats is the peer's last report; guarded by its coordinator's mu.
	stats protocol.Stats

	closeOnce sync.Once
	closed    chan struct{}
}

func newPeerID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "p" + hex.EncodeToString(b[:])
}

// send queues m without blocking. A peer whose buffer is full is
// disconnected: the coordinator calls send under its lock and must never
// wait on one peer's network.
func (p *peerConn) send(m *protocol.Message) {
	data, err := protocol.Encode(m)
	if err != nil {
		p.log.Error("encode", "type", m.Type, "err", err)
		return
	}
	select {
	case <-p.closed:
	case p.out <- data:
	default:
		p.log.Warn("signaling send buffer full; disconnecting")
		p.close()
	}
}

func (p *peerConn) close() {
	p.closeOnce.Do(func() { close(p.closed) })
}

// writeLoop owns every write to the socket (gorilla allows one writer).
func (p *peerConn) writeLoop() {
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	defer p.conn.Close()
	for {
		select {
		case data := <-p.out:
			_ = p.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			if err := p.conn.WriteMessage(websocket.TextMessage, data); err != nil {
				p.close()
				return
			}
		case <-ping.C:
			if err := p.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				p.close()
				return
			}
		case <-p.closed:
			// Flush what is queued (an error reply, a final detach), then close.
			for {
				select {
				case data := <-p.out:
					_ = p.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
					if p.conn.WriteMessage(websocket.TextMessage, data) != nil {
						return
					}
				default:
					_ = p.conn.WriteControl(websocket.CloseMessage,
						websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
					return
				}
			}
		}
	}
}

// handleWS upgrades the request and runs the peer's session.
func (s *Server) handleWS(c *gin.Context) {
	conn, err := s.upgrader.Upgrade(c.Writer, c.Request, nil)
	if err != nil {
		return // the upgrader has written the HTTP error
	}
	p := &peerConn{
		id:         newPeerID(),
		conn:       conn,
		out:        make(chan []byte, sendBuffer),
		closed:     make(chan struct{}),
		iceServers: s.cfg.ICEServers,
	}
	p.log = s.log.With("peer", p.id, "remote", c.Request.RemoteAddr)
	go p.writeLoop()
	s.session(c.Request.Context(), p)
}

// session reads the peer's messages until it leaves or fails. A panic while
// handling one peer ends only that peer.
func (s *Server) session(ctx context.Context, p *peerConn) {
	var coord *coordinator
	reason := "connection closed"
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic in peer session", "panic", r)
			reason = "internal error"
		}
		if coord != nil {
			coord.leave(p, reason)
		}
		p.close()
	}()

	conn := p.conn
	conn.SetReadLimit(maxFrameSize)
	_ = conn.SetReadDeadline(time.Now().Add(helloTimeout))
	conn.SetPongHandler(func(string) error {
		return conn.SetReadDeadline(time.Now().Add(pongTimeout))
	})
	bad := 0
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				reason = "frame too large"
			}
			return
		}
		m, err := protocol.Decode(data)
		if err != nil {
			bad++
			p.send(protocol.Errorf(errorCode(err), "%v", err))
			if bad >= maxBadMessages {
				reason = "too many bad messages"
				return
			}
			continue
		}
		switch m.Type {
		case protocol.TypeHello:
			if coord != nil {
				p.send(protocol.Errorf(protocol.CodeState, "hello sent twice"))
				continue
			}
			c, err := s.hub.join(p, m)
			if err != nil {
				p.send(protocol.Errorf(errorCode(err), "%v", err))
				reason = "join refused"
				return
			}
			coord = c
			_ = conn.SetReadDeadline(time.Now().Add(pongTimeout))
		case protocol.TypeSignal:
			if coord == nil {
				p.send(protocol.Errorf(protocol.CodeState, "signal before hello"))
				continue
			}
			if err := coord.signal(p, m); err != nil {
				bad++
				p.send(protocol.Errorf(errorCode(err), "signal to %s: %v", m.Peer, err))
			}
		case protocol.TypeLive, protocol.TypeStalled, protocol.TypeStats:
			if coord == nil {
				p.send(protocol.Errorf(protocol.CodeState, "%s before hello", m.Type))
				continue
			}
			coord.report(p, m)
		case protocol.TypeLeave:
			reason = "left"
			return
		default:
			bad++
			p.send(protocol.Errorf(protocol.CodeBadMessage, "peers may not send %q", m.Type))
		}
		if bad >= maxBadMessages {
			reason = "too many bad messages"
			return
		}
		select {
		case <-p.closed:
			return
		case <-ctx.Done():
			return
		default:
		}
	}
}

func errorCode(err error) string {
	switch {
	case errors.Is(err, protocol.ErrTooLarge):
		return protocol.CodeTooLarge
	case errors.Is(err, errStreamTaken):
		return protocol.CodeStreamTaken
	case errors.Is(err, errNotNeighbour):
		return protocol.CodeNotNeighbour
	case errors.Is(err, errNoStream):
		return protocol.CodeNotFound
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

// originOK allows same-origin pages, the configured origins (sites that
// embed the player) and non-browser clients, which send no Origin.
func (s *Server) originOK(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || origin == "http://"+r.Host || origin == "https://"+r.Host {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}
