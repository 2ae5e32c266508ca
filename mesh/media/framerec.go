package media

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
)

// FrameRecorder writes complete video frames to a file: what a viewer
// played, after its node verified and stripped them (mesh Config.OnFrame),
// where a Recorder writes the RTP it received, signature trailers and all.
type FrameRecorder interface {
	WriteFrame(f Frame) error
	Close() error
}

// NewFrameRecorder creates path and records frames of codec c into it:
// VP8 as IVF (90 kHz timebase, the RTP timestamps), H264 as Annex-B. Both
// start at the first keyframe, so the file always starts decodable.
func NewFrameRecorder(path string, c Codec) (FrameRecorder, error) {
	var ivf bool
	switch strings.ToLower(c.MimeType) {
	case strings.ToLower(VP8.MimeType):
		ivf = true
	case strings.ToLower(H264.MimeType):
	default:
		return nil, fmt.Errorf("%w: cannot record frames of %s", ErrUnsupportedCodec, c.MimeType)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &frameFile{f: f, ivf: ivf}, nil
}

// frameFile is a FrameRecorder.
type frameFile struct {
	f       *os.File
	ivf     bool
	started bool
	firstTS uint32
	lastTS  uint32
	pts     uint64 // the last frame's, unwrapped
	frames  uint32
}

// ivfHeaderSize and ivfFrameHeaderSize are the IVF format's.
const (
	ivfHeaderSize      = 32
	ivfFrameHeaderSize = 12
)

func (w *frameFile) WriteFrame(fr Frame) error {
	if !w.started {
		if !fr.Keyframe {
			return nil // undecodable until the first keyframe
		}
		w.started, w.firstTS, w.lastTS = true, fr.Timestamp, fr.Timestamp
		if w.ivf {
			if err := w.writeIVFHeader(fr.Data); err != nil {
				return err
			}
		}
	}
	if !w.ivf {
		_, err := w.f.Write(fr.Data)
		return err
	}
	if d := int32(fr.Timestamp - w.lastTS); d > 0 {
		w.pts += uint64(d) // RTP timestamps wrap; frames come in order
	}
	w.lastTS = fr.Timestamp
	var h [ivfFrameHeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(fr.Data)))
	binary.LittleEndian.PutUint64(h[4:], w.pts)
	if _, err := w.f.Write(h[:]); err != nil {
		return err
	}
	if _, err := w.f.Write(fr.Data); err != nil {
		return err
	}
	w.frames++
	return nil
}

// writeIVFHeader writes the file header, with the picture size of the
// first keyframe (RFC 6386 §9.1: after the 3-byte tag and the start code
// 9d 01 2a, 14 bits of width and of height).
func (w *frameFile) writeIVFHeader(key []byte) error {
	var h [ivfHeaderSize]byte
	copy(h[0:], "DKIF")
	binary.LittleEndian.PutUint16(h[6:], ivfHeaderSize)
	copy(h[8:], "VP80")
	if len(key) >= 10 && key[3] == 0x9d && key[4] == 0x01 && key[5] == 0x2a {
		binary.LittleEndian.PutUint16(h[12:], binary.LittleEndian.Uint16(key[6:])&0x3fff)
		binary.LittleEndian.PutUint16(h[14:], binary.LittleEndian.Uint16(key[8:])&0x3fff)
	}
	binary.LittleEndian.PutUint32(h[16:], 90000) // timebase: 1/90000 s, RTP's clock
	binary.LittleEndian.PutUint32(h[20:], 1)
	_, err := w.f.Write(h[:])
	return err
}

// Close writes the frame count into the IVF header and closes the file.
func (w *frameFile) Close() error {
	if w.ivf && w.started {
		var n [4]byte
		binary.LittleEndian.PutUint32(n[:], w.frames)
		if _, err := w.f.Seek(24, io.SeekStart); err == nil {
			_, _ = w.f.Write(n[:])
		}
	}
	return w.f.Close()
}
