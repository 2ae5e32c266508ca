package peer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"canopy/mesh/protocol"
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// conn is what Downstream and Upstream share: signaling order, candidate
// queues and connection state turned from pion callbacks into channels.
type conn struct {
	pc     *webrtc.PeerConnection
	send   func(protocol.Signal)
	logger *slog.Logger

	// sigMu orders outgoing signals: the description first, then the local
	// candidates pion gathered meanwhile, then the rest as they come.
	sigMu    sync.Mutex
	descSent bool
	early    []webrtc.ICECandidateInit
	closing  atomic.Bool
	// link names this connection in its signals (protocol.Signal.Link):
	// the offerer's is set when it is made, the answerer's when it applies
	// the offer; 0 until then.
	link atomic.Uint32

	// remoteMu queues remote candidates until a remote description is set;
	// pion rejects candidates before it. remoteCount bounds what one
	// neighbour may hand this connection, queued or added, in signals and
	// in its description: protocol.MaxEdgeCandidates. A candidate counts
	// once however often it is repeated (a bundled description lists it in
	// every m-section): remoteSeen holds the ones counted.
	remoteMu      sync.Mutex
	remoteSet     bool
	pendingRemote []pendingCandidate
	remoteCount   int
	remoteSeen    map[string]bool // candidate → allowed by the filter
	// filter, if set, decides which remote candidates ICE may check
	// (Config.RemoteCandidateFilter).
	filter func(netip.Addr, int) bool

	connectedOnce, doneOnce sync.Once
	connected, done         chan struct{}
	failed                  atomic.Bool
}

// pendingCandidate is a remote candidate that came before the remote
// description, with the link it named.
type pendingCandidate struct {
	init webrtc.ICECandidateInit
	link uint32
}

// newLinkID is a link id for a connection this side offers: random, never 0.
func newLinkID() uint32 {
	for {
		if l := mrand.Uint32(); l != 0 {
			return l
		}
	}
}

// ofLink reports whether a signal naming link belongs to this connection:
// it names none, or this connection has none yet, or the same.
func (c *conn) ofLink(link uint32) bool {
	own := c.link.Load()
	return link == 0 || own == 0 || link == own
}

func newConn(pc *webrtc.PeerConnection, send func(protocol.Signal), logger *slog.Logger) *conn {
	c := &conn{
		pc: pc, send: send, logger: logger,
		connected: make(chan struct{}),
		done:      make(chan struct{}),
	}
	pc.OnICECandidate(c.onCandidate)
	pc.OnConnectionStateChange(c.onState)
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		if s == webrtc.ICEConnectionStateFailed {
			c.markDone(true)
		}
	})
	return c
}

func (c *conn) onState(s webrtc.PeerConnectionState) {
	c.logger.Debug("peer connection state", "state", s.String())
	switch s {
	case webrtc.PeerConnectionStateConnected:
		c.connectedOnce.Do(func() { close(c.connected) })
	case webrtc.PeerConnectionStateFailed:
		c.markDone(true)
	case webrtc.PeerConnectionStateClosed:
		c.markDone(false)
	}
}

func (c *conn) markDone(failed bool) {
	c.doneOnce.Do(func() {
		c.failed.Store(failed)
		close(c.done)
	})
}

func (c *conn) onCandidate(ice *webrtc.ICECandidate) {
	if ice == nil || c.closing.Load() {
		return // nil marks the end of gathering; trickle needs no marker
	}
	init := ice.ToJSON()
	c.sigMu.Lock()
	defer c.sigMu.Unlock()
	if !c.descSent {
		c.early = append(c.early, init)
		return
	}
	c.sendCandidate(init)
}

// sendCandidate is called with sigMu held.
func (c *conn) sendCandidate(init webrtc.ICECandidateInit) {
	raw, err := json.Marshal(init)
	if err != nil {
		c.logger.Warn("marshal candidate", "err", err)
		return
	}
	c.send(protocol.Signal{Kind: protocol.SignalCandidate, Candidate: raw, Link: c.link.Load()})
}

// sendDescription sends the local description, then any early candidates.
func (c *conn) sendDescription(kind protocol.SignalKind, sd *webrtc.SessionDescription) {
	c.sigMu.Lock()
	defer c.sigMu.Unlock()
	if c.closing.Load() {
		return
	}
	c.send(protocol.Signal{Kind: kind, SDP: sd.SDP, Link: c.link.Load()})
	c.descSent = true
	for _, init := range c.early {
		c.sendCandidate(init)
	}
	c.early = nil
}

// setRemote sets the remote description and adds the candidates that came
// before it. Candidates in the description count against the neighbour's
// bound and pass the filter like trickled ones.
func (c *conn) setRemote(sd webrtc.SessionDescription) error {
	c.remoteMu.Lock()
	defer c.remoteMu.Unlock()
	sd.SDP = c.admitSDPCandidates(sd.SDP)
	if err := c.pc.SetRemoteDescription(sd); err != nil {
		return fmt.Errorf("peer: set remote %s: %w", sd.Type, err)
	}
	c.remoteSet = true
	own := c.link.Load()
	for _, p := range c.pendingRemote {
		if p.link != 0 && own != 0 && p.link != own {
			continue // a candidate of the link this one replaced
		}
		if err := c.pc.AddICECandidate(p.init); err != nil {
			c.logger.Debug("add queued candidate", "err", err)
		}
	}
	c.pendingRemote = nil
	return nil
}

func (c *conn) addRemoteCandidate(raw json.RawMessage, link uint32) error {
	if !c.ofLink(link) {
		return ErrOtherLink
	}
	var init webrtc.ICECandidateInit
	if err := json.Unmarshal(raw, &init); err != nil {
		return fmt.Errorf("%w: %v", ErrBadCandidate, err)
	}
	c.remoteMu.Lock()
	defer c.remoteMu.Unlock()
	ok, err := c.admitCandidate(init.Candidate)
	if err != nil {
		return err
	}
	if !ok {
		return nil // the server's policy: ICE never checks this address
	}
	if !c.remoteSet {
		c.pendingRemote = append(c.pendingRemote, pendingCandidate{init, link})
		return nil
	}
	if err := c.pc.AddICECandidate(init); err != nil {
		return fmt.Errorf("%w: %v", ErrBadCandidate, err)
	}
	return nil
}

func (c *conn) waitConnected(ctx context.Context) error {
	select {
	case <-c.connected:
		return nil
	case <-c.done:
		select {
		case <-c.connected:
			return nil
		default:
		}
		if c.failed.Load() {
			return ErrFailed
		}
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// closePC closes the PeerConnection and waits for pion's goroutines.
func (c *conn) closePC() error {
	c.closing.Store(true)
	// Holding sigMu makes sure no send is in flight once Close returns.
	c.sigMu.Lock()
	c.early = nil
	c.sigMu.Unlock()
	err := c.pc.GracefulClose()
	c.markDone(false)
	return err
}

// allowed reports whether ICE may check a remote candidate (an a=candidate
// value, with or without its "candidate:" prefix). Without a filter every
// candidate is; with one, a candidate whose address is a name (an mDNS
// .local) is not, since its address cannot be checked: a peer that can
// reach this one still connects, through the peer-reflexive candidate its
// own checks create.
func (c *conn) allowed(candidate string) bool {
	if c.filter == nil || strings.TrimSpace(candidate) == "" {
		return true // an empty candidate marks the end of candidates
	}
	cand, err := ice.UnmarshalCandidate(strings.TrimSpace(candidate))
	if err != nil {
		return true // pion refuses it in turn, with its own error
	}
	addr, err := netip.ParseAddr(cand.Address())
	ok := err == nil && c.filter(addr.Unmap().WithZone(""), cand.Port())
	if !ok {
		c.logger.Debug("remote candidate refused by policy", "address", cand.Address(), "port", cand.Port(), "type", cand.Type().String())
	}
	return ok
}

// admitSDPCandidates drops the a=candidate lines of a remote description
// past the neighbour's bound or refused by the filter. Called with remoteMu
// held.
func (c *conn) admitSDPCandidates(sdp string) string {
	if !strings.Contains(sdp, "a=candidate:") {
		return sdp
	}
	lines := strings.SplitAfter(sdp, "\n")
	kept := lines[:0]
	for _, line := range lines {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "a=candidate:"); ok {
			if allowed, err := c.admitCandidate(v); err != nil || !allowed {
				continue
			}
		}
		kept = append(kept, line)
	}
	return strings.Join(kept, "")
}

// admitCandidate counts a remote candidate against the neighbour's bound,
// once per distinct candidate, and says whether ICE may check it. Called
// with remoteMu held.
func (c *conn) admitCandidate(cand string) (bool, error) {
	key := strings.TrimPrefix(strings.TrimSpace(cand), "candidate:")
	if allowed, seen := c.remoteSeen[key]; seen {
		return allowed, nil
	}
	if c.remoteCount >= protocol.MaxEdgeCandidates {
		return false, ErrTooManyCandidates
	}
	c.remoteCount++
	if c.remoteSeen == nil {
		c.remoteSeen = make(map[string]bool)
	}
	allowed := c.allowed(cand)
	c.remoteSeen[key] = allowed
	return allowed, nil
}
