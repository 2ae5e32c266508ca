package peer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"canopy/mesh/protocol"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// Downstream is a parent's send-only PeerConnection to one child, carrying
// one track per Forwarder.
type Downstream struct {
	*conn
	childID string
	batch   *batchNet // nil with a UDP mux not made by NewUDPMuxFromPort
	// direct is whether ICE selected a pair whose local side is a UDP socket
	// of the agent's own (host, server- or peer-reflexive), not a TURN
	// relay or ICE-TCP: only then can a shard write the child (shard.go).
	direct atomic.Bool
	tracks []*downTrack
	wg     sync.WaitGroup // RTCP read loops
	// hold, on a standby link, is closed by Promote (standby.go).
	hold        chan struct{}
	promoteOnce sync.Once
	// strip, if set, takes signature trailers off (strip.go).
	strip func() bool

	closeOnce sync.Once
	closeErr  error
}

// NewDownstream creates the PeerConnection to a child, adds one send-only
// track per Forwarder (TrackLocal id = protocol.Track.ID, stream id
// "canopy"), and sends the offer and then the local ICE candidates through
// send. send must not call back into this Downstream synchronously.
func (a *API) NewDownstream(childID string, fwds []*Forwarder, send func(protocol.Signal), opts ...DownstreamOption) (*Downstream, error) {
	return a.newDownstream(childID, fwds, send, nil, opts...)
}

// newDownstream makes a Downstream; with hold set, a standby one whose
// tracks join their Forwarders only once hold is closed (standby.go).
func (a *API) newDownstream(childID string, fwds []*Forwarder, send func(protocol.Signal), hold chan struct{}, opts ...DownstreamOption) (*Downstream, error) {
	pc, batch, err := a.newSendingPeerConnection()
	if err != nil {
		return nil, fmt.Errorf("peer: new peer connection: %w", err)
	}
	d := &Downstream{
		conn:    a.newConn(pc, send, a.logger.With("child", childID)),
		childID: childID,
		batch:   batch,
		hold:    hold,
	}
	d.link.Store(newLinkID())
	for _, o := range opts {
		o(d)
	}
	if err := d.setup(fwds); err != nil {
		_ = d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Downstream) setup(fwds []*Forwarder) error {
	if err := d.addTracks(fwds, true); err != nil {
		return err
	}
	offer, err := d.pc.CreateOffer(nil)
	if err != nil {
		return fmt.Errorf("peer: create offer: %w", err)
	}
	if err := d.pc.SetLocalDescription(offer); err != nil {
		return fmt.Errorf("peer: set local offer: %w", err)
	}
	if !setICECheckInterval(d.pc, iceCheckInterval) {
		d.logger.Debug("pion's ICE check interval not found; keeping its default")
	}
	d.sendDescription(protocol.SignalOffer, d.pc.LocalDescription())
	return nil
}

// addTracks adds one send-only track per Forwarder, narrowed to its codec
// when narrow is set (an offer: the child is promised only that codec).
func (d *Downstream) addTracks(fwds []*Forwarder, narrow bool) error {
	d.pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(func(p *webrtc.ICECandidatePair) {
		direct := p != nil && p.Local != nil && p.Local.Protocol == webrtc.ICEProtocolUDP && p.Local.Typ != webrtc.ICECandidateTypeRelay
		d.direct.Store(direct)
	})
	for _, f := range fwds {
		prefs, err := codecPreferences(f.codec)
		if err != nil {
			return err
		}
		dt := newDownTrack(f, d.batch, &d.direct, d.conn.connected, d.conn.done)
		if d.hold != nil {
			dt.hold = d.hold
		}
		dt.strip = d.strip
		d.tracks = append(d.tracks, dt)
		tr, err := d.pc.AddTransceiverFromTrack(dt, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			return fmt.Errorf("peer: add track %s: %w", f.track.ID, err)
		}
		if narrow {
			if err := tr.SetCodecPreferences(prefs); err != nil {
				return fmt.Errorf("peer: codec preferences %s: %w", f.track.ID, err)
			}
		}
		d.wg.Add(1)
		go d.readRTCP(tr.Sender(), dt)
	}
	return nil
}

// readRTCP drains one sender's RTCP. Draining is what feeds pion's report
// interceptors; PLI and FIR go to the Forwarder, NACKs to the child's writer,
// which answers them from what it sent.
func (d *Downstream) readRTCP(s *webrtc.RTPSender, dt *downTrack) {
	f := dt.fwd
	defer d.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, _, err := s.Read(buf)
		if err != nil {
			if !isClosedErr(err) {
				d.logger.Debug("rtcp read ended", "err", err)
			}
			return
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				f.requestKeyframe()
			case *rtcp.TransportLayerNack:
				dt.onNACK(p)
			case *rtcp.ReceiverReport:
				dt.onReport(p, time.Now())
			}
		}
	}
}

// HandleSignal applies the child's answer or one of its ICE candidates;
// candidates that arrive before the answer are queued.
func (d *Downstream) HandleSignal(s protocol.Signal) error {
	switch s.Kind {
	case protocol.SignalAnswer:
		if !d.ofLink(s.Link) {
			return ErrOtherLink
		}
		return d.setRemote(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: s.SDP})
	case protocol.SignalCandidate:
		return d.addRemoteCandidate(s.Candidate, s.Link)
	default:
		return fmt.Errorf("%w: %s to a downstream", ErrUnexpectedSignal, s.Kind)
	}
}

// ChildID returns the child this connection serves.
func (d *Downstream) ChildID() string { return d.childID }

// WaitConnected waits until the PeerConnection is connected, fails or closes,
// or ctx ends.
func (d *Downstream) WaitConnected(ctx context.Context) error { return d.waitConnected(ctx) }

// Done is closed when the PeerConnection fails or closes ("disconnected" is
// not failure by itself: ICE may recover).
func (d *Downstream) Done() <-chan struct{} { return d.done }

// Close detaches the child from its Forwarders, closes the PeerConnection and
// waits for the goroutines it started. Idempotent.
func (d *Downstream) Close() error {
	d.closeOnce.Do(func() {
		for _, t := range d.tracks {
			t.close()
		}
		d.closeErr = d.closePC()
		d.wg.Wait()
	})
	return d.closeErr
}

// SendStats counts the datagrams this connection's writers queued and the
// system calls that sent them: with UDP GSO a frame of several packets goes
// out in one. With a mux from NewUDPMuxFromPort they are the mux's, shared
// by every connection; with another mux, zero.
// Resent and Refused are this connection's own: the retransmissions its
// child's NACKs got, and those its retransmission budget refused.
type SendStats struct {
	Datagrams uint64
	Sends     uint64
	Errors    uint64 // sends that failed (the connection closing, a full socket)
	Resent    uint64
	Refused   uint64
}

// SendStats returns the connection's batching and retransmission counters.
func (d *Downstream) SendStats() SendStats {
	p, s, e := d.batch.stats()
	st := SendStats{Datagrams: p, Sends: s, Errors: e}
	for _, t := range d.tracks {
		t.mu.Lock()
		w := t.writer
		t.mu.Unlock()
		if w != nil {
			st.Resent += w.resent.Load()
			st.Refused += w.refused.Load()
		}
	}
	return st
}
