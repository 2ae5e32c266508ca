package media

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

const (
	ivfFileHeaderLen  = 32
	ivfFrameHeaderLen = 12
	// maxFrameSize bounds the allocation a corrupt size field can cause; no
	// real VP8 frame at WebRTC resolutions comes near it.
	maxFrameSize = 8 << 20
	// maxFrameDur bounds a frame's duration: a longer gap in pts is a broken
	// file or a pause, and pacing to it would look like a dead stream.
	maxFrameDur = 10 * time.Second
)

// ivfReader reads VP8 frames from an IVF file. It parses the container itself
// rather than through pion's ivfreader because it needs the raw pts (pion
// rescales it) and must seek back to the first frame on every loop.
type ivfReader struct {
	rs        io.ReadSeeker
	br        *bufio.Reader
	dataStart int64
	num, den  uint64 // one pts unit is num/den seconds

	pending *ivfFrame // one frame of lookahead: a frame's duration is the next pts minus its own
	lastDur time.Duration
	defDur  time.Duration
	loop    looper
	hdrBuf  [ivfFrameHeaderLen]byte
}

type ivfFrame struct {
	data []byte
	pts  uint64
}

// NewIVFReader reads a VP8 IVF file, looping at the end; other fourccs are ErrUnsupportedCodec.
func NewIVFReader(rs io.ReadSeeker) (FrameReader, error) {
	r, err := newIVF(rs)
	if err != nil {
		return nil, err
	}
	r.rs = rs
	r.loop = looper{next: r.next, rewind: r.rewind}
	return r, nil
}

// newIVF reads the file header: what a looping and a live reader share.
func newIVF(rd io.Reader) (*ivfReader, error) {
	r := &ivfReader{br: bufio.NewReaderSize(rd, 64<<10)}
	var h [ivfFileHeaderLen]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return nil, fmt.Errorf("%w: IVF header: %v", ErrInvalid, err)
	}
	if string(h[0:4]) != "DKIF" {
		return nil, fmt.Errorf("%w: not an IVF file", ErrInvalid)
	}
	if fourcc := string(h[8:12]); fourcc != "VP80" {
		return nil, fmt.Errorf("%w: IVF fourcc %q (only VP80)", ErrUnsupportedCodec, fourcc)
	}
	hdrLen := int64(binary.LittleEndian.Uint16(h[6:8]))
	if hdrLen < ivfFileHeaderLen {
		hdrLen = ivfFileHeaderLen // some writers leave it zero
	}
	r.den = uint64(binary.LittleEndian.Uint32(h[16:20])) // "rate"
	r.num = uint64(binary.LittleEndian.Uint32(h[20:24])) // "scale"
	if r.den == 0 || r.num == 0 {
		return nil, fmt.Errorf("%w: IVF timebase %d/%d", ErrInvalid, r.num, r.den)
	}
	r.defDur = r.ptsDur(1)
	if r.defDur < time.Millisecond || r.defDur > time.Second {
		r.defDur = time.Second / 30 // a timebase much finer or coarser than a frame says nothing about frame rate
	}
	r.dataStart = hdrLen
	if _, err := r.br.Discard(int(hdrLen - ivfFileHeaderLen)); err != nil {
		return nil, fmt.Errorf("%w: IVF header: %v", ErrTruncated, err)
	}
	return r, nil
}

func (r *ivfReader) Codec() Codec { return VP8 }

func (r *ivfReader) ReadFrame() (Frame, error) { return r.loop.read() }

// ptsDur converts a pts difference to a duration, or 0 if it is not a
// plausible frame duration (corrupt or wrapping timestamps). Float math
// because delta×num×1e9 overflows uint64 for hostile headers; 53 bits are
// exact to the ns for any real frame.
func (r *ivfReader) ptsDur(delta uint64) time.Duration {
	d := float64(delta) * float64(r.num) / float64(r.den) * float64(time.Second)
	if !(d > 0 && d <= float64(maxFrameDur)) {
		return 0
	}
	return time.Duration(d)
}

func (r *ivfReader) rewind() error {
	if _, err := r.rs.Seek(r.dataStart, io.SeekStart); err != nil {
		return err
	}
	r.br.Reset(r.rs)
	r.pending = nil
	return nil
}

func (r *ivfReader) next() (Frame, error) {
	if r.pending == nil {
		f, err := r.readRaw()
		if err != nil {
			return Frame{}, err
		}
		r.pending = f
	}
	cur := r.pending
	nxt, err := r.readRaw()
	switch {
	case errors.Is(err, io.EOF):
		// The last frame has no successor: assume it lasts as long as the one
		// before, so the loop restarts on the clip's own cadence.
		r.pending = nil
		if r.lastDur == 0 {
			r.lastDur = r.defDur
		}
	case err != nil:
		return Frame{}, err
	default:
		r.pending = nxt
		if d := r.ptsDur(nxt.pts - cur.pts); nxt.pts > cur.pts && d > 0 {
			r.lastDur = d
		} else if r.lastDur == 0 {
			r.lastDur = r.defDur // pts going backwards or wild: keep the cadence we had
		}
	}
	return Frame{Data: cur.data, Duration: r.lastDur, Keyframe: vp8FrameIsKey(cur.data)}, nil
}

func (r *ivfReader) readRaw() (*ivfFrame, error) {
	n, err := io.ReadFull(r.br, r.hdrBuf[:])
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, fmt.Errorf("%w: IVF frame header (%d bytes): %v", ErrTruncated, n, err)
	}
	size := binary.LittleEndian.Uint32(r.hdrBuf[0:4])
	if size > maxFrameSize {
		return nil, fmt.Errorf("%w: IVF frame of %d bytes", ErrInvalid, size)
	}
	f := &ivfFrame{data: make([]byte, size), pts: binary.LittleEndian.Uint64(r.hdrBuf[4:12])}
	if _, err := io.ReadFull(r.br, f.data); err != nil {
		return nil, fmt.Errorf("%w: IVF frame of %d bytes: %v", ErrTruncated, size, err)
	}
	return f, nil
}

// vp8FrameIsKey reads the frame tag (RFC 6386 §9.1): bit 0 clear is a key frame.
func vp8FrameIsKey(frame []byte) bool {
	return len(frame) > 0 && frame[0]&0x01 == 0
}
