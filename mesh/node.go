// Package mesh is the library every Go peer of Canopy is built on: a Node
// joins one stream through the server's signaling, receives the stream once
// from its parent in the tree and forwards it to the children the server
// gives it. A source is a Node that writes its own packets instead of
// receiving them.
package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// Errors returned by a Node.
var (
	// ErrClosed means the node was closed or its signaling connection ended.
	ErrClosed = errors.New("mesh: node closed")
	// ErrUnknownTrack means WriteRTP named a track the stream does not have.
	ErrUnknownTrack = errors.New("mesh: unknown track")
	// ErrNotSource means WriteRTP was called on a node that is not the source.
	ErrNotSource = errors.New("mesh: only the source writes packets")
)

// Timings of the node's self-healing; see README "Self-healing".
const (
	// stallTimeout is how long a node waits without media from its parent
	// before it tells the server the parent has failed.
	stallTimeout = 1500 * time.Millisecond
	// stallRepeat is how often a node repeats its report of a silent parent.
	stallRepeat = 3 * time.Second
	// drainTimeout bounds a graceful leave: children that have not moved to
	// their new parent by then are dropped.
	drainTimeout = 5 * time.Second
	// overlapTimeout is how long the old parent's connection is kept when
	// the new one never delivers.
	overlapTimeout = 5 * time.Second
	// statsInterval is how often a node reports its measurements.
	statsInterval = 5 * time.Second
	watchInterval = 100 * time.Millisecond
)

// ServerError is an error message from the server, such as a stream that
// does not exist.
type ServerError struct {
	Code   string
	Reason string
}

func (e *ServerError) Error() string { return fmt.Sprintf("server: %s: %s", e.Code, e.Reason) }

// Node is one peer in a stream's tree.
type Node struct {
	cfg Config
	log *slog.Logger
	sig *signaling
	api *peer.API
	// localAPI carries the links to Config.LocalPeer neighbours; nil
	// without LocalPeer.
	localAPI *peer.API
	id       string
	// media is replaced as a whole (copy on write) when a returning source
	// brings a new track; readers load it without a lock.
	media    atomic.Pointer[trackSet]
	depth    atomic.Int64
	children atomic.Int64                 // live downstream connections
	current  atomic.Pointer[upstreamConn] // n.cur, for other goroutines (Parent, keyframe requests)
	offline  atomic.Bool
	relayed  atomic.Uint64 // bytes handed to children's queues
	private  bool          // private mode: relay candidates only (Config.Private or the welcome)
	liveCh   chan *upstreamConn

	// Owned by the run goroutine.
	cur, prev   *upstreamConn
	downstreams map[string]*peer.Downstream
	refusedSeen map[string]uint64 // per child, retransmissions refused at the last report
	leaving     bool
	sb          standbyState // hot standby links, both sides (standby.go)
	standbyID   atomic.Value // string: sb.link's parent, for Standby

	leaveOnce sync.Once
	leaveReq  chan struct{}
	closeOnce sync.Once
	done      chan struct{}
	errMu     sync.Mutex
	err       error
	wg        sync.WaitGroup
}

// Dial connects to the server, says hello and waits for the welcome. The
// node then runs until Close or until the server connection ends.
func Dial(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Role == "" {
		cfg.Role = protocol.RoleViewer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var sig *signaling
	if cfg.Transport != nil {
		sig = newSignaling(cfg.Transport)
	} else {
		var err error
		if sig, err = dialSignaling(ctx, cfg.Server); err != nil {
			return nil, err
		}
	}
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
	}
	if err := sig.send(hello); err != nil {
		sig.close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	var welcome *protocol.Message
	for welcome == nil {
		select {
		case m, ok := <-sig.in:
			if !ok {
				return nil, fmt.Errorf("server closed the connection before welcome: %v", sig.err)
			}
			switch m.Type {
			case protocol.TypeWelcome:
				welcome = m
			case protocol.TypeError:
				sig.close()
				return nil, &ServerError{Code: m.Code, Reason: m.Reason}
			}
		case <-ctx.Done():
			sig.close()
			return nil, ctx.Err()
		}
	}
	api, err := peer.NewAPI(peer.Config{
		LoopbackOnly: cfg.LoopbackOnly,
		ICEServers:   iceServers(welcome.ICEServers),
		Logger:       cfg.Logger,
		UDPMux:       cfg.UDPMux,
		PublicIPs:    cfg.PublicIPs,

		RemoteCandidateFilter: cfg.RemoteCandidateFilter,
		RelayOnly:             cfg.Private || welcome.Private,
	})
	if err != nil {
		sig.close()
		return nil, err
	}
	var localAPI *peer.API
	if cfg.LocalPeer != nil {
		if localAPI, err = peer.NewAPI(peer.Config{LoopbackOnly: true, Logger: cfg.Logger}); err != nil {
			sig.close()
			return nil, err
		}
	}
	n := &Node{
		cfg:         cfg,
		log:         cfg.Logger.With("stream", cfg.Stream, "peer", welcome.ID, "role", cfg.Role),
		sig:         sig,
		api:         api,
		localAPI:    localAPI,
		id:          welcome.ID,
		liveCh:      make(chan *upstreamConn, 4),
		downstreams: make(map[string]*peer.Downstream),
		leaveReq:    make(chan struct{}),
		done:        make(chan struct{}),
	}
	n.private = cfg.Private || welcome.Private
	n.setTracks(welcome.Tracks)
	cfg.Reclaim.set(welcome.Reclaim)
	n.wg.Add(1)
	go n.run()
	return n, nil
}

func iceServers(in []protocol.ICEServer) []webrtc.ICEServer {
	out := make([]webrtc.ICEServer, 0, len(in))
	for _, s := range in {
		out = append(out, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return out
}

// trackSet is the stream's tracks, in the source's order, their forwarders
// and the ingress that merges what parents deliver.
type trackSet struct {
	tracks []protocol.Track
	fwds   map[string]*peer.Forwarder
	in     map[string]*ingress
}

// setTracks creates one forwarder per track. A later welcome (the source
// came back) keeps the forwarders of tracks it already had, so children stay
// attached.
func (n *Node) setTracks(tracks []protocol.Track) {
	old := n.media.Load()
	next := &trackSet{fwds: make(map[string]*peer.Forwarder), in: make(map[string]*ingress)}
	if old != nil {
		next.tracks = append(next.tracks, old.tracks...)
		for id, f := range old.fwds {
			next.fwds[id], next.in[id] = f, old.in[id]
		}
	}
	for _, t := range tracks {
		if _, ok := next.fwds[t.ID]; ok {
			continue
		}
		f := peer.NewForwarderWith(t, n.cfg.Forwarder, n.log)
		next.fwds[t.ID], next.in[t.ID] = f, newIngress(t.ClockRate)
		next.tracks = append(next.tracks, t)
		if t.Kind == "video" {
			n.wg.Add(1)
			go n.relayKeyframeRequests(t.ID, f)
		}
	}
	n.media.Store(next)
}

// ID is the node's peer id, assigned by the server.
func (n *Node) ID() string { return n.id }

// Private reports whether the node watches in private mode: asked for in
// Config.Private, or made so by the server's policy.
func (n *Node) Private() bool { return n.private }

// Depth is the node's distance from the source (the source is 0).
func (n *Node) Depth() int { return int(n.depth.Load()) }

// Tracks are the stream's tracks.
func (n *Node) Tracks() []protocol.Track { return n.media.Load().tracks }

// Children is how many children this node currently feeds.
func (n *Node) Children() int { return int(n.children.Load()) }

// Parent is the id of the node's current parent ("" for a source or while
// it waits for one).
func (n *Node) Parent() string {
	if uc := n.current.Load(); uc != nil {
		return uc.parent
	}
	return ""
}

// Done is closed when the node has stopped.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err says why the node stopped: nil after Close, the cause otherwise.
func (n *Node) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// closedErr is the error a stopped node reports to its own callers.
func (n *Node) closedErr() error {
	if err := n.Err(); err != nil {
		return err
	}
	return ErrClosed
}

// WriteRTP sends one packet of a source's track to its children. It does
// not retain p.
func (n *Node) WriteRTP(trackID string, p *rtp.Packet) error {
	if n.cfg.Role != protocol.RoleSource {
		return ErrNotSource
	}
	select {
	case <-n.done:
		return n.closedErr()
	default:
	}
	f, ok := n.media.Load().fwds[trackID]
	if !ok {
		return ErrUnknownTrack
	}
	n.relayed.Add(uint64(len(p.Payload)+rtpHeaderSize) * uint64(n.children.Load()))
	return f.WriteRTP(p)
}

// rtpHeaderSize is the fixed RTP header, counted in bytes relayed.
const rtpHeaderSize = 12

// SetCapacity changes how many children this node offers to feed; the
// server moves children beyond it elsewhere first.
func (n *Node) SetCapacity(capacity int) error {
	return n.sig.send(&protocol.Message{Type: protocol.TypeCapacity, Capacity: capacity})
}

// Close leaves the stream gracefully: the server moves this node's children
// to new parents, the node keeps feeding them until each receives from its
// new parent (or drainTimeout passes), then it closes every connection.
func (n *Node) Close() error {
	n.leaveOnce.Do(func() { close(n.leaveReq) })
	n.wg.Wait()
	return nil
}

// Kill drops every connection at once without telling anyone, as a crash
// would. Tools and tests use it to exercise recovery.
func (n *Node) Kill() {
	n.stop(nil)
	abort(n.sig.conn)
	n.wg.Wait()
}

func (n *Node) stop(err error) {
	n.closeOnce.Do(func() {
		n.errMu.Lock()
		n.err = err
		n.errMu.Unlock()
		n.sig.close()
		close(n.done)
	})
}

// run handles the server's messages and the node's timers in order; it owns
// the upstream and downstream connections.
func (n *Node) run() {
	defer n.wg.Done()
	defer n.teardown()
	defer n.recoverRun() // before teardown (guard.go)
	watch := time.NewTicker(watchInterval)
	defer watch.Stop()
	stats := time.NewTicker(statsInterval)
	defer stats.Stop()
	var drain <-chan time.Time
	leaveReq := n.leaveReq
	for {
		select {
		case m, ok := <-n.sig.in:
			if !ok {
				err := fmt.Errorf("%w: signaling ended: %v", ErrClosed, n.sig.err)
				if n.leaving {
					err = nil
				}
				n.stop(err)
				return
			}
			n.handle(m)
		case uc := <-n.liveCh:
			n.onLive(uc)
		case <-watch.C:
			n.watchdog()
		case <-stats.C:
			n.sendStats()
		case <-leaveReq:
			leaveReq = nil
			n.leaving = true
			n.sendStats() // the last word on what this node received and relayed
			_ = n.sig.send(&protocol.Message{Type: protocol.TypeLeave})
			drain = time.After(drainTimeout)
		case <-drain:
			n.log.Warn("graceful leave: children did not move in time", "children", len(n.downstreams))
			n.stop(nil)
			return
		case <-n.done:
			return
		}
		if n.leaving && len(n.downstreams) == 0 {
			n.stop(nil)
			return
		}
	}
}

func (n *Node) teardown() {
	n.closeStandbys()
	n.closeUpstream(n.prev)
	n.closeUpstream(n.cur)
	n.prev, n.cur = nil, nil
	n.current.Store(nil)
	for id, d := range n.downstreams {
		_ = d.Close()
		delete(n.downstreams, id)
	}
	n.children.Store(0)
	for _, f := range n.media.Load().fwds {
		f.Close()
	}
}

func (n *Node) handle(m *protocol.Message) {
	switch m.Type {
	case protocol.TypeWelcome:
		// A welcome after the first one means the source is back.
		n.setTracks(m.Tracks)
		n.offline.Store(false)
	case protocol.TypeParent:
		n.setParent(m.Peer, m.Depth, m.Standby)
	case protocol.TypeAttach:
		n.attach(m.Peer)
	case protocol.TypeDetach:
		n.detach(m.Peer)
	case protocol.TypeStandby:
		n.onStandby(m)
	case protocol.TypePromote:
		n.promoteChild(m.Peer)
	case protocol.TypeSignal:
		n.route(m)
	case protocol.TypeOffline:
		n.setOffline(m.Reason)
	case protocol.TypeError:
		n.log.Warn("server error", "code", m.Code, "reason", m.Reason)
		n.emit(Event{Kind: EventError, Code: m.Code, Reason: m.Reason})
	}
}

func (n *Node) emit(e Event) {
	if n.cfg.OnEvent != nil {
		n.cfg.OnEvent(e)
	}
}

func (n *Node) sendSignal(to string) func(protocol.Signal) {
	return func(s protocol.Signal) {
		_ = n.sig.send(&protocol.Message{Type: protocol.TypeSignal, Peer: to, Sig: &s})
	}
}

func (n *Node) route(m *protocol.Message) {
	var err error
	switch {
	case n.cur != nil && m.Peer == n.cur.parent:
		n.renewIfReoffered(m)
		err = n.cur.up.HandleSignal(*m.Sig)
	case n.downstreams[m.Peer] != nil:
		err = n.downstreams[m.Peer].HandleSignal(*m.Sig)
	default:
		var ok bool
		if ok, err = n.routeStandby(m); !ok {
			return // a late signal for a connection already gone
		}
	}
	if err != nil {
		n.log.Warn("signal", "peer", m.Peer, "kind", m.Sig.Kind, "err", err)
		if errors.Is(err, peer.ErrBadOffer) && n.cur != nil && m.Peer == n.cur.parent {
			n.cur.refused.Store(true) // the watchdog reports this parent now
			n.watchdog()
		}
	}
}

// sendStats reports the node's counters to the server.
func (n *Node) sendStats() {
	n.warnOverBudget()
	var s protocol.Stats
	n.CollectStats(&s)
	_ = n.sig.send(&protocol.Message{Type: protocol.TypeStats, Stats: &s})
}

// CollectStats fills s with the node's counters, and with the caller's
// measures through Config.OnStats: what the node reports to the server.
func (n *Node) CollectStats(s *protocol.Stats) {
	for _, g := range n.media.Load().in {
		g.mu.Lock()
		s.PacketsReceived += g.received
		s.BytesReceived += g.bytes
		g.mu.Unlock()
	}
	for _, f := range n.media.Load().fwds {
		s.PacketsRelayed += f.Stats().PacketsOut
	}
	s.BytesRelayed = n.relayed.Load()
	s.Children = n.Children()
	if n.cfg.OnStats != nil {
		n.cfg.OnStats(s)
	}
}

// apiFor is the API for a link to neighbour id: loopback of its own for a
// neighbour in this process (Config.LocalPeer), the node's network otherwise.
func (n *Node) apiFor(id string) *peer.API {
	if n.localAPI != nil && n.cfg.LocalPeer(id) {
		return n.localAPI
	}
	return n.api
}
