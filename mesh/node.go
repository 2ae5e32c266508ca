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

// ServerError is an error message from the server, such as a stream that
// does not exist.
type ServerError struct {
	Code   string
	Reason string
}

func (e *ServerError) Error() string { return fmt.Sprintf("server: %s: %s", e.Code, e.Reason) }

// Config describes the node to start.
type Config struct {
	// Server is the Canopy server's address, e.g. http://localhost:8080.
	Server string
	// Stream is the stream to publish or join.
	Stream string
	// Role is source, relay or viewer (default viewer).
	Role protocol.Role
	// Capacity is how many children this node may feed; the server clamps it.
	Capacity int
	// Token is a publishing or viewing credential, if the stream needs one.
	Token string
	// Tracks are what a source publishes (see TrackFor).
	Tracks []protocol.Track
	// LoopbackOnly restricts ICE to loopback; for tests.
	LoopbackOnly bool
	// Logger receives the node's and pion's logs; nil means slog.Default().
	Logger *slog.Logger
	// OnPacket, if set, sees every packet this node receives from its parent,
	// from one goroutine per track. p is reused after it returns.
	OnPacket func(t protocol.Track, p *rtp.Packet)
	// OnEvent, if set, is told about changes of parent and of stream state.
	// It runs on the node's event goroutine and must not block.
	OnEvent func(Event)
	// OnKeyframeRequest, if set on a source, is called when children ask for
	// a keyframe (merged and throttled).
	OnKeyframeRequest func(trackID string)
}

// EventKind names an Event.
type EventKind string

// Event kinds.
const (
	EventParent  EventKind = "parent"  // a new parent was assigned
	EventOffline EventKind = "offline" // the stream's source is gone
	EventError   EventKind = "error"   // the server reported an error
)

// Event is a change a node reports through Config.OnEvent.
type Event struct {
	Kind   EventKind
	Peer   string // parent id for EventParent
	Depth  int
	Code   string
	Reason string
}

// Node is one peer in a stream's tree.
type Node struct {
	cfg Config
	log *slog.Logger
	sig *signaling
	api *peer.API
	id  string
	// media is replaced as a whole (copy on write) when a returning source
	// brings a new track; readers load it without a lock.
	media atomic.Pointer[trackSet]
	depth atomic.Int64
	// children counts live downstream connections, for callers and tests.
	children atomic.Int64

	// Owned by the run goroutine.
	parentID    string
	parent      atomic.Pointer[string] // parentID, for other goroutines
	downstreams map[string]*peer.Downstream
	// upstream is written by the run goroutine only; keyframe requests read
	// it from others.
	upstream atomic.Pointer[peer.Upstream]

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
	sig, err := dialSignaling(ctx, cfg.Server)
	if err != nil {
		return nil, err
	}
	hello := &protocol.Message{
		Type: protocol.TypeHello, Version: protocol.Version, Role: cfg.Role, Kind: protocol.KindGo,
		Stream: cfg.Stream, Capacity: cfg.Capacity, Token: cfg.Token,
	}
	if cfg.Role == protocol.RoleSource {
		hello.Tracks = cfg.Tracks
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
	})
	if err != nil {
		sig.close()
		return nil, err
	}
	n := &Node{
		cfg:         cfg,
		log:         cfg.Logger.With("stream", cfg.Stream, "peer", welcome.ID, "role", cfg.Role),
		sig:         sig,
		api:         api,
		id:          welcome.ID,
		downstreams: make(map[string]*peer.Downstream),
		done:        make(chan struct{}),
	}
	n.setTracks(welcome.Tracks)
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

// trackSet is the stream's tracks, in the source's order, and their forwarders.
type trackSet struct {
	tracks []protocol.Track
	fwds   map[string]*peer.Forwarder
}

// setTracks creates one forwarder per track. A later welcome (the source
// came back) keeps the forwarders of tracks it already had, so children stay
// attached and see continuous sequence numbers.
func (n *Node) setTracks(tracks []protocol.Track) {
	old := n.media.Load()
	next := &trackSet{fwds: make(map[string]*peer.Forwarder)}
	if old != nil {
		next.tracks = append(next.tracks, old.tracks...)
		for id, f := range old.fwds {
			next.fwds[id] = f
		}
	}
	for _, t := range tracks {
		if _, ok := next.fwds[t.ID]; ok {
			continue
		}
		f := peer.NewForwarder(t, n.log)
		next.fwds[t.ID] = f
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

// Depth is the node's distance from the source (the source is 0).
func (n *Node) Depth() int { return int(n.depth.Load()) }

// Tracks are the stream's tracks.
func (n *Node) Tracks() []protocol.Track { return n.media.Load().tracks }

// Children is how many children this node currently feeds.
func (n *Node) Children() int { return int(n.children.Load()) }

// Parent is the id of the node's current parent ("" for a source or while
// it waits for one).
func (n *Node) Parent() string {
	if p := n.parent.Load(); p != nil {
		return *p
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
	f, ok := n.media.Load().fwds[trackID]
	if !ok {
		return ErrUnknownTrack
	}
	return f.WriteRTP(p)
}

// Close leaves the stream: it tells the server, closes every connection
// and waits for the node's goroutines.
func (n *Node) Close() error {
	n.stop(nil, true)
	n.wg.Wait()
	return nil
}

func (n *Node) stop(err error, leave bool) {
	n.closeOnce.Do(func() {
		n.errMu.Lock()
		n.err = err
		n.errMu.Unlock()
		if leave {
			_ = n.sig.send(&protocol.Message{Type: protocol.TypeLeave})
		}
		n.sig.close()
		close(n.done)
	})
}

// run handles the server's messages in order; it owns upstream and
// downstreams.
func (n *Node) run() {
	defer n.wg.Done()
	defer n.teardown()
	for {
		select {
		case m, ok := <-n.sig.in:
			if !ok {
				n.stop(fmt.Errorf("%w: signaling ended: %v", ErrClosed, n.sig.err), false)
				return
			}
			n.handle(m)
		case <-n.done:
			return
		}
	}
}

func (n *Node) teardown() {
	if up := n.upstream.Swap(nil); up != nil {
		_ = up.Close()
	}
	for id, d := range n.downstreams {
		_ = d.Close()
		delete(n.downstreams, id)
	}
	for _, f := range n.media.Load().fwds {
		f.Close()
	}
}

func (n *Node) handle(m *protocol.Message) {
	switch m.Type {
	case protocol.TypeWelcome:
		n.setTracks(m.Tracks)
	case protocol.TypeParent:
		n.setParent(m.Peer, m.Depth)
	case protocol.TypeAttach:
		n.attach(m.Peer)
	case protocol.TypeDetach:
		n.detach(m.Peer)
	case protocol.TypeSignal:
		n.route(m)
	case protocol.TypeOffline:
		n.emit(Event{Kind: EventOffline, Reason: m.Reason})
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

// setParent replaces the upstream connection. Forwarders and downstreams
// stay: children keep their connections while this node's parent changes.
func (n *Node) setParent(id string, depth int) {
	if old := n.upstream.Swap(nil); old != nil {
		_ = old.Close()
	}
	n.parentID = id
	n.parent.Store(&id)
	n.depth.Store(int64(depth))
	up, err := n.api.NewUpstream(id, n.Tracks(), n.sendSignal(id), n.receive)
	if err != nil {
		n.log.Error("upstream", "parent", id, "err", err)
		return
	}
	n.upstream.Store(up)
	n.log.Debug("new parent", "parent", id, "depth", depth)
	n.emit(Event{Kind: EventParent, Peer: id, Depth: depth})
}

// receive is the upstream sink: one call per packet per track.
func (n *Node) receive(t protocol.Track, p *rtp.Packet) {
	if f := n.media.Load().fwds[t.ID]; f != nil {
		_ = f.WriteRTP(p)
	}
	if n.cfg.OnPacket != nil {
		n.cfg.OnPacket(t, p)
	}
}

func (n *Node) attach(child string) {
	if old := n.downstreams[child]; old != nil {
		_ = old.Close()
	}
	ts := n.media.Load()
	fwds := make([]*peer.Forwarder, 0, len(ts.tracks))
	for _, t := range ts.tracks {
		fwds = append(fwds, ts.fwds[t.ID])
	}
	d, err := n.api.NewDownstream(child, fwds, n.sendSignal(child))
	if err != nil {
		n.log.Error("downstream", "child", child, "err", err)
		return
	}
	n.downstreams[child] = d
	n.children.Store(int64(len(n.downstreams)))
}

func (n *Node) detach(id string) {
	if d := n.downstreams[id]; d != nil {
		_ = d.Close()
		delete(n.downstreams, id)
		n.children.Store(int64(len(n.downstreams)))
		return
	}
	if id == n.parentID {
		if up := n.upstream.Swap(nil); up != nil {
			_ = up.Close()
		}
		n.parentID = ""
		n.parent.Store(nil)
	}
}

func (n *Node) route(m *protocol.Message) {
	var err error
	switch {
	case m.Peer == n.parentID && n.upstream.Load() != nil:
		err = n.upstream.Load().HandleSignal(*m.Sig)
	case n.downstreams[m.Peer] != nil:
		err = n.downstreams[m.Peer].HandleSignal(*m.Sig)
	default:
		return // a late signal for a connection already gone
	}
	if err != nil {
		n.log.Warn("signal", "peer", m.Peer, "kind", m.Sig.Kind, "err", err)
	}
}

// relayKeyframeRequests passes children's merged keyframe requests to the
// parent, or to the source's producer.
func (n *Node) relayKeyframeRequests(trackID string, f *peer.Forwarder) {
	defer n.wg.Done()
	for {
		select {
		case <-f.KeyframeRequests():
			if n.cfg.Role == protocol.RoleSource {
				if n.cfg.OnKeyframeRequest != nil {
					n.cfg.OnKeyframeRequest(trackID)
				}
				continue
			}
			n.requestKeyframe()
		case <-n.done:
			return
		}
	}
}

// requestKeyframe asks the parent for a keyframe.
func (n *Node) requestKeyframe() {
	// The run goroutine may be replacing upstream; a PLI lost in that window
	// is repeated by the child's next request.
	if up := n.upstream.Load(); up != nil {
		up.RequestKeyframe()
	}
}
