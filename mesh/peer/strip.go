package peer

import (
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"canopy/mesh/framesig"
)

// DownstreamOption tunes a Downstream made by NewDownstreamForOffer.
type DownstreamOption func(*Downstream)

// StripSignatures makes a Downstream take the signature trailer off every
// VP8 and Opus frame while signed reports true: for a player that cannot
// verify (a third-party WHEP player), whose decoder must not see it. The
// trailer is in the frame's last (marker) packet, whole (media.Packetizer
// keeps it there), so it is cut from that one packet's payload; H264's SEI
// stays (decoders skip unknown user data). A child without the option is
// written as before: its path has no wrapper and no branch.
func StripSignatures(signed func() bool) DownstreamOption {
	return func(d *Downstream) { d.strip = signed }
}

// writeStream is where a child's packets go: pion's stream, or a stripping
// wrapper around it.
func (d *downTrack) writeStream(ctx webrtc.TrackLocalContext) webrtc.TrackLocalWriter {
	ws := ctx.WriteStream()
	if d.strip == nil {
		return ws
	}
	f, kind, err := framesig.FormatOf(d.fwd.codec.MimeType)
	if err != nil || f != framesig.FormatTrailer {
		return ws
	}
	return &stripWriter{TrackLocalWriter: ws, signed: d.strip, audio: kind == framesig.Audio}
}

// stripWriter cuts signature trailers off marker packets (every audio
// packet is a whole frame). Slicing only: no copy, no allocation.
type stripWriter struct {
	webrtc.TrackLocalWriter
	signed func() bool
	audio  bool
}

func (s *stripWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	if (s.audio || h.Marker) && len(payload) > framesig.TrailerSize && framesig.HasTrailer(payload) && s.signed() {
		payload = payload[:len(payload)-framesig.TrailerSize]
	}
	return s.TrackLocalWriter.WriteRTP(h, payload)
}
