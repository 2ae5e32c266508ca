// Package media holds Canopy's media sources and sinks: frame readers for IVF
// (VP8), Annex-B H264 and Ogg/Opus files that loop forever, an RTP packetizer
// whose sequence numbers and timestamps stay continuous across loops, a
// real-time player, a receive-side frame assembler, keyframe detection on RTP
// payloads and file recorders.
//
// It knows nothing of PeerConnections, signaling or the tree: a source feeds
// Play's packets to whatever track it owns, and a viewer pushes the packets it
// receives into an Assembler.
package media

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Codec describes an RTP payload format the way SDP negotiates it.
type Codec struct {
	MimeType    string
	ClockRate   uint32
	Channels    uint16
	Fmtp        string
	PayloadType uint8
}

// The payload types match pion's RegisterDefaultCodecs, so a track built from
// these descriptors negotiates without remapping against a default MediaEngine.
var (
	// VP8 is the video codec of the demo clip and of IVF files.
	VP8 = Codec{MimeType: "video/VP8", ClockRate: 90000, PayloadType: 96}
	// H264 is constrained-baseline, packetization-mode 1 (PT 106 in pion's defaults; 102 is profile 42001f).
	H264 = Codec{
		MimeType:    "video/H264",
		ClockRate:   90000,
		Fmtp:        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
		PayloadType: 106,
	}
	// Opus is the audio codec of the demo clip and of Ogg files; WebRTC always signals it as stereo.
	Opus = Codec{MimeType: "audio/opus", ClockRate: 48000, Channels: 2, Fmtp: "minptime=10;useinbandfec=1", PayloadType: 111}
)

// LookupCodec returns the descriptor for a MIME type (case-insensitive, as SDP is).
func LookupCodec(mime string) (Codec, bool) {
	for _, c := range []Codec{VP8, H264, Opus} {
		if strings.EqualFold(c.MimeType, mime) {
			return c, true
		}
	}
	return Codec{}, false
}

// Frame is one encoded video frame (access unit) or one audio packet.
type Frame struct {
	Data     []byte
	Duration time.Duration
	Keyframe bool
	// Gap is the time since the previous frame, due before this one. Live
	// readers set it instead of Duration: they know when a frame comes after
	// the last, not how long it lasts until the next has arrived.
	Gap time.Duration
	// Timestamp is the RTP timestamp of an assembled frame (Assembler sets
	// it; readers leave it 0).
	Timestamp uint32
}

// FrameReader yields a file's frames forever, rewinding at the end, or a
// live input's until it ends (io.EOF); it is not safe for concurrent use.
type FrameReader interface {
	ReadFrame() (Frame, error)
	Codec() Codec
}

var (
	// ErrUnsupportedCodec means the file holds a codec this package cannot send.
	ErrUnsupportedCodec = errors.New("media: unsupported codec")
	// ErrUnknownFormat means OpenFile could not tell the container from the file name.
	ErrUnknownFormat = errors.New("media: unknown file format (want .ivf, .h264, .264, .ogg or .opus)")
	// ErrInvalid means the data is not a well-formed file of the expected format.
	ErrInvalid = errors.New("media: invalid data")
	// ErrTruncated means the file ends in the middle of a frame or page.
	ErrTruncated = errors.New("media: truncated data")
	// ErrNoFrames means a whole pass over the file produced no frame, so looping would spin forever.
	ErrNoFrames = errors.New("media: file has no frames")
)

// DefaultH264FPS is the frame rate OpenFile assumes for raw H264, which carries no timing.
const DefaultH264FPS = 30

// OpenFile opens a media file and picks its reader by extension; close the
// returned Closer when done.
func OpenFile(path string) (FrameReader, io.Closer, error) {
	var open func(io.ReadSeeker) (FrameReader, error)
	switch strings.ToLower(filepath.Ext(path)) {
	case ".ivf":
		open = NewIVFReader
	case ".h264", ".264":
		open = func(rs io.ReadSeeker) (FrameReader, error) { return NewH264Reader(rs, DefaultH264FPS) }
	case ".ogg", ".opus":
		open = NewOggReader
	default:
		return nil, nil, fmt.Errorf("%w: %s", ErrUnknownFormat, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	r, err := open(f)
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, f, nil
}

// looper turns a reader that ends into one that repeats. Each format only
// knows how to read one pass (next returns io.EOF at a clean end) and how to
// go back to its first frame.
type looper struct {
	next      func() (Frame, error)
	rewind    func() error
	sincePass int // frames read since the last rewind
}

func (l *looper) read() (Frame, error) {
	f, err := l.next()
	if errors.Is(err, io.EOF) {
		if l.sincePass == 0 {
			return Frame{}, ErrNoFrames
		}
		if err := l.rewind(); err != nil {
			return Frame{}, fmt.Errorf("media: rewind: %w", err)
		}
		l.sincePass = 0
		f, err = l.next()
		if errors.Is(err, io.EOF) {
			return Frame{}, ErrNoFrames
		}
	}
	if err != nil {
		return Frame{}, err
	}
	l.sincePass++
	return f, nil
}
