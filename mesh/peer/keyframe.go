package peer

import (
	"strings"

	"canopy/mesh/media"
)

// keyframeFunc reports whether an RTP payload starts a keyframe.
type keyframeFunc func(payload []byte) bool

// keyframeDetector returns the detector for a MIME type, or nil when the codec
// has no keyframes (audio) or Canopy does not parse it (then a dropping child
// simply resumes with the next packet that fits).
func keyframeDetector(mimeType string) keyframeFunc {
	switch strings.ToLower(mimeType) {
	case "video/vp8":
		return media.IsVP8Keyframe
	case "video/h264":
		return media.IsH264Keyframe
	}
	return nil
}
