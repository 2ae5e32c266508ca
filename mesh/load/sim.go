package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
)

// sim is one signaling-level peer: it speaks the protocol as a real peer
// does (hello; an answer to its parent's offer; live; stats; leave), and as
// a relay offers to its children, but carries no media.
type sim struct {
	r        *run
	relay    bool // a simulated relay (capacity r.cfg.RelayCapacity)
	server   string
	local    net.IP
	conn     *websocket.Conn
	wmu      sync.Mutex // one writer at a time (gorilla)
	id       string
	hello    time.Time
	leftAt   atomic.Int64 // unix nanos of its leave, for its children's re-parent latency
	leaving  atomic.Bool
	done     chan struct{}
	children atomic.Int32
	ready    atomic.Bool // welcomed: id is set
	attached atomic.Bool // has a parent now
	released sync.Once   // its slot in the run's joins in flight

	// Owned by the read loop.
	parent  string
	placed  bool
	offer   string   // the last offer from its parent: a relay passes it on
	pending []string // children attached before that offer came
	kids    map[string]bool
}

// dialer dials from local (one of 127.0.0.2…254 on loopback, so the
// server's per-address limits see many clients).
func dialer(local net.IP) *websocket.Dialer {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	return &websocket.Dialer{
		NetDialContext:   d.DialContext,
		HandshakeTimeout: 10 * time.Second,
		// Small buffers: the harness holds as many connections as the
		// server, and a message bigger than a buffer is read in pieces.
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
		WriteBufferPool: writePool,
	}
}

// writePool lends write buffers to connections only while they write.
var writePool = &sync.Pool{}

// join dials, says hello and reads until the connection ends.
func (s *sim) join(ctx context.Context) {
	defer close(s.done)
	defer s.release()
	r := s.r
	url := wsURL(s.server)
	var hdr http.Header
	if r.cfg.Token != "" {
		hdr = http.Header{"Authorization": {"Bearer " + r.cfg.Token}}
	}
	conn, resp, err := dialer(s.local).DialContext(ctx, url, hdr)
	if err != nil {
		code := "dial"
		if resp != nil {
			code = fmt.Sprintf("http_%d", resp.StatusCode)
		} else if errors.Is(err, context.Canceled) {
			return
		}
		r.stats.errorf(code, "%v", err)
		return
	}
	s.conn = conn
	conn.SetReadLimit(protocol.MaxMessageSize)
	capacity := 0
	if s.relay {
		capacity = r.cfg.RelayCapacity
		s.kids = make(map[string]bool)
	}
	role := protocol.RoleViewer
	if s.relay {
		role = protocol.RoleRelay
	}
	s.hello = time.Now()
	if err := s.write(&protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role,
		Kind: protocol.KindGo, Stream: r.cfg.Stream, Capacity: capacity}); err != nil {
		r.stats.errorf("write", "%v", err)
		_ = conn.Close()
		return
	}
	r.stats.dialed.Add(1)
	s.readLoop()
}

func wsURL(server string) string {
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	server = strings.TrimSuffix(server, "/")
	switch {
	case strings.HasPrefix(server, "https://"):
		server = "wss://" + strings.TrimPrefix(server, "https://")
	case strings.HasPrefix(server, "http://"):
		server = "ws://" + strings.TrimPrefix(server, "http://")
	}
	return server + "/ws"
}

func (s *sim) write(m *protocol.Message) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return s.conn.WriteMessage(websocket.TextMessage, data)
}

func (s *sim) readLoop() {
	r := s.r
	defer func() { _ = s.conn.Close() }()
	for {
		_, data, err := s.conn.ReadMessage()
		if err != nil {
			if !s.leaving.Load() && r.ctx.Err() == nil {
				r.stats.errorf("closed", "%s: %v", s.id, err)
			}
			return
		}
		var m protocol.Message
		if err := json.Unmarshal(data, &m); err != nil {
			r.stats.errorf("bad_json", "%v", err)
			continue
		}
		if err := s.handle(&m); err != nil {
			r.stats.errorf("write", "%v", err)
			return
		}
	}
}

func (s *sim) handle(m *protocol.Message) error {
	r := s.r
	now := time.Now()
	switch m.Type {
	case protocol.TypeWelcome:
		if !s.ready.Load() {
			r.register(s, m.ID)
		}
	case protocol.TypeParent:
		old := s.parent
		s.parent = m.Peer
		s.attached.Store(true)
		if !s.placed {
			s.placed = true
			r.stats.joined(now, now.Sub(s.hello))
			s.release()
		} else if p := r.lookup(old); p != nil {
			if at := p.leftAt.Load(); at != 0 {
				r.stats.reparent(now.Sub(time.Unix(0, at)))
			} else {
				r.stats.moves.Add(1)
			}
		} else {
			r.stats.moves.Add(1)
		}
	case protocol.TypeSignal:
		return s.signal(m)
	case protocol.TypeAttach:
		if !s.relay {
			r.stats.errorf("attach_to_viewer", "viewer %s asked to feed %s", s.id, m.Peer)
			return nil
		}
		s.kids[m.Peer] = true
		s.children.Store(int32(len(s.kids)))
		if s.offer == "" {
			s.pending = append(s.pending, m.Peer)
			return nil
		}
		return s.offerTo(m.Peer)
	case protocol.TypeDetach:
		if m.Peer == s.parent {
			s.parent = ""
			s.attached.Store(false)
		}
		if s.kids[m.Peer] {
			delete(s.kids, m.Peer)
			s.children.Store(int32(len(s.kids)))
		}
	case protocol.TypeError:
		r.stats.errorf(m.Code, "%s", m.Reason)
	case protocol.TypeOffline:
		r.stats.offline.Add(1)
	}
	return nil
}

// signal answers the parent's offer (and tells the server its media plays)
// or takes a child's answer; candidates are dropped: no ICE runs here.
func (s *sim) signal(m *protocol.Message) error {
	r := s.r
	if m.Sig == nil {
		return nil
	}
	switch m.Sig.Kind {
	case protocol.SignalOffer:
		if m.Peer != s.parent {
			return nil // an offer from a parent it has already left
		}
		if !s.gotOffer() {
			r.stats.firstOffer(time.Since(s.hello))
		}
		ans, err := r.answers.answer(m.Sig.SDP)
		if err != nil {
			r.stats.errorf("offer", "%v", err)
			return nil
		}
		s.offer = m.Sig.SDP
		if err := s.write(&protocol.Message{Type: protocol.TypeSignal, Peer: m.Peer,
			Sig: &protocol.Signal{Kind: protocol.SignalAnswer, SDP: ans}}); err != nil {
			return err
		}
		if err := s.write(&protocol.Message{Type: protocol.TypeLive, Peer: m.Peer}); err != nil {
			return err
		}
		pending := s.pending
		s.pending = nil
		for _, c := range pending {
			if s.kids[c] {
				if err := s.offerTo(c); err != nil {
					return err
				}
			}
		}
	case protocol.SignalAnswer:
		if !strings.HasPrefix(m.Sig.SDP, "v=0") {
			r.stats.errorf("answer", "child %s sent no SDP", m.Peer)
			return nil
		}
		r.stats.answers.Add(1)
	}
	return nil
}

// release frees the peer's slot among the joins in flight, once.
func (s *sim) release() { s.released.Do(func() { <-s.r.sem }) }

// gotOffer reports whether any offer has come yet (the first is timed).
func (s *sim) gotOffer() bool { return s.offer != "" }

// offerTo sends child the offer this relay got, with its own credentials:
// the same tracks and codecs as the stream's real offers.
func (s *sim) offerTo(child string) error {
	return s.write(&protocol.Message{Type: protocol.TypeSignal, Peer: child,
		Sig: &protocol.Signal{Kind: protocol.SignalOffer, SDP: withCredentials(s.offer, true)}})
}

// sendStats reports as a real peer does every 5 s.
func (s *sim) sendStats() error {
	return s.write(&protocol.Message{Type: protocol.TypeStats, Stats: &protocol.Stats{Children: int(s.children.Load())}})
}

// leave departs gracefully: a relay stays until its children have moved
// (the server detaches each once it plays from its new parent), or 5 s.
func (s *sim) leave() {
	s.leaving.Store(true)
	s.leftAt.Store(time.Now().UnixNano())
	if err := s.write(&protocol.Message{Type: protocol.TypeLeave}); err == nil && s.children.Load() > 0 {
		deadline := time.Now().Add(5 * time.Second)
		for s.children.Load() > 0 && time.Now().Before(deadline) {
			select {
			case <-s.done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	s.close()
}

func (s *sim) close() {
	s.leaving.Store(true)
	if s.conn != nil {
		s.wmu.Lock()
		_ = s.conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		s.wmu.Unlock()
		_ = s.conn.Close()
	}
}
