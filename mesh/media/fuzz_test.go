package media

import (
	"bytes"
	"io"
	"testing"
)

// Decoders see files users hand to `client broadcast`: whatever the bytes,
// they must return frames or an error, never panic or spin.

func fuzzReader(f *testing.F, seeds []string, open func(io.ReadSeeker) (FrameReader, error)) {
	for _, s := range seeds {
		b := readTestdata(f, s)
		f.Add(b)
		f.Add(b[:len(b)/3])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := open(bytes.NewReader(data))
		if err != nil {
			return
		}
		for range 200 { // a few loops of a tiny file, or part of a big one
			fr, err := r.ReadFrame()
			if err != nil {
				return
			}
			if fr.Duration < 0 {
				t.Fatalf("negative duration %v", fr.Duration)
			}
		}
	})
}

func FuzzIVFReader(f *testing.F) { fuzzReader(f, []string{"short.ivf"}, NewIVFReader) }

func FuzzOggReader(f *testing.F) { fuzzReader(f, []string{"short.ogg"}, NewOggReader) }

func FuzzH264Reader(f *testing.F) {
	fuzzReader(f, []string{"short.h264"}, func(rs io.ReadSeeker) (FrameReader, error) { return NewH264Reader(rs, 30) })
}

func FuzzIsKeyframe(f *testing.F) {
	for _, p := range [][]byte{{0x90, 0x80, 0x81, 0x23, 0x50}, {0x78, 0, 2, 0x67, 0x42}, {0x7c, 0x85}} {
		f.Add("video/VP8", p)
		f.Add("video/H264", p)
	}
	f.Fuzz(func(t *testing.T, mime string, payload []byte) {
		IsKeyframe(mime, payload)
	})
}
