package media

import "strings"

// IsKeyframe reports whether an RTP payload starts a frame a decoder can begin
// with: a VP8 key frame's first packet, or an H264 packet carrying an IDR slice
// or an SPS (single NAL, inside a STAP-A, or a FU-A start). Every audio packet
// counts as one; unknown video codecs never do.
func IsKeyframe(mime string, payload []byte) bool {
	switch {
	case strings.EqualFold(mime, VP8.MimeType):
		return IsVP8Keyframe(payload)
	case strings.EqualFold(mime, H264.MimeType):
		return IsH264Keyframe(payload)
	case len(mime) > 6 && strings.EqualFold(mime[:6], "audio/"):
		return true
	}
	return false
}

// IsVP8Keyframe reports whether a VP8 RTP payload is the first packet of a
// key frame: it skips the payload descriptor (RFC 7741 §4.2), checks S=1 and
// PID=0, then the inverse key frame bit P=0 of the VP8 payload header.
func IsVP8Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	start, pid := p[0]&0x10 != 0, p[0]&0x07
	if !start || pid != 0 {
		return false
	}
	i := 1
	if p[0]&0x80 != 0 { // X: extension byte follows
		if len(p) < 2 {
			return false
		}
		ext := p[1]
		i = 2
		if ext&0x80 != 0 { // I: picture ID, 7 or 15 bits
			if len(p) <= i {
				return false
			}
			if p[i]&0x80 != 0 {
				i++
			}
			i++
		}
		if ext&0x40 != 0 { // L: TL0PICIDX
			i++
		}
		if ext&0x30 != 0 { // T or K: TID/Y/KEYIDX
			i++
		}
	}
	return len(p) > i && p[i]&0x01 == 0 // P bit of the VP8 payload header
}

// IsH264Keyframe reports whether an H264 RTP payload (RFC 6184) starts an IDR
// picture or carries an SPS: on its own, inside a STAP-A, or as the first
// fragment of an FU-A.
func IsH264Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	switch t := p[0] & nalTypeMask; t {
	case nalIDR, nalSPS:
		return true
	case nalStapA:
		for i := 1; i+2 < len(p); {
			size := int(p[i])<<8 | int(p[i+1])
			i += 2
			if size == 0 || i+size > len(p) {
				return false
			}
			if nt := p[i] & nalTypeMask; nt == nalIDR || nt == nalSPS {
				return true
			}
			i += size
		}
	case nalFuA:
		if len(p) < 2 || p[1]&0x80 == 0 { // only the start fragment begins the NAL
			return false
		}
		nt := p[1] & nalTypeMask
		return nt == nalIDR || nt == nalSPS
	}
	return false
}

// frameIsKeyframe judges an assembled frame (VP8 frame or Annex-B access unit).
func frameIsKeyframe(mime string, data []byte) bool {
	switch {
	case strings.EqualFold(mime, VP8.MimeType):
		return vp8FrameIsKey(data)
	case strings.EqualFold(mime, H264.MimeType):
		return annexBHasIDR(data)
	}
	return IsKeyframe(mime, data)
}

// annexBHasIDR scans start codes for an IDR slice NAL.
func annexBHasIDR(b []byte) bool {
	for i := 0; i+3 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if b[i+3]&nalTypeMask == nalIDR {
				return true
			}
			i += 2
		}
	}
	return false
}
