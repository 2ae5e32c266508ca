package media

import (
	"fmt"
	"strings"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4/pkg/media/h264writer"
	"github.com/pion/webrtc/v4/pkg/media/ivfwriter"
	"github.com/pion/webrtc/v4/pkg/media/oggwriter"
)

// Recorder writes a received RTP track to a file.
type Recorder interface {
	WriteRTP(pkt *rtp.Packet) error
	Close() error
}

// NewRecorder creates path and records codec c into it: VP8 as IVF, Opus as
// Ogg, H264 as Annex-B. The writers depacketize themselves and wait for a
// keyframe, so the file always starts decodable.
func NewRecorder(path string, c Codec) (Recorder, error) {
	// Each branch checks err itself: returning a nil *Writer as a Recorder
	// would give the caller a non-nil interface.
	switch strings.ToLower(c.MimeType) {
	case strings.ToLower(VP8.MimeType):
		w, err := ivfwriter.New(path, ivfwriter.WithCodec(VP8.MimeType))
		if err != nil {
			return nil, err
		}
		return w, nil
	case strings.ToLower(Opus.MimeType):
		ch := c.Channels
		if ch == 0 {
			ch = 2
		}
		w, err := oggwriter.New(path, c.ClockRate, ch)
		if err != nil {
			return nil, err
		}
		return w, nil
	case strings.ToLower(H264.MimeType):
		w, err := h264writer.New(path)
		if err != nil {
			return nil, err
		}
		return w, nil
	}
	return nil, fmt.Errorf("%w: cannot record %s", ErrUnsupportedCodec, c.MimeType)
}
