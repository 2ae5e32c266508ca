package peer

import "strings"

// keyframeFunc reports whether an RTP payload starts a keyframe.
type keyframeFunc func(payload []byte) bool

// keyframeDetector returns the detector for a MIME type, or nil when the codec
// has no keyframes (audio) or Canopy does not parse it (then a dropping child
// simply resumes with the next packet that fits).
func keyframeDetector(mimeType string) keyframeFunc {
	switch strings.ToLower(mimeType) {
	case "video/vp8":
		return IsVP8Keyframe
	case "video/h264":
		return IsH264Keyframe
	}
	return nil
}

// IsVP8Keyframe reports whether a VP8 RTP payload (RFC 7741) is the first
// packet of a keyframe: S=1 and PID=0 in the payload descriptor, and the
// inverse key frame bit P=0 in the VP8 payload header that follows.
func IsVP8Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	b0 := p[0]
	if b0&0x10 == 0 || b0&0x07 != 0 { // S bit, PID
		return false
	}
	i := 1
	if b0&0x80 != 0 { // X: extension byte follows
		if len(p) <= i {
			return false
		}
		x := p[i]
		i++
		if x&0x80 != 0 { // I: picture id, 7 or 15 bits
			if len(p) <= i {
				return false
			}
			if p[i]&0x80 != 0 {
				i++
			}
			i++
		}
		if x&0x40 != 0 { // L: TL0PICIDX
			i++
		}
		if x&0x30 != 0 { // T or K: TID/Y/KEYIDX byte
			i++
		}
	}
	return len(p) > i && p[i]&0x01 == 0
}

// IsH264Keyframe reports whether an H264 RTP payload (RFC 6184) starts an IDR
// picture or carries an SPS, on its own, inside a STAP-A, or as the first
// fragment of an FU-A.
func IsH264Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	switch nal := p[0] & 0x1F; nal {
	case 5, 7:
		return true
	case 24: // STAP-A: [hdr][size16][nal]...
		for i := 1; i+2 < len(p); {
			size := int(p[i])<<8 | int(p[i+1])
			if t := p[i+2] & 0x1F; t == 5 || t == 7 {
				return true
			}
			i += 2 + size
		}
	case 28: // FU-A: [indicator][S E R type]
		if len(p) >= 2 && p[1]&0x80 != 0 {
			t := p[1] & 0x1F
			return t == 5 || t == 7
		}
	}
	return false
}
