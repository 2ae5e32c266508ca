package media

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pion/webrtc/v4/pkg/media/h264reader"
)

// Live input formats for OpenLive.
const (
	FormatAuto = ""
	FormatIVF  = "ivf"
	FormatH264 = "h264"
)

// ErrUnknownLiveFormat means OpenLive could not tell the stream's format
// from its first bytes.
var ErrUnknownLiveFormat = errors.New("media: live input is neither IVF (\"DKIF\") nor Annex-B H264 (a start code); name the format")

// OpenLive reads a live stream (a pipe from an encoder) once, to its end:
// IVF (VP8) or Annex-B H264, as format says or, with FormatAuto, as the
// first bytes tell: "DKIF" is IVF, a start code (00 00 01 or 00 00 00 01)
// is H264. H264 carries no timing: fps paces it. The reader returns io.EOF
// when the stream ends.
func OpenLive(r io.Reader, format string, fps float64) (FrameReader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if format == FormatAuto {
		head, err := br.Peek(4)
		if err != nil && len(head) == 0 {
			return nil, fmt.Errorf("%w: live input: %v", ErrInvalid, err)
		}
		switch {
		case bytes.HasPrefix(head, []byte("DKIF")):
			format = FormatIVF
		case bytes.HasPrefix(head, []byte{0, 0, 1}), bytes.HasPrefix(head, []byte{0, 0, 0, 1}):
			format = FormatH264
		default:
			return nil, fmt.Errorf("%w (first bytes % x)", ErrUnknownLiveFormat, head)
		}
	}
	switch format {
	case FormatIVF:
		return NewLiveIVFReader(br)
	case FormatH264:
		return NewLiveH264Reader(br, fps)
	}
	return nil, fmt.Errorf("%w: live format %q (want ivf or h264)", ErrUnknownFormat, format)
}

// liveIVF reads an IVF stream once. Each frame goes out when its timestamp
// says, relative to the one before (Frame.Gap), without waiting for the
// next frame to learn its duration: no frame of added delay.
type liveIVF struct {
	r       *ivfReader
	started bool
	prevPTS uint64
}

// NewLiveIVFReader reads VP8 frames from a live IVF stream, once.
func NewLiveIVFReader(rd io.Reader) (FrameReader, error) {
	r, err := newIVF(rd)
	if err != nil {
		return nil, err
	}
	return &liveIVF{r: r}, nil
}

func (l *liveIVF) Codec() Codec { return VP8 }

func (l *liveIVF) ReadFrame() (Frame, error) {
	f, err := l.r.readRaw()
	if err != nil {
		return Frame{}, err // io.EOF at a clean end
	}
	var gap time.Duration
	if l.started {
		// A pts that goes backwards or jumps implausibly keeps the cadence.
		if gap = l.r.ptsDur(f.pts - l.prevPTS); f.pts <= l.prevPTS || gap == 0 {
			gap = l.r.defDur
		}
	}
	l.started, l.prevPTS = true, f.pts
	return Frame{Data: f.data, Gap: gap, Keyframe: vp8FrameIsKey(f.data)}, nil
}

// liveH264 reads an Annex-B stream once, grouping NAL units into access
// units as the looping reader does. A NAL unit ends only where the next
// start code begins, so each picture leaves when the next one starts
// arriving: one frame of delay that Annex-B's framing imposes.
type liveH264 struct{ h *h264Reader }

// NewLiveH264Reader reads a live Annex-B H264 stream once, at fps.
func NewLiveH264Reader(rd io.Reader, fps float64) (FrameReader, error) {
	if !(fps > 0 && fps <= 1000) {
		return nil, fmt.Errorf("media: H264 frame rate %v out of range", fps)
	}
	nals, err := h264reader.NewReaderWithOptions(rd, h264reader.WithIncludeSEI(true))
	if err != nil {
		return nil, fmt.Errorf("%w: H264: %v", ErrInvalid, err)
	}
	return &liveH264{h: &h264Reader{nals: nals, dur: time.Duration(float64(time.Second) / fps)}}, nil
}

func (l *liveH264) Codec() Codec { return H264 }

func (l *liveH264) ReadFrame() (Frame, error) { return l.h.next() }
