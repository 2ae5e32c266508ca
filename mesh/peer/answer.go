package peer

import (
	"context"
	"fmt"
	"strings"
	"time"

	"canopy/mesh/protocol"

	"github.com/pion/webrtc/v4"
)

// answerGatherTimeout bounds the wait for the local candidates that go
// into an answer whole (host candidates take milliseconds).
const answerGatherTimeout = 6 * time.Second

// NewDownstreamForOffer creates the send-only PeerConnection to a child that
// made its own offer (a WHEP player): one track per Forwarder, on the
// offer's media sections of that kind, sent as the Forwarder sends to any
// child (GOP burst, queue, NACKs from the child's ring). It returns the
// answer with every local candidate in it: HTTP signaling cannot trickle
// the server's side. The answer keeps the offer's codecs and payload types;
// each track sends its own codec, and a track whose codec the offer lacks
// fails with ErrUnsupportedCodec.
func (a *API) NewDownstreamForOffer(ctx context.Context, childID string, fwds []*Forwarder, offer string, opts ...DownstreamOption) (*Downstream, string, error) {
	pc, batch, err := a.newSendingPeerConnection()
	if err != nil {
		return nil, "", fmt.Errorf("peer: new peer connection: %w", err)
	}
	d := &Downstream{
		conn:    a.newConn(pc, func(protocol.Signal) {}, a.logger.With("child", childID)),
		childID: childID,
		batch:   batch,
	}
	for _, o := range opts {
		o(d)
	}
	fail := func(err error) (*Downstream, string, error) {
		_ = d.Close()
		return nil, "", err
	}
	if err := d.addTracks(fwds, false); err != nil {
		return fail(err)
	}
	if err := d.setRemote(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return fail(err)
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return fail(fmt.Errorf("peer: create answer: %w", err))
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		// pion binds the tracks here: a codec the offer lacks fails.
		var names []string
		for _, f := range fwds {
			names = append(names, strings.TrimSpace(f.codec.MimeType+" "+f.codec.SDPFmtpLine))
		}
		return fail(fmt.Errorf("%w: the stream sends %s, which the offer does not take (%v)", ErrUnsupportedCodec, strings.Join(names, " and "), err))
	}
	for _, dt := range d.tracks {
		dt.mu.Lock()
		bound := dt.writer != nil
		dt.mu.Unlock()
		if !bound && offerHasKind(pc, dt.Kind()) {
			return fail(fmt.Errorf("%w: %s %s is not in the offer", ErrUnsupportedCodec, dt.fwd.codec.MimeType, dt.fwd.codec.SDPFmtpLine))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, answerGatherTimeout)
	defer cancel()
	select {
	case <-gathered:
	case <-ctx.Done(): // answer with what was gathered: host candidates come first
	}
	return d, pc.LocalDescription().SDP, nil
}

// offerHasKind reports whether the remote offer has a section of kind.
func offerHasKind(pc *webrtc.PeerConnection, kind webrtc.RTPCodecType) bool {
	for _, tr := range pc.GetTransceivers() {
		if tr.Kind() == kind && tr.Mid() != "" {
			return true
		}
	}
	return false
}

// PeerConnection is the child's connection, for signaling that does not
// pass through the tree: a WHEP player's trickled candidates and ICE
// restarts, sent over HTTP.
func (d *Downstream) PeerConnection() *webrtc.PeerConnection { return d.pc }
