package peer

import (
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// AbsCaptureTimeURI is the RTP header extension carrying the source's capture
// time of a frame (NTP format), which relays forward unchanged so that every
// viewer can measure source-to-viewer delay.
const AbsCaptureTimeURI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time"

// AbsCaptureTimeID is the extension id packets carry inside a process: a
// source stamps its packets with it before Forwarder.WriteRTP, Upstream
// renames the id its parent negotiated to it before the sink sees a packet,
// and each Downstream renames it to what its child negotiated. On the wire
// the ids are whatever each hop's SDP says.
const AbsCaptureTimeID = 14

// maxExtLen is the longest abs-capture-time body: 8 bytes of capture time
// and 8 of estimated clock offset.
const maxExtLen = 16

// CaptureTime returns the source's capture time of the frame p belongs to,
// if p carries one (packets a source stamped, or that an Upstream received).
// Compare it with time.Now() for the source-to-here delay; clocks of
// different hosts must be synchronised (NTP) for that to mean anything.
func CaptureTime(p *rtp.Packet) (time.Time, bool) {
	b := p.GetExtension(AbsCaptureTimeID)
	if len(b) < 8 {
		return time.Time{}, false
	}
	var e rtp.AbsCaptureTimeExtension
	if err := e.Unmarshal(b); err != nil {
		return time.Time{}, false
	}
	return e.CaptureTime(), true
}

// StampCaptureTime sets p's abs-capture-time extension (id AbsCaptureTimeID)
// to t. Sources call it for every packet of a frame with the frame's capture
// time. It allocates: meant for sources, not for the forwarding path.
func StampCaptureTime(p *rtp.Packet, t time.Time) error {
	b, err := rtp.NewAbsCaptureTimeExtension(t).Marshal()
	if err != nil {
		return err
	}
	return p.SetExtension(AbsCaptureTimeID, b)
}

// captureExtID returns the id negotiated for abs-capture-time, 0 if none.
func captureExtID(exts []webrtc.RTPHeaderExtensionParameter) uint8 {
	for _, e := range exts {
		if e.URI == AbsCaptureTimeURI && e.ID > 0 && e.ID < 15 {
			return uint8(e.ID)
		}
	}
	return 0
}

// renameExtension gives the extension with id from the id to instead, in
// place; packets from a parent carry the parent hop's id.
func renameExtension(h *rtp.Header, from, to uint8) {
	if from == to || from == 0 {
		return
	}
	b := h.GetExtension(from)
	if b == nil {
		return
	}
	// Delete and set reuse the slice: no allocation per packet.
	_ = h.DelExtension(from)
	_ = h.SetExtension(to, b)
}
