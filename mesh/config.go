package mesh

import (
	"crypto/ed25519"
	"log/slog"
	"net/netip"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"

	"canopy/mesh/media"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// Config describes the node to start.
type Config struct {
	// Server is the Canopy server's address, e.g. http://localhost:8080,
	// or several separated by commas: tried in turn when the node dials,
	// and when it resumes after its connection dropped (the one it was on
	// first).
	Server string
	// Transport, if set, carries the node's signaling instead of a
	// WebSocket to Server's /ws: how a server hosts nodes of its own over
	// an in-process connection to its coordinator. The node closes it.
	Transport Transport
	// Stream is the stream to publish or join.
	Stream string
	// Role is source, relay or viewer (default viewer).
	Role protocol.Role
	// Capacity is how many children this node may feed; the server clamps it.
	Capacity int
	// Token is a publishing or viewing credential, if the stream needs one.
	Token string
	// Tracks are what a source publishes (see TracksFor).
	Tracks []protocol.Track
	// Reclaim, on a source, carries its claim to the stream name from one
	// Dial to the next, so a source that reconnects after a drop gets its
	// stream back and nobody can take it in the gap. Share one across a
	// source's reconnects; nil makes each Dial a new claim.
	Reclaim *Reclaim
	// LoopbackOnly restricts ICE to loopback; for tests.
	LoopbackOnly bool
	// UDPMux, if set, carries all of the node's WebRTC traffic on one UDP
	// port (see peer.Config.UDPMux).
	UDPMux ice.UDPMux
	// PublicIPs are advertised instead of local addresses (1:1 NAT).
	PublicIPs []string
	// RemoteCandidateFilter, if set, drops the neighbours' ICE candidates
	// it refuses (see peer.Config.RemoteCandidateFilter); the server's own
	// peers use it.
	RemoteCandidateFilter func(addr netip.Addr, port int) bool
	// LocalPeer, if set, says which tree neighbours live in this same
	// process (the server's hosted nodes: a WHEP relay under a WHIP or
	// demo source). Links to them run on loopback sockets of their own,
	// without UDPMux (two agents on one mux socket cannot reach each
	// other: the mux routes by remote address, and both are the mux) and
	// without RemoteCandidateFilter (the neighbour is the server itself).
	LocalPeer func(id string) bool
	// Private, on a viewer, watches in private mode: every connection uses
	// TURN relay candidates only, so no other peer learns this host's
	// address, and the node feeds no children. The server must hand out
	// TURN (it refuses the hello otherwise); a server whose -privacy
	// covers the stream makes a viewer private even without it.
	Private bool
	// Forwarder tunes the GOP cache and burst for this node's children;
	// the zero value is the default (4 MiB cache, 50 Mbps burst).
	Forwarder peer.ForwarderOptions
	// Logger receives the node's and pion's logs; nil means slog.Default().
	Logger *slog.Logger
	// OnPacket, if set, sees every packet this node receives, once each,
	// serialized per track. p is reused after it returns.
	OnPacket func(t protocol.Track, p *rtp.Packet)
	// OnEvent, if set, is told about changes of parent and of stream state.
	// It runs on the node's event goroutine and must not block.
	OnEvent func(Event)
	// OnKeyframeRequest, if set on a source, is called when children ask for
	// a keyframe (merged and throttled).
	OnKeyframeRequest func(trackID string)
	// SignKey, on a source, signs every frame Play and WriteSourceRTP
	// (PlayRTP) send, and its public key goes to every viewer through the
	// server (see framesig, README "Signed frames"). nil: frames go
	// unsigned, as they do for packets a caller writes with WriteRTP.
	// Give each Dial a new key (framesig.GenerateKey): a node's counters
	// start afresh, and viewers take lower counters under the same key for
	// replays.
	SignKey ed25519.PrivateKey
	// OnFrame, if set, receives every complete frame of every track, in
	// order per track, checked against the stream's key when the stream is
	// signed and the path carries signatures, and without its signature: a
	// frame that fails is not given (see FrameStats). It runs on the
	// track's receive goroutine and must not block; f.Data is the caller's.
	OnFrame func(t protocol.Track, f media.Frame)
	// OnStats, if set, adds the caller's measures (frames decoded, time to
	// first frame…) to each stats report the node sends.
	OnStats func(*protocol.Stats)
}

// EventKind names an Event.
type EventKind string

// Event kinds.
const (
	EventParent  EventKind = "parent"  // a new parent was assigned
	EventLive    EventKind = "live"    // media from the current parent arrives
	EventStalled EventKind = "stalled" // media from the parent stopped; the server was told
	EventOffline EventKind = "offline" // the stream's source is gone
	EventError   EventKind = "error"   // the server reported an error
	// EventStandby: the standby parent changed (Standby; "" for none).
	EventStandby EventKind = "standby"
	// EventResuming: the signaling connection dropped; the node keeps its
	// connections and dials again to resume its place (Reason says why).
	EventResuming EventKind = "resuming"
	// EventResumed: the node has its place back on a new connection (Peer,
	// Depth, Standby: where it stands now).
	EventResumed EventKind = "resumed"
)

// Event is a change a node reports through Config.OnEvent.
type Event struct {
	Kind    EventKind
	Peer    string // the parent, for parent, live and stalled
	Standby string // for parent: who would take over if that parent failed; for standby: the standby parent
	// Hot, for parent: the node switched to a connection that was already
	// up (its standby link), so nothing was negotiated.
	Hot    bool
	Depth  int
	Code   string
	Reason string
}
