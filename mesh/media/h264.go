package media

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pion/webrtc/v4/pkg/media/h264reader"
)

// H264 NAL unit types this package cares about (ITU-T H.264 table 7-1).
const (
	nalSlice    = 1
	nalIDR      = 5
	nalSEI      = 6
	nalSPS      = 7
	nalPPS      = 8
	nalAUD      = 9
	nalStapA    = 24
	nalFuA      = 28
	nalTypeMask = 0x1f
)

var annexBStartCode = []byte{0, 0, 0, 1}

// h264Reader groups the NAL units of an Annex-B stream into access units, so
// one Frame is one picture: the SPS/PPS/SEI before a slice travel with it and
// a keyframe arrives complete with its parameter sets.
type h264Reader struct {
	rs      io.ReadSeeker
	nals    *h264reader.H264Reader
	dur     time.Duration
	pending *h264reader.NAL // first NAL of the next access unit, read one too far
	loop    looper
}

// NewH264Reader reads an Annex-B H264 stream at a fixed fps (raw H264 carries no timing), looping at the end.
func NewH264Reader(rs io.ReadSeeker, fps float64) (FrameReader, error) {
	if !(fps > 0 && fps <= 1000) {
		return nil, fmt.Errorf("media: H264 frame rate %v out of range", fps)
	}
	r := &h264Reader{rs: rs, dur: time.Duration(float64(time.Second) / fps)}
	if err := r.rewind(); err != nil {
		return nil, err
	}
	r.loop = looper{next: r.next, rewind: r.rewind}
	return r, nil
}

func (r *h264Reader) Codec() Codec { return H264 }

func (r *h264Reader) ReadFrame() (Frame, error) { return r.loop.read() }

func (r *h264Reader) rewind() error {
	if _, err := r.rs.Seek(0, io.SeekStart); err != nil {
		return err
	}
	nals, err := h264reader.NewReaderWithOptions(r.rs, h264reader.WithIncludeSEI(true))
	if err != nil {
		return err
	}
	r.nals, r.pending = nals, nil
	return nil
}

func (r *h264Reader) next() (Frame, error) {
	var (
		au       []byte
		seenVCL  bool
		keyframe bool
	)
	for {
		nal := r.pending
		r.pending = nil
		if nal == nil {
			var err error
			nal, err = r.nals.NextNAL()
			if errors.Is(err, io.EOF) {
				if len(au) == 0 {
					return Frame{}, io.EOF
				}
				break
			}
			if err != nil {
				return Frame{}, fmt.Errorf("%w: H264: %v", ErrInvalid, err)
			}
		}
		if nal.ForbiddenZeroBit || len(nal.Data) == 0 {
			return Frame{}, fmt.Errorf("%w: H264 NAL with forbidden bit set", ErrInvalid)
		}
		if seenVCL && startsAccessUnit(nal) {
			r.pending = nal
			break
		}
		switch nal.Data[0] & nalTypeMask {
		case nalIDR:
			keyframe = true
			seenVCL = true
		case nalSlice, 2, 3, 4: // non-IDR slice and data partitions
			seenVCL = true
		}
		au = append(au, annexBStartCode...)
		au = append(au, nal.Data...)
	}
	return Frame{Data: au, Duration: r.dur, Keyframe: keyframe}, nil
}

// startsAccessUnit reports whether a NAL that follows a picture's slices
// begins the next picture (H.264 §7.4.1.2.3, simplified for streams without
// redundant pictures): a non-VCL prefix NAL, or a slice whose
// first_mb_in_slice is 0 — ue(v) of 0 is a single 1 bit, the top bit of the
// byte after the NAL header.
func startsAccessUnit(nal *h264reader.NAL) bool {
	switch nal.Data[0] & nalTypeMask {
	case nalSEI, nalSPS, nalPPS, nalAUD, 14, 15:
		return true
	case nalSlice, nalIDR:
		return len(nal.Data) > 1 && nal.Data[1]&0x80 != 0
	}
	return false
}
