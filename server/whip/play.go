package whip

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/pion/webrtc/v4"

	"canopy/mesh"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// relayLinger is how long a stream's WHEP relay stays in the tree after
// its last player left: a player that reloads, or the next one, finds it
// connected and its GOP cached, and the tree is not reshaped for every
// coming and going.
const relayLinger = 30 * time.Second

// relay is the server's own relay node in one stream's tree; every WHEP
// player of the stream on this server is its child, outside the tree
// (mesh.Node.AttachLocal), so the source sends no more for them.
type relay struct {
	stream string
	ready  chan struct{} // closed once node or err is set
	node   *mesh.Node
	err    error

	// Guarded by Handler.mu.
	players map[string]*session
	idle    *time.Timer
	holds   int // callers of Hold that keep it without players (hold.go)
}

// play is POST /whep/<stream>: the player's offer is answered by the
// stream's WHEP relay.
func (h *Handler) play(c *gin.Context) {
	stream, offer, _, err := h.readOffer(c, false)
	if err != nil {
		h.writeError(c, err)
		return
	}
	connect, err := h.cfg.Admit(c.Request, stream, protocol.RoleViewer)
	if err != nil {
		h.writeError(c, err)
		return
	}
	if h.cfg.HasSource != nil {
		if exists, _ := h.cfg.HasSource(stream); !exists {
			h.writeError(c, fmt.Errorf("%w: %q", ErrNoStream, stream))
			return
		}
	}
	addr := h.cfg.ClientKey(c.Request)
	release, err := h.reserve(addr)
	if err != nil {
		h.writeError(c, err)
		return
	}
	if h.cfg.Slot != nil {
		releaseSlot, ok := h.cfg.Slot()
		if !ok {
			release()
			h.writeError(c, fmt.Errorf("%w: no peer slot for another WHEP player", errFull))
			return
		}
		releaseSession := release
		release = func() { releaseSession(); releaseSlot() }
	}
	r, err := h.relayFor(c.Request.Context(), stream, connect)
	if err != nil {
		release()
		h.writeError(c, err)
		return
	}
	id := newID()
	d, answer, err := r.node.AttachLocal(c.Request.Context(), "whep-"+id[:8], offer)
	if err != nil {
		release()
		h.relayMaybeIdle(r)
		if errors.Is(err, peer.ErrUnsupportedCodec) {
			err = fmt.Errorf("%w: %v", errNoCodec, err)
		} else {
			err = fmt.Errorf("%w: %v", errBadSDP, err)
		}
		h.writeError(c, err)
		return
	}
	s := &session{id: id, stream: stream, kind: "whep", addr: addr, pc: d.PeerConnection(), etag: newETag(), offer: offer, ufrag: iceUfrag(offer), created: time.Now()}
	s.end = func() {
		_ = d.Close()
		release()
		h.mu.Lock()
		delete(r.players, s.id)
		h.mu.Unlock()
		h.relayMaybeIdle(r)
	}
	h.mu.Lock()
	r.players[s.id] = s
	if r.idle != nil {
		r.idle.Stop()
		r.idle = nil
	}
	h.mu.Unlock()
	h.add(s)
	go func() {
		select {
		case <-d.Done():
			h.end(s, "player connection closed")
		case <-r.node.Done():
			h.end(s, "relay node stopped")
		}
	}()
	h.log.Info("WHEP player connected", "stream", stream, "session", s.id, "relay", r.node.ID())
	h.created(c, s, answer)
}

// relayFor returns the stream's WHEP relay, joining one to the tree if
// there is none.
func (h *Handler) relayFor(ctx context.Context, stream string, connect Connect) (*relay, error) {
	h.mu.Lock()
	r := h.relays[stream]
	if r == nil {
		r = &relay{stream: stream, ready: make(chan struct{}), players: make(map[string]*session)}
		h.relays[stream] = r
		h.mu.Unlock()
		h.startRelay(r, connect)
	} else {
		h.mu.Unlock()
	}
	select {
	case <-r.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if r.err != nil {
		return nil, r.err
	}
	select {
	case <-r.node.Done(): // it stopped meanwhile: the next request starts another
		return nil, fmt.Errorf("the stream's relay stopped: %w", r.node.Err())
	default:
	}
	return r, nil
}

// startRelay dials the relay node and tears it down with its players
// when it stops.
func (h *Handler) startRelay(r *relay, connect Connect) {
	defer close(r.ready)
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	node, err := mesh.Dial(ctx, mesh.Config{
		Transport: connect(), Stream: r.stream, Role: protocol.RoleRelay, Capacity: h.cfg.RelayCapacity,
		LoopbackOnly: h.cfg.Peer.LoopbackOnly, UDPMux: h.cfg.Peer.UDPMux, PublicIPs: h.cfg.Peer.PublicIPs,
		Logger: h.log.With("whep-relay", r.stream), RemoteCandidateFilter: h.cfg.Peer.RemoteCandidateFilter,
		LocalPeer: h.cfg.LocalPeer,
	})
	if err != nil {
		r.err = nodeError(err)
		h.mu.Lock()
		if h.relays[r.stream] == r {
			delete(h.relays, r.stream)
		}
		h.mu.Unlock()
		return
	}
	h.mu.Lock()
	r.node = node
	h.mu.Unlock()
	h.log.Info("WHEP relay joined the tree", "stream", r.stream, "peer", node.ID())
	go func() {
		<-node.Done()
		h.mu.Lock()
		if h.relays[r.stream] == r {
			delete(h.relays, r.stream)
		}
		h.mu.Unlock()
	}()
}

// relayMaybeIdle starts the relay's linger once it has no players.
func (h *Handler) relayMaybeIdle(r *relay) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(r.players) > 0 || r.holds > 0 || r.idle != nil || r.node == nil {
		return
	}
	r.idle = time.AfterFunc(relayLinger, func() {
		h.mu.Lock()
		if len(r.players) > 0 || r.holds > 0 || h.relays[r.stream] != r {
			h.mu.Unlock()
			return
		}
		delete(h.relays, r.stream)
		h.mu.Unlock()
		h.log.Info("WHEP relay leaves the tree: no players", "stream", r.stream)
		_ = r.node.Close()
	})
}

// Player is a WHEP player as the tree API shows it: a child of the
// server's relay node, outside the tree.
type Player struct {
	ID        string // "whep-" and the start of its session id
	Connected bool   // its PeerConnection is up
	Since     time.Time
}

// Players returns the stream's WHEP relay (its peer id in the tree) and
// its players, by id.
func (h *Handler) Players(stream string) (relayID string, players []Player) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.relays[stream]
	if r == nil || r.node == nil {
		return "", nil
	}
	for id, s := range r.players {
		players = append(players, Player{ID: "whep-" + id[:8], Connected: s.pc.ConnectionState() == webrtc.PeerConnectionStateConnected, Since: s.created})
	}
	sort.Slice(players, func(i, j int) bool { return players[i].ID < players[j].ID })
	return r.node.ID(), players
}
