package media

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRecorderRoundTrip(t *testing.T) {
	tests := []struct {
		file, out string
		perLoop   int
		open      func([]byte) (FrameReader, error)
	}{
		{"short.ivf", "rec.ivf", 30, func(b []byte) (FrameReader, error) { return NewIVFReader(bytes.NewReader(b)) }},
		{"short.ogg", "rec.ogg", 50, func(b []byte) (FrameReader, error) { return NewOggReader(bytes.NewReader(b)) }},
		{"short.h264", "rec.h264", 30, func(b []byte) (FrameReader, error) { return NewH264Reader(bytes.NewReader(b), 30) }},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			src, err := tt.open(readTestdata(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			_, perFrame, sent := packetizeLoops(t, src, tt.perLoop)
			path := filepath.Join(t.TempDir(), tt.out)
			rec, err := NewRecorder(path, src.Codec())
			if err != nil {
				t.Fatal(err)
			}
			for _, pkts := range perFrame {
				for _, p := range pkts {
					if err := rec.WriteRTP(p); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := rec.Close(); err != nil {
				t.Fatal(err)
			}
			back, closer, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer closer.Close()
			// The writers may hold back the last frame (they learn a frame is
			// complete from the next one), so compare all but that.
			for i, want := range sent[:len(sent)-1] {
				got, err := back.ReadFrame()
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if !bytes.Equal(got.Data, want.Data) {
					t.Fatalf("frame %d: recorded %d bytes, sent %d", i, len(got.Data), len(want.Data))
				}
			}
		})
	}
	if _, err := NewRecorder(filepath.Join(t.TempDir(), "x"), Codec{MimeType: "video/AV1"}); !errors.Is(err, ErrUnsupportedCodec) {
		t.Errorf("AV1: %v, want ErrUnsupportedCodec", err)
	}
	if _, err := NewRecorder(filepath.Join(t.TempDir(), "no", "such", "dir.ivf"), VP8); err == nil {
		t.Error("recording into a missing directory: want an error")
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Logf("missing directory: %v", err)
	}
}

// TestFrameRecorderRoundTrip: frames written whole (as a viewer plays
// them) read back byte for byte, from the first keyframe on.
func TestFrameRecorderRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		file, out string
		open      func([]byte) (FrameReader, error)
	}{
		{"short.ivf", "frames.ivf", func(b []byte) (FrameReader, error) { return NewIVFReader(bytes.NewReader(b)) }},
		{"short.h264", "frames.h264", func(b []byte) (FrameReader, error) { return NewH264Reader(bytes.NewReader(b), 30) }},
	} {
		t.Run(tt.file, func(t *testing.T) {
			src, err := tt.open(readTestdata(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), tt.out)
			rec, err := NewFrameRecorder(path, src.Codec())
			if err != nil {
				t.Fatal(err)
			}
			var sent []Frame
			for i := range 45 {
				f, err := src.ReadFrame()
				if err != nil {
					t.Fatal(err)
				}
				f.Timestamp = uint32(0xffff0000 + i*3000) // wraps
				f.Data = bytes.Clone(f.Data)
				if i == 0 && f.Keyframe {
					// Start past the keyframe: the recorder waits for the next.
					continue
				}
				if err := rec.WriteFrame(f); err != nil {
					t.Fatal(err)
				}
				if f.Keyframe || len(sent) > 0 {
					sent = append(sent, f)
				}
			}
			if err := rec.Close(); err != nil {
				t.Fatal(err)
			}
			if len(sent) == 0 {
				t.Fatal("no keyframe after the first in 45 frames of the clip")
			}
			back, closer, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer closer.Close()
			for i, want := range sent[:len(sent)-1] { // the H264 reader learns a frame ended from the next
				got, err := back.ReadFrame()
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if !bytes.Equal(got.Data, want.Data) {
					t.Fatalf("frame %d: recorded %d bytes, sent %d", i, len(got.Data), len(want.Data))
				}
			}
		})
	}
}
