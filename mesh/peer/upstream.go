package peer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"canopy/mesh/protocol"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Upstream is a child's receive-only PeerConnection to its parent; it answers
// the parent's offer and hands every received packet to a sink.
type Upstream struct {
	*conn
	parentID string
	tracks   map[string]protocol.Track
	sink     func(protocol.Track, *rtp.Packet)

	mu         sync.Mutex
	closed     bool
	videoSSRCs []uint32
	remotes    []*webrtc.TrackRemote // whose read loops Close ends
	wg         sync.WaitGroup        // track read loops

	closeOnce sync.Once
	closeErr  error
}

// NewUpstream creates the PeerConnection to a parent. tracks maps the remote
// track ids (the parent's protocol.Track.ID) back to protocol.Track. sink is
// called from one goroutine per remote track with a packet that is reused
// after sink returns. send must not call back into this Upstream
// synchronously.
func (a *API) NewUpstream(parentID string, tracks []protocol.Track, send func(protocol.Signal), sink func(t protocol.Track, p *rtp.Packet)) (*Upstream, error) {
	pc, err := a.newPeerConnection()
	if err != nil {
		return nil, fmt.Errorf("peer: new peer connection: %w", err)
	}
	u := &Upstream{
		conn:     a.newConn(pc, send, a.logger.With("parent", parentID)),
		parentID: parentID,
		tracks:   make(map[string]protocol.Track, len(tracks)),
		sink:     sink,
	}
	for _, t := range tracks {
		u.tracks[t.ID] = t
	}
	pc.OnTrack(u.onTrack)
	return u, nil
}

// onTrack runs on its own goroutine (pion starts one per call) and becomes
// the track's read loop.
func (u *Upstream) onTrack(tr *webrtc.TrackRemote, rcv *webrtc.RTPReceiver) {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return
	}
	u.wg.Add(2)
	go u.drainRTCP(rcv)
	u.remotes = append(u.remotes, tr)
	if tr.Kind() == webrtc.RTPCodecTypeVideo {
		u.videoSSRCs = append(u.videoSSRCs, uint32(tr.SSRC()))
	}
	u.mu.Unlock()
	defer u.wg.Done()

	t, ok := u.tracks[tr.ID()]
	if !ok {
		t, ok = u.onlyOfKind(tr.Kind().String())
	}
	if !ok {
		// An id the stream did not declare: describe it from the codec so the
		// media still flows, and say so.
		c := tr.Codec()
		t = protocol.Track{ID: tr.ID(), Kind: tr.Kind().String(), MimeType: c.MimeType, ClockRate: c.ClockRate, Channels: c.Channels, Fmtp: c.SDPFmtpLine}
		u.logger.Warn("remote track not declared by the stream", "track", tr.ID())
	}
	u.readLoop(t, tr, captureExtID(rcv.GetParameters().HeaderExtensions))
}

// onlyOfKind is the stream's one declared track of kind, when it has
// exactly one. A parent that relays encoded frames from a browser sends
// them on track-less senders, whose ids Chromium makes up: their media is
// the stream's track of that kind all the same. Taken as undeclared, a Go
// child's packets went to no forwarder and nothing decoded: it reported a
// Chromium parent stalled after 1.5 s, and the parent was barred for
// never delivering.
func (u *Upstream) onlyOfKind(kind string) (protocol.Track, bool) {
	var found protocol.Track
	n := 0
	for _, t := range u.tracks {
		if t.Kind == kind {
			found = t
			n++
		}
	}
	return found, n == 1
}

// drainRTCP reads the parent's RTCP for one track: reading is what passes
// its sender reports through pion's receiver-report interceptor, whose
// reports then carry LSR and DLSR, from which the parent measures its
// round trip to this child (linkstats.go). Nothing else in it is used.
func (u *Upstream) drainRTCP(rcv *webrtc.RTPReceiver) {
	defer u.wg.Done()
	buf := make([]byte, 1500)
	for {
		if _, _, err := rcv.Read(buf); err != nil {
			return
		}
	}
}

// readLoop reads into one buffer and unmarshals into one packet: no
// allocation per packet on this side of pion. The abs-capture-time
// extension is renamed from the id this hop negotiated (captureID) to
// AbsCaptureTimeID, which the sink and the Forwarder expect.
func (u *Upstream) readLoop(t protocol.Track, tr *webrtc.TrackRemote, captureID uint8) {
	defer func() {
		// A panicking sink must not take the process down with this peer.
		if r := recover(); r != nil {
			u.logger.Error("sink panicked; track dropped", "track", t.ID, "panic", r)
		}
	}()
	buf := make([]byte, 1500)
	var p rtp.Packet
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			if !isClosedErr(err) {
				u.logger.Debug("track read ended", "track", t.ID, "err", err)
			}
			return
		}
		if err := p.Unmarshal(buf[:n]); err != nil {
			continue
		}
		renameExtension(&p.Header, captureID, AbsCaptureTimeID)
		u.sink(t, &p)
	}
}

// HandleSignal applies the parent's offer (answering it through send) or one
// of its ICE candidates; candidates that arrive before the offer are queued.
func (u *Upstream) HandleSignal(s protocol.Signal) error {
	switch s.Kind {
	case protocol.SignalOffer:
		if err := checkOffer(s.SDP, len(u.tracks)); err != nil {
			return err
		}
		if u.HasRemote() {
			if u.ofLink(s.Link) {
				return nil // the offer applied already, repeated
			}
			return ErrOtherLink // a new connection's: see Reoffered
		}
		u.link.Store(s.Link)
		if err := u.setRemote(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: s.SDP}); err != nil {
			return err
		}
		answer, err := u.pc.CreateAnswer(nil)
		if err != nil {
			return fmt.Errorf("peer: create answer: %w", err)
		}
		if err := u.pc.SetLocalDescription(answer); err != nil {
			return fmt.Errorf("peer: set local answer: %w", err)
		}
		u.sendDescription(protocol.SignalAnswer, u.pc.LocalDescription())
		return nil
	case protocol.SignalCandidate:
		return u.addRemoteCandidate(s.Candidate, s.Link)
	default:
		return fmt.Errorf("%w: %s to an upstream", ErrUnexpectedSignal, s.Kind)
	}
}

// Reoffered reports whether s is an offer for a new connection from this
// upstream's parent: one came and was applied already, and s names
// another link (or none: a parent that names no links makes a new
// connection whenever it offers again). The node then replaces the
// upstream.
func (u *Upstream) Reoffered(s protocol.Signal) bool {
	if s.Kind != protocol.SignalOffer || !u.HasRemote() {
		return false
	}
	own := u.link.Load()
	return s.Link == 0 || own == 0 || s.Link != own
}

// RequestKeyframe sends a PLI for every video track being received; it does
// nothing before the first video track arrives.
func (u *Upstream) RequestKeyframe() {
	u.mu.Lock()
	ssrcs := u.videoSSRCs
	u.mu.Unlock()
	if len(ssrcs) == 0 {
		return
	}
	pkts := make([]rtcp.Packet, 0, len(ssrcs))
	for _, s := range ssrcs {
		pkts = append(pkts, &rtcp.PictureLossIndication{MediaSSRC: s})
	}
	if err := u.pc.WriteRTCP(pkts); err != nil && !isClosedErr(err) {
		u.logger.Debug("write PLI", "err", err)
	}
}

// ParentID returns the parent this connection receives from.
func (u *Upstream) ParentID() string { return u.parentID }

// WaitConnected waits until the PeerConnection is connected, fails or closes,
// or ctx ends.
func (u *Upstream) WaitConnected(ctx context.Context) error { return u.waitConnected(ctx) }

// Done is closed when the PeerConnection fails or closes.
func (u *Upstream) Done() <-chan struct{} { return u.done }

// readLoopWait bounds how long Close waits for the track read loops once
// the PeerConnection is closed and their reads have been given a deadline:
// ordinarily they end at once; a read wedged inside pion (two receivers
// sharing an SRTP stream) must not hold up the node's run loop, and with
// it every child and a SIGTERM.
const readLoopWait = 2 * time.Second

// Close closes the PeerConnection and waits, for at most readLoopWait, for
// the track read loops; one that does not end is abandoned and logged.
// Idempotent.
func (u *Upstream) Close() error {
	u.closeOnce.Do(func() {
		u.mu.Lock()
		u.closed = true
		remotes := u.remotes
		u.mu.Unlock()
		u.closeErr = u.closePC()
		// Closing ends the reads; a deadline ends those pion left waiting.
		for _, tr := range remotes {
			_ = tr.SetReadDeadline(time.Now())
		}
		done := make(chan struct{})
		go func() { u.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(readLoopWait):
			u.logger.Warn("track read loops did not end; abandoned", "tracks", len(remotes), "after", readLoopWait)
		}
	})
	return u.closeErr
}
