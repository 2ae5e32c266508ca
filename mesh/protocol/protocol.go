// Package protocol defines Canopy's signaling messages: the JSON envelopes that
// peers and the server exchange over one WebSocket per peer, their validation
// and their size limits. It imports nothing of pion; static/js/protocol.js
// mirrors it for browsers.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"unicode/utf8"
)

// Version is the protocol version a hello carries; the server rejects others.
const Version = 1

// MaxMessageSize bounds one signaling message in bytes. An SDP offer with a
// few tracks and all their candidates is well under 16 KiB.
const MaxMessageSize = 64 * 1024

// Limits on individual fields.
const (
	MaxIDLength        = 64
	MaxSDPLength       = 48 * 1024
	MaxCandidateLength = 1024
	MaxTokenLength     = 4096
	MaxTracks          = 8
	MaxCapacity        = 1000
	MaxReasonLength    = 512
	// MaxEdgeCandidates bounds the ICE candidates one peer may send along
	// one tree edge (to one neighbour, for one connection), and what a peer
	// queues or adds from one neighbour. A real ICE agent needs a few dozen
	// at most: host candidates per interface and IP family, UDP and TCP
	// (a multi-homed host with VPN and container bridges has ~10
	// interfaces: ~40), one server-reflexive per STUN server and one
	// relayed per TURN server and transport. Past 64, candidates only add
	// connectivity checks, never a path.
	MaxEdgeCandidates = 64
	// MaxReclaimLength bounds a reclaim secret (the server's are 22 bytes).
	MaxReclaimLength = 64
	// MaxResumeLength bounds a resume token: the server's name the stream
	// and the peer (64 bytes each at most), a generation, an expiry and a
	// 43-byte MAC: under 200 bytes.
	MaxResumeLength = 256
	// MaxHeld bounds the standby children a resumed welcome lists: a
	// parent holds at most two standby links per child slot.
	MaxHeld = 2 * MaxCapacity
)

// Type names a message.
type Type string

// Message types. The direction is the usual one; the server rejects a type a
// peer may not send.
const (
	TypeHello   Type = "hello"   // peer → server: join a stream
	TypeWelcome Type = "welcome" // server → peer: your id, the stream's tracks
	TypeParent  Type = "parent"  // server → child: this peer is your parent now; expect its offer
	TypeAttach  Type = "attach"  // server → parent: offer to this new child
	TypeDetach  Type = "detach"  // server → parent or child: close the connection to this peer
	TypeSignal  Type = "signal"  // both ways: SDP or ICE candidate for a tree neighbour
	TypeLeave   Type = "leave"   // peer → server: leaving on purpose
	TypeOffline Type = "offline" // server → peer: the stream's source is gone
	TypeError   Type = "error"   // server → peer: a request failed
	TypeLive    Type = "live"    // peer → server: media from my current parent (Peer) is playing
	TypeStalled Type = "stalled" // peer → server: media from my parent (Peer) stopped; find me another
	TypeStats   Type = "stats"   // peer → server: periodic measurements
	// TypeCapacity, peer → server: feed this many children from now on (a
	// browser turning relaying on or off); children beyond it move first.
	TypeCapacity Type = "capacity"
	// TypeStandby, server → peer, prepares a hot standby link (see
	// README "Standby parents"). To a parent, with Peer: hold a standby
	// link for child Peer (offer to it as to a child, send no media until
	// promote). To a child, with Standby: that peer is your standby parent
	// from now on, expect its offer; with neither: you have none now.
	TypeStandby Type = "standby"
	// TypePromote makes a standby link the tree edge. Child → server, with
	// Peer its standby: my parent failed, I play from my standby now. Server
	// → parent, with Peer the child: start sending to it on its standby
	// link; it is your child now.
	TypePromote Type = "promote"
	// TypeResume, server → peer, carries the peer's resume token from now
	// on (Resume), replacing the one of its welcome before that expires.
	TypeResume Type = "resume"
	// TypeQuiet, server → child, says that the signaling of its parent
	// (Peer) dropped and the server keeps its place for the resume grace.
	// A parent whose process died looks the same until its media stops, so
	// the child gives that media a short window (quietSilence in mesh)
	// instead of the stall timeout before it switches to its standby.
	// With Resumed the parent's signaling is back: the window ends.
	TypeQuiet Type = "quiet"
	// TypePing, peer → server, asks whether the server is there; it
	// answers TypePong at once. A browser cannot send or see WebSocket
	// pings, and a stopped server (SIGSTOP, a VM pause) keeps its socket
	// open and silent: a tab pings when it has heard nothing for a while
	// and takes a longer silence for a dead server (static/js/client.js).
	TypePing Type = "ping"
	TypePong Type = "pong"
)

// Role is a peer's place in a stream.
type Role string

// Roles.
const (
	RoleSource Role = "source"
	RoleRelay  Role = "relay"
	RoleViewer Role = "viewer"
)

// Kind is what runs a peer.
type Kind string

// Kinds.
const (
	KindGo      Kind = "go"
	KindBrowser Kind = "browser"
)

// SignalKind names what a Signal carries.
type SignalKind string

// Signal kinds.
const (
	SignalOffer     SignalKind = "offer"
	SignalAnswer    SignalKind = "answer"
	SignalCandidate SignalKind = "candidate"
)

// Error codes carried by an error message.
const (
	CodeBadMessage   = "bad_message"   // not JSON, unknown type, a field out of bounds
	CodeTooLarge     = "too_large"     // over MaxMessageSize
	CodeNotFound     = "not_found"     // no such stream
	CodeStreamTaken  = "stream_taken"  // the stream already has a source
	CodeNotNeighbour = "not_neighbour" // a signal to a peer this one is not connected to
	CodeState        = "bad_state"     // e.g. a second hello, or a signal before hello
	CodeFull         = "full"          // no free slot in the tree
	CodeInternal     = "internal"      // the server failed; try again
	CodeUnauthorized = "unauthorized"  // a missing, invalid or insufficient token; the server closes
	// CodeRateLimited: a message over its budget (the connection's, the
	// edge's, or the receiving peer's) was dropped, not forwarded; the
	// connection stays up. Slow down.
	CodeRateLimited = "rate_limited"
	// CodeUnavailable: the server cannot serve the request as asked (private
	// mode on a server without TURN); asking again will not help. The
	// server closes.
	CodeUnavailable = "unavailable"
	// CodeResumeRefused: a hello's resume token was refused (forged,
	// expired, for another stream, stale, or its peer's place is gone or
	// still connected); nothing changed. The server closes; join afresh.
	CodeResumeRefused = "resume_refused"
	// CodeResumeLive: the token's peer still has a connection, as far as
	// the server knows; the server pings it now, and if it does not answer
	// (a client whose network changed leaves a half-open connection
	// behind) its place is suspended within seconds. Nothing changed; the
	// server closes. Retry the resume with back-off.
	CodeResumeLive = "resume_live"
)

// Track describes one media track of a stream, as the source declares it.
type Track struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`     // "video" or "audio"
	MimeType  string `json:"mimeType"` // e.g. "video/VP8", "video/H264", "audio/opus"
	ClockRate uint32 `json:"clockRate"`
	Channels  uint16 `json:"channels,omitempty"`
	Fmtp      string `json:"fmtp,omitempty"`
}

// Stats are a peer's measurements since it joined (counters) or over the
// last report interval (rates, delays). Zero means unknown.
type Stats struct {
	BytesReceived    uint64  `json:"bytesReceived,omitempty"`
	PacketsReceived  uint64  `json:"packetsReceived,omitempty"`
	PacketsLost      uint64  `json:"packetsLost,omitempty"`
	BytesRelayed     uint64  `json:"bytesRelayed,omitempty"`   // sent to children
	PacketsRelayed   uint64  `json:"packetsRelayed,omitempty"` // sent to children
	FramesDecoded    uint64  `json:"framesDecoded,omitempty"`
	JitterMs         float64 `json:"jitterMs,omitempty"`
	StallMs          float64 `json:"stallMs,omitempty"`          // total time without frames while it should have played
	DelayMs          float64 `json:"delayMs,omitempty"`          // source capture to this peer, where known (may be negative: see validate)
	FirstFrameMs     float64 `json:"firstFrameMs,omitempty"`     // join to first decoded frame
	BitrateKbps      float64 `json:"bitrateKbps,omitempty"`      // received, last interval
	RelayBitrateKbps float64 `json:"relayBitrateKbps,omitempty"` // sent to children, last interval
	Children         int     `json:"children,omitempty"`         // children it currently feeds
	// Uplink, from a relay with children: its upload as they see it.
	Uplink *Uplink `json:"uplink,omitempty"`
	// Signed frames (README "Signed frames"), from a viewer that checks
	// them: frames played after their signature verified and frames
	// refused, since it started (counters), and what the frames it plays
	// now are (Verification*; "" unknown).
	FramesVerified uint64 `json:"framesVerified,omitempty"`
	FramesRejected uint64 `json:"framesRejected,omitempty"`
	Verification   string `json:"verification,omitempty"`
}

// What a viewer's frames are, in Stats.Verification.
const (
	VerificationVerified   = "verified"   // every frame it plays checked against the source's key
	VerificationUnverified = "unverified" // played unchecked: an unsigned stream, a re-encoding hop above, no transform
	VerificationTampered   = "tampered"   // it refused a frame in the last few seconds
)

// MaxFrameCount bounds the frame counters of a stats report: 2^53 − 1,
// the largest integer a JavaScript number holds exactly (protocol.js
// checks the same; at 1000 frames per second it takes 285 000 years).
const MaxFrameCount = 1<<53 - 1

// ICEServer is a STUN or TURN server a peer may use.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Signal is an SDP description or an ICE candidate. Candidate is the JSON of
// an RTCIceCandidateInit, passed through untouched.
//
// Link names the connection a signal belongs to: the offerer picks it for
// each connection it makes and sends it with its offer and candidates, the
// answerer sends back the link of the offer it answered. Two peers that
// tear a link down and make a new one at once (a standby parent planned
// away and back) have signals of the old link still on their way; each
// side drops a signal of a link other than its connection's. 0 (a peer
// that names no link) matches any.
type Signal struct {
	Kind      SignalKind      `json:"kind"`
	SDP       string          `json:"sdp,omitempty"`
	Candidate json.RawMessage `json:"candidate,omitempty"`
	Link      uint32          `json:"link,omitempty"`
}

// Message is the one envelope every signaling message uses; Type says which
// fields matter.
type Message struct {
	Type Type `json:"type"`

	// hello
	Version  int     `json:"v,omitempty"`
	Role     Role    `json:"role,omitempty"`
	Kind     Kind    `json:"kind,omitempty"`
	Stream   string  `json:"stream,omitempty"`
	Capacity int     `json:"capacity,omitempty"`
	Token    string  `json:"token,omitempty"`
	Tracks   []Track `json:"tracks,omitempty"` // hello from a source; welcome
	// Private, on a viewer's hello, asks for private mode: the viewer
	// connects only through TURN relay candidates (ICE transport policy
	// relay), so no other peer learns its address, and it feeds no
	// children. On a welcome it says the viewer is in private mode, asked
	// for or by the server's policy (-privacy). See server/privacy.go.
	Private bool `json:"private,omitempty"`

	// Passthrough, on a browser's hello, says it relays the encoded frames it
	// receives unchanged (no decode, no encode), so its hop does not count
	// against the tree's re-encode bound (tree.Config.MaxBrowserHops).
	Passthrough bool `json:"passthrough,omitempty"`

	// NoVerify, on a browser's hello, says it cannot check or strip the
	// source's frame signatures (no receive transform, or its worker did
	// not start): on a signed stream the server places it only below a
	// parent whose frames carry none (README "Signed frames in the
	// browser"). A browser that cannot verify cannot pass frames through.
	NoVerify bool `json:"noVerify,omitempty"`
	// Strip, on attach, standby (to a parent, with Peer) and promote, tells
	// the parent to take the signature trailers off what it sends that
	// child: the server's relay node feeding a browser that cannot verify.
	Strip bool `json:"strip,omitempty"`

	// welcome
	ID         string      `json:"id,omitempty"`
	ICEServers []ICEServer `json:"iceServers,omitempty"`
	// Reclaim, in a welcome to a source, is a secret that proves, in the
	// hello of its next connection, that it is the same source: the server
	// keeps the stream's name for a source whose connection dropped, for a
	// grace period, and only that secret (or a publish token) takes it back.
	// A source sends the secret of its last welcome in its hello.
	Reclaim string `json:"reclaim,omitempty"`
	// Resume, in a welcome (and a resume message), is the token that gets
	// the peer its place back when its signaling connection drops: a hello
	// carrying it within the grace period (Grace) resumes the peer with its
	// old id, parent and children, on any server of the stream.
	Resume string `json:"resume,omitempty"`
	// Grace, in a welcome, is how long in milliseconds the server keeps a
	// dropped peer's place for its resume; 0: it does not.
	Grace int `json:"grace,omitempty"`
	// Resumed, in a welcome, says the hello's resume token was accepted:
	// the peer has its old id and place, which Peer (parent), Depth,
	// Standby, Children and Held describe as they are now. The peer makes
	// its connections match (see README "Resume"). In a quiet, it says the
	// parent's signaling is back.
	Resumed  bool     `json:"resumed,omitempty"`
	Children []string `json:"children,omitempty"`
	Held     []string `json:"held,omitempty"`

	// parent, attach, detach, signal: the other peer. A peer sends a signal
	// with Peer set to its neighbour; the server rewrites it to the sender.
	Peer  string  `json:"peer,omitempty"`
	Depth int     `json:"depth,omitempty"`
	Sig   *Signal `json:"signal,omitempty"`
	// Standby, on parent, is the peer this one would be given if its new
	// parent failed, so it can recover without waiting for placement; on
	// standby, to a child, the standby parent it should hold a link to.
	Standby string `json:"standby,omitempty"`

	// stats
	Stats *Stats `json:"stats,omitempty"`

	// Source-signed frames (sign.go): SignKey on a source's hello,
	// SourceKey on welcome, parent and sourceKey, Verify on parent,
	// Evidence on tampered.
	SignKey   string    `json:"signKey,omitempty"`
	SourceKey string    `json:"sourceKey,omitempty"`
	Verify    *bool     `json:"verify,omitempty"`
	Evidence  *Evidence `json:"evidence,omitempty"`

	// error, leave, offline, detach
	Code   string `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Errors returned by Decode and Validate.
var (
	// ErrTooLarge means the message exceeds MaxMessageSize.
	ErrTooLarge = errors.New("protocol: message too large")
	// ErrMalformed means the message is not a JSON object of the envelope's shape.
	ErrMalformed = errors.New("protocol: malformed message")
	// ErrUnknownType means the type field names no message.
	ErrUnknownType = errors.New("protocol: unknown message type")
	// ErrInvalid means a field is missing or out of bounds.
	ErrInvalid = errors.New("protocol: invalid field")
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidID reports whether s may name a stream or a peer: 1–64 of [A-Za-z0-9_-].
func ValidID(s string) bool { return idPattern.MatchString(s) }

// Decode parses and validates one message.
func Decode(data []byte) (*Message, error) {
	if len(data) > MaxMessageSize {
		return nil, ErrTooLarge
	}
	var m Message
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	// More() misses a stray '}' or ']'; only EOF means nothing follows.
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Encode validates and marshals a message.
func Encode(m *Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	// No HTML escaping: it would grow '<', '>' and '&' sixfold, so a
	// message the server accepted could exceed the limits once forwarded.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	data := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(data) > MaxMessageSize {
		return nil, ErrTooLarge
	}
	return data, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Validate checks the fields that the message's type needs.
func (m *Message) Validate() error {
	if len(m.Reason) > MaxReasonLength {
		return invalid("reason longer than %d", MaxReasonLength)
	}
	if err := m.validateSigning(); err != nil {
		return err
	}
	switch m.Type {
	case TypeHello:
		return m.validateHello()
	case TypeWelcome:
		if !ValidID(m.ID) || !ValidID(m.Stream) {
			return invalid("welcome needs id and stream")
		}
		if len(m.Reclaim) > MaxReclaimLength {
			return invalid("reclaim longer than %d", MaxReclaimLength)
		}
		if err := m.validatePlace(); err != nil {
			return err
		}
		return validateTracks(m.Tracks, false)
	case TypeParent, TypeAttach, TypeDetach:
		if !ValidID(m.Peer) {
			return invalid("%s needs a peer id", m.Type)
		}
		if m.Standby != "" && !ValidID(m.Standby) {
			return invalid("bad standby id")
		}
		if m.Depth < 0 || m.Depth > 1<<16 {
			return invalid("depth out of range")
		}
		return nil
	case TypeSignal:
		if !ValidID(m.Peer) {
			return invalid("signal needs a peer id")
		}
		return m.Sig.validate()
	case TypeLeave, TypeOffline, TypePing, TypePong:
		return nil
	case TypeLive, TypeStalled:
		if m.Peer != "" && !ValidID(m.Peer) {
			return invalid("%s: bad peer id", m.Type)
		}
		return nil
	case TypeCapacity:
		if m.Capacity < 0 || m.Capacity > MaxCapacity {
			return invalid("capacity must be 0-%d", MaxCapacity)
		}
		return nil
	case TypeStandby:
		switch {
		case m.Peer != "" && m.Standby != "":
			return invalid("standby names a child (peer) or a parent (standby), not both")
		case m.Peer != "" && !ValidID(m.Peer), m.Standby != "" && !ValidID(m.Standby):
			return invalid("standby: bad peer id")
		}
		return nil
	case TypePromote:
		if !ValidID(m.Peer) {
			return invalid("promote needs a peer id")
		}
		return nil
	case TypeQuiet:
		if !ValidID(m.Peer) {
			return invalid("quiet needs a peer id")
		}
		return nil
	case TypeResume:
		if m.Resume == "" {
			return invalid("resume needs a token")
		}
		return validResume(m.Resume)
	case TypeTampered:
		return m.validateTampered()
	case TypeSourceKey:
		return nil
	case TypeStats:
		if m.Stats == nil {
			return invalid("stats needs a stats body")
		}
		return m.Stats.validate()
	case TypeError:
		if m.Code == "" {
			return invalid("error needs a code")
		}
		return nil
	case "":
		return fmt.Errorf("%w: missing type", ErrMalformed)
	default:
		return fmt.Errorf("%w: %q", ErrUnknownType, truncate(string(m.Type), 32))
	}
}

func (m *Message) validateHello() error {
	if m.Version != Version {
		return invalid("unsupported protocol version %d (want %d)", m.Version, Version)
	}
	if !ValidID(m.Stream) {
		return invalid("stream must be 1-64 of [A-Za-z0-9_-]")
	}
	switch m.Role {
	case RoleSource, RoleRelay, RoleViewer:
	default:
		return invalid("unknown role %q", truncate(string(m.Role), 32))
	}
	switch m.Kind {
	case KindGo, KindBrowser:
	default:
		return invalid("unknown kind %q", truncate(string(m.Kind), 32))
	}
	if m.Capacity < 0 || m.Capacity > MaxCapacity {
		return invalid("capacity must be 0-%d", MaxCapacity)
	}
	if len(m.Token) > MaxTokenLength {
		return invalid("token longer than %d", MaxTokenLength)
	}
	if len(m.Reclaim) > MaxReclaimLength {
		return invalid("reclaim longer than %d", MaxReclaimLength)
	}
	if err := validResume(m.Resume); err != nil {
		return err
	}
	if m.Private && m.Role != RoleViewer {
		return invalid("only a viewer watches in private mode")
	}
	if m.Passthrough && (m.Kind != KindBrowser || m.Role == RoleSource) {
		return invalid("only a relaying browser declares passthrough")
	}
	if m.NoVerify && (m.Kind != KindBrowser || m.Role == RoleSource || m.Passthrough) {
		return invalid("only a browser that relays by re-encoding, or not at all, declares noVerify")
	}
	if m.Role == RoleSource {
		return validateTracks(m.Tracks, true)
	}
	if len(m.Tracks) != 0 {
		return invalid("only a source declares tracks")
	}
	return nil
}

var resumePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]*$`)

// validResume checks a resume token's bounds; "" is none. Only the server
// that made it can tell whether it is genuine.
func validResume(tok string) error {
	if len(tok) > MaxResumeLength || !resumePattern.MatchString(tok) {
		return invalid("resume token must be at most %d of [A-Za-z0-9_.-]", MaxResumeLength)
	}
	return nil
}

// validatePlace checks a welcome's resume fields: the token, the grace,
// and, on a resumed welcome, the place it describes.
func (m *Message) validatePlace() error {
	if err := validResume(m.Resume); err != nil {
		return err
	}
	if m.Grace < 0 || m.Grace > 24*3600*1000 {
		return invalid("grace out of range")
	}
	if !m.Resumed {
		if m.Peer != "" || m.Standby != "" || m.Depth != 0 || len(m.Children) != 0 || len(m.Held) != 0 {
			return invalid("only a resumed welcome describes a place")
		}
		return nil
	}
	if (m.Peer != "" && !ValidID(m.Peer)) || (m.Standby != "" && !ValidID(m.Standby)) {
		return invalid("resumed welcome: bad parent or standby id")
	}
	if m.Depth < 0 || m.Depth > 1<<16 {
		return invalid("depth out of range")
	}
	if len(m.Children) > MaxCapacity || len(m.Held) > MaxHeld {
		return invalid("resumed welcome: at most %d children and %d standby children", MaxCapacity, MaxHeld)
	}
	for _, ids := range [][]string{m.Children, m.Held} {
		for _, id := range ids {
			if !ValidID(id) {
				return invalid("resumed welcome: bad child id")
			}
		}
	}
	return nil
}

func validateTracks(tracks []Track, needOne bool) error {
	if needOne && len(tracks) == 0 {
		return invalid("a source declares at least one track")
	}
	if len(tracks) > MaxTracks {
		return invalid("at most %d tracks", MaxTracks)
	}
	seen := make(map[string]bool, len(tracks))
	for _, t := range tracks {
		if !ValidID(t.ID) || seen[t.ID] {
			return invalid("track ids must be valid and unique")
		}
		seen[t.ID] = true
		if t.Kind != "video" && t.Kind != "audio" {
			return invalid("track kind must be video or audio")
		}
		if len(t.MimeType) == 0 || len(t.MimeType) > 64 || len(t.Fmtp) > 256 {
			return invalid("track codec out of bounds")
		}
		if t.ClockRate == 0 {
			return invalid("track needs a clock rate")
		}
	}
	return nil
}

func (s *Signal) validate() error {
	if s == nil {
		return invalid("signal needs a signal body")
	}
	switch s.Kind {
	case SignalOffer, SignalAnswer:
		if s.SDP == "" || len(s.SDP) > MaxSDPLength {
			return invalid("sdp must be 1-%d bytes", MaxSDPLength)
		}
		if len(s.Candidate) != 0 {
			return invalid("an sdp signal carries no candidate")
		}
	case SignalCandidate:
		if len(s.Candidate) == 0 || len(s.Candidate) > MaxCandidateLength {
			return invalid("candidate must be 1-%d bytes", MaxCandidateLength)
		}
		if s.SDP != "" {
			return invalid("a candidate signal carries no sdp")
		}
	default:
		return invalid("unknown signal kind %q", truncate(string(s.Kind), 32))
	}
	return nil
}

func (s *Stats) validate() error {
	for _, v := range []float64{s.JitterMs, s.StallMs, s.FirstFrameMs, s.BitrateKbps, s.RelayBitrateKbps} {
		if v < 0 || v > 1e12 || v != v {
			return invalid("stats: a measure is out of range")
		}
	}
	// A delay may come out negative without any fault of the peer: the
	// capture stamp is its parent's (abs-capture-time), from a skewed
	// clock or a hostile parent. The server drops that figure, not the
	// report.
	if d := s.DelayMs; d < -1e12 || d > 1e12 || d != d {
		return invalid("stats: delay out of range")
	}
	if s.Children < 0 || s.Children > MaxCapacity {
		return invalid("stats: children out of range")
	}
	if s.FramesVerified > MaxFrameCount || s.FramesRejected > MaxFrameCount {
		return invalid("stats: a frame count is out of range")
	}
	switch s.Verification {
	case "", VerificationVerified, VerificationUnverified, VerificationTampered:
	default:
		return invalid("stats: unknown verification %q", truncate(s.Verification, 32))
	}
	if s.Uplink != nil {
		return s.Uplink.validate()
	}
	return nil
}

// truncate cuts s to at most n bytes at a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Errorf builds an error message with a code.
func Errorf(code, format string, args ...any) *Message {
	return &Message{Type: TypeError, Code: code, Reason: truncate(fmt.Sprintf(format, args...), MaxReasonLength-4)}
}
