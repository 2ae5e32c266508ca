package media

import (
	"strings"

	"github.com/pion/rtp"
)

// Decodability. Without a decoder, a frame is judged by what a decoder
// reads first, and by whether a decoder could have started: nothing decodes
// before a key frame. VP8: the frame tag (RFC 6386 §9.1: version, a first
// partition that fits the frame) and, for a key frame, its start code and
// dimensions. H264: every NAL unit header (forbidden bit clear, a type H.264
// defines, parameter sets and IDR marked as references), at least one slice,
// and an IDR only once an SPS (known profile and level) and a PPS came.
// Random bytes pass the VP8 key frame test about once in 2^24 and an SPS
// about once in 10^4 packets; a parent that forges headers can still send
// pictures of nothing, but no longer by sending noise.

// decodeState is what a decoder would know so far.
type decodeState struct{ key, sps, pps bool }

// au sums up one H264 access unit's NAL units.
type au struct {
	ok                 bool
	slices             int
	idr, sps, pps, any bool
}

// nal adds one NAL unit (header byte first) to the access unit.
func (a *au) nal(n []byte) {
	if len(n) == 0 || !nalHeaderOK(n[0]) {
		a.ok = false
		return
	}
	a.any = true
	switch n[0] & nalTypeMask {
	case nalIDR:
		a.idr = true
	case nalSPS:
		if spsOK(n) {
			a.sps = true
		} else {
			a.ok = false
		}
	case nalPPS:
		a.pps = true
	}
	if isSlice(n[0]) {
		a.slices++
	}
}

// end reports whether the access unit decodes, given and updating st.
func (st *decodeState) end(a *au) bool {
	if !a.ok || !a.any {
		return false
	}
	st.sps = st.sps || a.sps
	st.pps = st.pps || a.pps
	if a.idr && st.sps && st.pps {
		st.key = true
	}
	return st.key && a.slices > 0
}

// vp8 reports whether a VP8 frame with a good tag decodes, given and
// updating st.
func (st *decodeState) vp8(first []byte, size int) bool {
	if !vp8TagOK(first, size) {
		return false
	}
	if first[0]&0x01 == 0 {
		st.key = true
	}
	return st.key
}

// spsOK checks an SPS's profile_idc and level_idc (H.264 Annex A).
func spsOK(n []byte) bool {
	if len(n) < 4 {
		return false
	}
	switch n[1] {
	case 44, 66, 77, 83, 86, 88, 100, 110, 118, 122, 128, 134, 135, 138, 139, 244:
	default:
		return false
	}
	switch n[3] {
	case 9, 10, 11, 12, 13, 20, 21, 22, 30, 31, 32, 40, 41, 42, 50, 51, 52, 60, 61, 62:
		return true
	}
	return false
}

// vp8TagOK checks a VP8 frame's first bytes (b) against the frame's whole
// size: a version of at most 3, a first partition that fits, and for a key
// frame the start code 9d 01 2a and non-zero dimensions.
func vp8TagOK(b []byte, size int) bool {
	if len(b) < 3 {
		return false
	}
	key := b[0]&0x01 == 0
	version := (b[0] >> 1) & 0x07
	first := (int(b[0]) | int(b[1])<<8 | int(b[2])<<16) >> 5
	header := 3
	if key {
		header = 10
		if len(b) < 10 || b[3] != 0x9d || b[4] != 0x01 || b[5] != 0x2a {
			return false
		}
		w, h := (int(b[6])|int(b[7])<<8)&0x3fff, (int(b[8])|int(b[9])<<8)&0x3fff
		if w == 0 || h == 0 {
			return false
		}
	}
	return version <= 3 && first > 0 && first <= size-header
}

// nalHeaderOK checks one NAL unit header byte as it may appear in an access
// unit: forbidden bit clear, type 1-23, an IDR or parameter set marked as
// a reference.
func nalHeaderOK(h byte) bool {
	t := h & nalTypeMask
	if h&0x80 != 0 || t == 0 || t > 23 {
		return false
	}
	if (t == nalIDR || t == nalSPS || t == nalPPS) && h&0x60 == 0 {
		return false
	}
	return true
}

func isSlice(h byte) bool { t := h & nalTypeMask; return t >= nalSlice && t <= nalIDR }

// Decoder judges assembled frames of one track, in order, as a decoder
// would take them: whether each parses and could be decoded given the
// frames before it. Not safe for concurrent use.
type Decoder struct {
	mime string
	st   decodeState
}

// NewDecoder returns a Decoder for a codec.
func NewDecoder(mime string) *Decoder { return &Decoder{mime: mime} }

// Decodable reports whether frame (a VP8 frame or an Annex-B access unit)
// decodes after the frames judged before it. Audio frames count if they are
// not empty; other video codecs never do.
func (d *Decoder) Decodable(frame []byte) bool {
	switch {
	case strings.EqualFold(d.mime, VP8.MimeType):
		return d.st.vp8(frame, len(frame))
	case strings.EqualFold(d.mime, H264.MimeType):
		a := au{ok: true}
		for i := 0; i+2 < len(frame); i++ {
			if frame[i] != 0 || frame[i+1] != 0 || frame[i+2] != 1 {
				continue
			}
			start := i + 3
			end := start
			for end+2 < len(frame) && !(frame[end] == 0 && frame[end+1] == 0 && (frame[end+2] == 1 || frame[end+2] == 0)) {
				end++
			}
			if end+2 >= len(frame) {
				end = len(frame)
			}
			a.nal(frame[start:end])
			i = end - 1
		}
		return d.st.end(&a)
	case len(d.mime) > 6 && strings.EqualFold(d.mime[:6], "audio/"):
		return len(frame) > 0
	}
	return false
}

// FrameCheck follows one video track's RTP packets and reports each frame
// that arrives whole, in order, and decodable by the tests above; packets
// out of order or missing make their frame not count (a retransmission
// repairs the stream, not this judgement). It keeps a few integers, never
// the payloads, so it costs nothing per packet on a relay. Not safe for
// concurrent use.
type FrameCheck struct {
	vp8, h264 bool
	active    bool // a frame is being followed
	ok        bool // nothing wrong with it so far
	ts        uint32
	next      uint16 // the sequence number expected next
	size      int    // VP8: bytes of the frame so far
	first     [10]byte
	firstLen  int
	au        au   // H264: the access unit so far
	inFU      bool // H264: inside a fragmented NAL unit
	st        decodeState
}

// NewFrameCheck returns a FrameCheck for a video codec; for codecs it does
// not know, every packet with the marker bit counts as a frame.
func NewFrameCheck(mime string) *FrameCheck {
	return &FrameCheck{vp8: strings.EqualFold(mime, VP8.MimeType), h264: strings.EqualFold(mime, H264.MimeType)}
}

// Push takes the next packet received and reports whether it completed a
// decodable frame.
func (c *FrameCheck) Push(p *rtp.Packet) bool {
	switch {
	case c.vp8:
		return c.pushVP8(p)
	case c.h264:
		return c.pushH264(p)
	}
	return p.Marker
}

// follow starts following a frame at p, or checks p continues it.
func (c *FrameCheck) follow(p *rtp.Packet, start bool) {
	switch {
	case start:
		c.active, c.ok, c.ts, c.size, c.firstLen, c.au, c.inFU = true, true, p.Timestamp, 0, 0, au{ok: true}, false
	case !c.active:
		return
	case p.Timestamp != c.ts || p.SequenceNumber != c.next:
		c.ok = false
	}
	c.next = p.SequenceNumber + 1
}

func (c *FrameCheck) pushVP8(p *rtp.Packet) bool {
	b := p.Payload
	if len(b) < 1 {
		return false
	}
	// RFC 7741 §4.2 payload descriptor.
	d := 1
	if b[0]&0x80 != 0 { // X
		if len(b) < 2 {
			c.active = false
			return false
		}
		ext := b[1]
		d = 2
		if ext&0x80 != 0 { // I
			if len(b) > d && b[d]&0x80 != 0 {
				d++
			}
			d++
		}
		if ext&0x40 != 0 { // L
			d++
		}
		if ext&0x30 != 0 { // T or K
			d++
		}
	}
	if d > len(b) {
		c.active = false
		return false
	}
	start := b[0]&0x10 != 0 && b[0]&0x07 == 0
	if !start && (!c.active || p.Timestamp != c.ts) {
		c.active = false
		return false
	}
	c.follow(p, start)
	body := b[d:]
	if c.firstLen < len(c.first) {
		c.firstLen += copy(c.first[c.firstLen:], body)
	}
	c.size += len(body)
	if !p.Marker {
		return false
	}
	c.active = false
	return c.ok && c.st.vp8(c.first[:c.firstLen], c.size)
}

func (c *FrameCheck) pushH264(p *rtp.Packet) bool {
	b := p.Payload
	start := !c.active || p.Timestamp != c.ts
	c.follow(p, start)
	if len(b) < 1 {
		c.ok = false
	} else {
		switch t := b[0] & nalTypeMask; {
		case b[0]&0x80 != 0:
			c.ok = false
		case t >= 1 && t <= 23:
			c.ok = c.ok && !c.inFU
			c.au.nal(b)
		case t == nalStapA:
			c.ok = c.ok && !c.inFU && c.stapA(b[1:])
		case t == nalFuA:
			c.ok = c.ok && c.fuA(b)
		default: // STAP-B, MTAP, FU-B: not in packetization mode 0 or 1
			c.ok = false
		}
	}
	if !p.Marker {
		return false
	}
	c.active = false
	c.au.ok = c.au.ok && c.ok && !c.inFU
	return c.st.end(&c.au)
}

// stapA checks the NAL units a STAP-A aggregates (RFC 6184 §5.7.1): sizes
// that fill the packet exactly, each with a valid header.
func (c *FrameCheck) stapA(b []byte) bool {
	n := 0
	for len(b) > 0 {
		if len(b) < 3 {
			return false
		}
		size := int(b[0])<<8 | int(b[1])
		if size == 0 || 2+size > len(b) {
			return false
		}
		c.au.nal(b[2 : 2+size])
		b = b[2+size:]
		n++
	}
	return n > 0
}

// fuA checks one fragment (RFC 6184 §5.8): start and end in order, the
// fragmented NAL's header valid.
func (c *FrameCheck) fuA(b []byte) bool {
	if len(b) < 3 {
		return false
	}
	s, e := b[1]&0x80 != 0, b[1]&0x40 != 0
	h := b[0]&0xe0 | b[1]&nalTypeMask
	switch {
	case s && e, s == c.inFU && !s, s && c.inFU:
		return false
	case !nalHeaderOK(h):
		return false
	}
	if s {
		// The NAL's own header, then as much of it as this fragment holds.
		c.first[0] = h
		c.firstLen = 1 + copy(c.first[1:], b[2:])
		c.au.nal(c.first[:c.firstLen])
	}
	c.inFU = !e
	return true
}
