package mesh

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
)

// signaling is a peer's connection to the server (a WebSocket, or the
// Transport in Config): one goroutine reads into in, one writes from out,
// so callers never touch the connection.
type signaling struct {
	conn Transport
	in   chan *protocol.Message
	out  chan []byte

	closeOnce sync.Once
	closed    chan struct{}
	err       error // why the read side ended; valid after in is closed
}

// wsURL turns a server address (http://host:port, https://…, ws://…, or a
// bare host:port) into its signaling endpoint.
func wsURL(server string) (string, error) {
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("server address %q: %w", server, err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("server address %q: scheme must be http or https", server)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/ws"
	return u.String(), nil
}

// handshakeTimeout bounds a WebSocket upgrade on the first dial. A resume
// waits silenceTimeout at most: a stopped server accepts the TCP
// connection (the kernel does) and never answers the upgrade.
const handshakeTimeout = 10 * time.Second

func dialSignaling(ctx context.Context, server string, handshake time.Duration) (*signaling, error) {
	addr, err := wsURL(server)
	if err != nil {
		return nil, err
	}
	d := websocket.Dialer{HandshakeTimeout: handshake}
	conn, _, err := d.DialContext(ctx, addr, nil)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	conn.SetReadLimit(protocol.MaxMessageSize)
	return newSignaling(newWSTransport(conn)), nil
}

// newSignaling starts the read and write loops over t.
func newSignaling(t Transport) *signaling {
	s := &signaling{
		conn:   t,
		in:     make(chan *protocol.Message, 64),
		out:    make(chan []byte, 256),
		closed: make(chan struct{}),
	}
	go s.readLoop()
	go s.writeLoop()
	return s
}

func (s *signaling) readLoop() {
	defer close(s.in)
	for {
		data, err := s.conn.Receive()
		if err != nil {
			s.err = err
			s.close()
			return
		}
		m, err := protocol.Decode(data)
		if err != nil {
			continue // a newer server's message we do not know; nothing to act on
		}
		select {
		case s.in <- m:
		case <-s.closed:
			return
		}
	}
}

func (s *signaling) writeLoop() {
	defer s.conn.Close()
	for {
		select {
		case data := <-s.out:
			if s.conn.Send(data) != nil {
				s.close()
				return
			}
		case <-s.closed:
			for {
				select {
				case data := <-s.out:
					if s.conn.Send(data) != nil {
						return
					}
				default:
					return
				}
			}
		}
	}
}

// send queues m; it never blocks the caller (pion callbacks call it).
func (s *signaling) send(m *protocol.Message) error {
	data, err := protocol.Encode(m)
	if err != nil {
		return err
	}
	select {
	case s.out <- data:
		return nil
	case <-s.closed:
		return ErrClosed
	default:
		s.close()
		return fmt.Errorf("signaling send buffer full")
	}
}

func (s *signaling) close() { s.closeOnce.Do(func() { close(s.closed) }) }

// helloFor is the hello of a node with cfg.
func helloFor(cfg Config) *protocol.Message {
	hello := &protocol.Message{
		Type: protocol.TypeHello, Version: protocol.Version, Role: cfg.Role, Kind: protocol.KindGo,
		Stream: cfg.Stream, Capacity: cfg.Capacity, Token: cfg.Token, Private: cfg.Private,
	}
	if cfg.Private {
		hello.Capacity = 0 // the server would clamp it anyway
	}
	if cfg.Role == protocol.RoleSource {
		hello.Tracks = cfg.Tracks
		hello.Reclaim = cfg.Reclaim.Secret()
		hello.SignKey = signKeyOf(cfg)
	}
	return hello
}

// hello is the node's hello now; its capacity is the last one it set.
func (n *Node) hello() *protocol.Message {
	h := helloFor(n.cfg)
	if !n.cfg.Private {
		h.Capacity = int(n.capacity.Load())
	}
	return h
}
