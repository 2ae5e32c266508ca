package peer

import (
	"fmt"
	"strings"

	"github.com/pion/webrtc/v4"
)

// sdesMidURI is the RTP header extension naming a packet's media section.
const sdesMidURI = "urn:ietf:params:rtp-hdrext:sdes:mid"

// NewIngestPeerConnection returns a PeerConnection that receives from a
// publisher outside the tree (a WHIP client): the API's network settings
// and receiving interceptors (the NACK generator asks the publisher for
// what it lost; receiver reports), the abs-capture-time extension, and the
// codecs the caller accepts instead of the API's own, so its answer offers
// the publisher exactly what the tree can carry. The caller owns the
// connection.
func (a *API) NewIngestPeerConnection(codecs []webrtc.RTPCodecParameters) (*webrtc.PeerConnection, error) {
	me := &webrtc.MediaEngine{}
	for _, c := range codecs {
		kind := webrtc.RTPCodecTypeVideo
		if strings.HasPrefix(strings.ToLower(c.MimeType), "audio/") {
			kind = webrtc.RTPCodecTypeAudio
		}
		if err := me.RegisterCodec(c, kind); err != nil {
			return nil, fmt.Errorf("peer: register %s: %w", c.MimeType, err)
		}
	}
	// The mid extension maps a publisher's SSRCs to its media sections
	// when its offer lists no a=ssrc (as some WHIP encoders do).
	for _, uri := range []string{AbsCaptureTimeURI, sdesMidURI} {
		for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
			if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: uri}, kind); err != nil {
				return nil, fmt.Errorf("peer: register %s: %w", uri, err)
			}
		}
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(a.recvReg), webrtc.WithSettingEngine(a.se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{ICEServers: a.cfg.ICEServers})
	if err != nil {
		return nil, fmt.Errorf("peer: new peer connection: %w", err)
	}
	return pc, nil
}

// VideoFeedback is the RTCP feedback Canopy's video tracks negotiate
// (NACK, PLI, FIR, REMB), for codecs registered with
// NewIngestPeerConnection.
func VideoFeedback() []webrtc.RTCPFeedback {
	return append([]webrtc.RTCPFeedback(nil), videoFeedback...)
}

// AllowRemoteCandidate applies the API's RemoteCandidateFilter to one
// remote candidate (an a=candidate value, with or without its "candidate:"
// prefix), for connections whose signaling passes through neither a
// Downstream nor an Upstream: a WHIP publisher's offer and trickles.
func (a *API) AllowRemoteCandidate(candidate string) bool {
	c := conn{filter: a.cfg.RemoteCandidateFilter, logger: a.logger}
	return c.allowed(candidate)
}
