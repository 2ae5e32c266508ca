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
	// quietSilence replaces stallTimeout once the server said the parent's
	// signaling dropped (protocol.TypeQuiet): a relay whose process died
	// looks like a blip to the server until its media stops, and 100 ms is
	// three video frames at 30 fps, a gap a live parent rarely leaves (and
	// one that did only moves this child, hot, to its standby). The node
	// wakes when it ends (quietWake), not on the next watch tick. It holds
	// for quietFor after the notice. 200 ms, checked every watchInterval,
	// made a killed relay's orphans stall 250–330 ms.
	quietSilence = 100 * time.Millisecond
	quietFor     = 15 * time.Second
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
	// link is the signaling connection, or what is held while the node
	// resumes (resume.go); servers are Config.Server's addresses, server
	// the one it is on.
	link    link
	servers []string
	server  int
	// resumeToken and grace are the last welcome's (or resume message's):
	// how the node gets its place back when its connection drops. Owned
	// by the run goroutine.
	resumeToken string
	grace       time.Duration
	resumed     chan resumeResult
	api         *peer.API
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
	capacity atomic.Int64  // the last capacity asked for, for a resume's hello
	relayed  atomic.Uint64 // bytes handed to children's queues
	private  bool          // private mode: relay candidates only (Config.Private or the welcome)
	liveCh   chan *upstreamConn

	// Owned by the run goroutine.
	cur, prev *upstreamConn
	// quietWake runs the watchdog when a quiet parent's silence reaches
	// quietSilence (family.go); nil when none is due. Owned by run.
	quietWake   *time.Timer
	downstreams map[string]*peer.Downstream
	// strip holds the children the server said cannot verify (attach,
	// standby or promote with strip): they get frames without signature
	// trailers (local.go). Touched by the loop only.
	strip       map[string]bool
	refusedSeen map[string]uint64 // per child, retransmissions refused at the last report
	uplink      uplinkMeter       // the children's receiver reports, per stats report (uplink.go)
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

	signState // signed frames: the key, frame checks, re-signing ingests (verify.go, sign.go)
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
	servers := splitServers(cfg.Server)
	server := 0
	if cfg.Transport != nil {
		sig = newSignaling(cfg.Transport)
	} else {
		var err error
		if sig, server, err = dialAny(ctx, servers, 0, handshakeTimeout); err != nil {
			return nil, err
		}
	}
	if err := sig.send(helloFor(cfg)); err != nil {
		sig.close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	welcome, err := awaitWelcome(ctx, sig)
	if err != nil {
		sig.close()
		return nil, err
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
		servers:     servers,
		server:      server,
		resumeToken: welcome.Resume,
		grace:       time.Duration(welcome.Grace) * time.Millisecond,
		resumed:     make(chan resumeResult),
		api:         api,
		localAPI:    localAPI,
		id:          welcome.ID,
		liveCh:      make(chan *upstreamConn, 4),
		downstreams: make(map[string]*peer.Downstream),
		strip:       make(map[string]bool),
		leaveReq:    make(chan struct{}),
		done:        make(chan struct{}),
	}
	n.link.sig = sig
	n.private = cfg.Private || welcome.Private
	n.capacity.Store(int64(cfg.Capacity))
	n.setSourceKey(welcome.SourceKey)
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
	n.capacity.Store(int64(capacity))
	return n.send(&protocol.Message{Type: protocol.TypeCapacity, Capacity: capacity})
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
	n.link.mu.Lock()
	abort(n.link.sig.conn)
	n.link.mu.Unlock()
	n.wg.Wait()
}

func (n *Node) stop(err error) {
	n.closeOnce.Do(func() {
		n.errMu.Lock()
		n.err = err
		n.errMu.Unlock()
		n.link.mu.Lock()
		n.link.sig.close()
		n.link.mu.Unlock()
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
	var sigIn <-chan *protocol.Message = n.link.sig.in
	for {
		var quietC <-chan time.Time
		if n.quietWake != nil {
			quietC = n.quietWake.C
		}
		select {
		case <-quietC:
			n.quietWake = nil
			n.watchdog()
		case m, ok := <-sigIn:
			if !ok {
				if n.beginResume() {
					sigIn = nil // until resumed (resume.go)
					continue
				}
				err := fmt.Errorf("%w: signaling ended: %v", ErrClosed, n.link.sig.err)
				if n.leaving {
					err = nil
				}
				n.stop(err)
				return
			}
			n.handle(m)
		case r := <-n.resumed:
			if r.err != nil {
				n.log.Warn("resume failed", "err", r.err)
				n.stop(r.err)
				return
			}
			sigIn = n.adoptResumed(r)
		case uc := <-n.liveCh:
			n.onLive(uc)
		case <-watch.C:
			n.watchdog()
		case <-stats.C:
			n.sendStats()
		case <-leaveReq:
			leaveReq = nil
			n.leaving = true
			if sigIn == nil {
				n.stop(nil) // resuming: nobody to tell; the server's grace period ends its place
				return
			}
			n.sendStats() // the last word on what this node received and relayed
			_ = n.send(&protocol.Message{Type: protocol.TypeLeave})
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
	n.onSigning(m)
	n.noteStrip(m)
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
	case protocol.TypeQuiet:
		if n.cur != nil && n.cur.parent == m.Peer {
			if m.Resumed {
				n.cur.quiet = time.Time{} // back: the stall timeout again
			} else {
				n.cur.quiet = time.Now()
				n.watchdog()
			}
		}
	case protocol.TypeSignal:
		n.route(m)
	case protocol.TypeOffline:
		n.setOffline(m.Reason)
	case protocol.TypeResume:
		n.resumeToken = m.Resume // a renewed token
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
		_ = n.send(&protocol.Message{Type: protocol.TypeSignal, Peer: to, Sig: &s})
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
	if errors.Is(err, peer.ErrOtherLink) {
		n.log.Debug("signal of a link replaced since; dropped", "peer", m.Peer, "kind", m.Sig.Kind)
		return
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
	s.Uplink = n.uplink.measure(time.Now(), n.relayed.Load(), n.downstreams)
	_ = n.send(&protocol.Message{Type: protocol.TypeStats, Stats: &s})
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
	n.verificationStats(s)
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
