package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readN reads n frames, failing the test on any error.
func readN(t testing.TB, r FrameReader, n int) []Frame {
	t.Helper()
	out := make([]Frame, 0, n)
	for i := range n {
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		out = append(out, f)
	}
	return out
}

func TestReaders(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		open      func(io.ReadSeeker) (FrameReader, error)
		codec     Codec
		perLoop   int
		keyframes []int // indexes of keyframes in one pass
		duration  time.Duration
	}{
		{"ivf", "short.ivf", NewIVFReader, VP8, 30, []int{0, 15}, time.Second / 30},
		{"h264", "short.h264", func(rs io.ReadSeeker) (FrameReader, error) { return NewH264Reader(rs, 30) }, H264, 30, []int{0, 15}, time.Second / 30},
		{"ogg", "short.ogg", NewOggReader, Opus, 50, nil, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := tt.open(bytes.NewReader(readTestdata(t, tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			if r.Codec() != tt.codec {
				t.Fatalf("codec %+v, want %+v", r.Codec(), tt.codec)
			}
			// Three passes: the loop must repeat the same frames, byte for byte.
			frames := readN(t, r, 3*tt.perLoop)
			var keys []int
			var total time.Duration
			for i, f := range frames[:tt.perLoop] {
				if len(f.Data) == 0 {
					t.Errorf("frame %d empty", i)
				}
				if d := f.Duration - tt.duration; d < -time.Microsecond || d > time.Microsecond {
					t.Errorf("frame %d lasts %v, want %v", i, f.Duration, tt.duration)
				}
				if f.Keyframe {
					keys = append(keys, i)
				}
				total += f.Duration
			}
			if tt.keyframes != nil && !equalInts(keys, tt.keyframes) {
				t.Errorf("keyframes at %v, want %v", keys, tt.keyframes)
			}
			if d := total - time.Second; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("one pass lasts %v, want 1s", total)
			}
			for i := tt.perLoop; i < len(frames); i++ {
				a, b := frames[i], frames[i%tt.perLoop]
				if !bytes.Equal(a.Data, b.Data) || a.Keyframe != b.Keyframe || a.Duration != b.Duration {
					t.Fatalf("frame %d differs from frame %d of the first pass", i, i%tt.perLoop)
				}
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestH264AccessUnits(t *testing.T) {
	// The test clip has two slices per picture (x264 sliced threads) and
	// SPS/PPS/SEI before the first IDR: all of it must land in one frame.
	r, err := NewH264Reader(bytes.NewReader(readTestdata(t, "short.h264")), 30)
	if err != nil {
		t.Fatal(err)
	}
	f := readN(t, r, 2)
	if got := nalTypes(f[0].Data); !equalInts(got, []int{7, 8, 6, 5, 5}) {
		t.Errorf("first access unit NAL types %v, want [7 8 6 5 5]", got)
	}
	if got := nalTypes(f[1].Data); !equalInts(got, []int{1, 1}) {
		t.Errorf("second access unit NAL types %v, want [1 1]", got)
	}
}

func nalTypes(annexB []byte) []int {
	var types []int
	for i := 0; i+3 < len(annexB); i++ {
		if annexB[i] == 0 && annexB[i+1] == 0 && annexB[i+2] == 1 {
			types = append(types, int(annexB[i+3]&nalTypeMask))
			i += 2
		}
	}
	return types
}

func TestReaderErrors(t *testing.T) {
	ivf := readTestdata(t, "short.ivf")
	ogg := readTestdata(t, "short.ogg")

	vp9 := bytes.Clone(ivf)
	copy(vp9[8:12], "VP90")
	badCRC := bytes.Clone(ogg)
	badCRC[len(badCRC)-10] ^= 0xff
	badSig := bytes.Clone(ivf)
	badSig[0] = 'X'

	h264 := func(rs io.ReadSeeker) (FrameReader, error) { return NewH264Reader(rs, 30) }
	tests := []struct {
		name    string
		open    func(io.ReadSeeker) (FrameReader, error)
		data    []byte
		openErr error // error from the constructor
		readErr error // otherwise, the error some ReadFrame returns
	}{
		{"ivf empty file", NewIVFReader, nil, ErrInvalid, nil},
		{"ivf bad signature", NewIVFReader, badSig, ErrInvalid, nil},
		{"ivf not VP8", NewIVFReader, vp9, ErrUnsupportedCodec, nil},
		{"ivf header only", NewIVFReader, ivf[:32], nil, ErrNoFrames},
		{"ivf cut in a frame", NewIVFReader, ivf[:len(ivf)/2], nil, ErrTruncated},
		{"ivf cut in a frame header", NewIVFReader, ivf[:32+12+5], nil, ErrTruncated},
		{"ogg not ogg", NewOggReader, ivf, ErrInvalid, nil},
		{"ogg bad checksum", NewOggReader, badCRC, nil, ErrInvalid},
		{"ogg cut in a page", NewOggReader, ogg[:len(ogg)-7], nil, ErrTruncated},
		{"h264 not annex-b", h264, []byte("this is not a video"), nil, ErrInvalid},
		{"h264 empty", h264, nil, nil, ErrNoFrames},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := tt.open(bytes.NewReader(tt.data))
			if tt.openErr != nil || err != nil {
				if !errors.Is(err, tt.openErr) {
					t.Fatalf("open: %v, want %v", err, tt.openErr)
				}
				return
			}
			for i := range 1000 {
				if _, err = r.ReadFrame(); err != nil {
					break
				}
				if i == 999 {
					t.Fatal("no error after 1000 frames")
				}
			}
			if !errors.Is(err, tt.readErr) {
				t.Fatalf("read: %v, want %v", err, tt.readErr)
			}
		})
	}
}

func TestOpenFile(t *testing.T) {
	for _, name := range []string{"short.ivf", "short.h264", "short.ogg"} {
		r, c, err := OpenFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := r.ReadFrame(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}
	if _, _, err := OpenFile("clip.mp4"); !errors.Is(err, ErrUnknownFormat) {
		t.Errorf("mp4: %v, want ErrUnknownFormat", err)
	}
	if _, _, err := OpenFile(filepath.Join(t.TempDir(), "missing.ivf")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want not-exist", err)
	}
}

func TestOpusPacketDuration(t *testing.T) {
	tests := []struct {
		pkt  []byte
		want time.Duration
	}{
		{[]byte{0xfc, 0}, 20 * time.Millisecond},           // CELT FB 20 ms, code 0 (libopus default)
		{[]byte{0xf8 | 1, 0}, 40 * time.Millisecond},       // CELT 20 ms, two frames
		{[]byte{0x0b << 3, 0}, 60 * time.Millisecond},      // SILK 60 ms
		{[]byte{0x10<<3 | 3, 3}, 7500 * time.Microsecond},  // CELT 2.5 ms x3
		{[]byte{0x0f << 3}, 20 * time.Millisecond},         // hybrid 20 ms
		{[]byte{0x1a<<3 | 3, 0x08}, 80 * time.Millisecond}, // CELT 10 ms x8
		{[]byte{0x1f<<3 | 3, 0x3f}, 0},                     // 63 x 20 ms: over 120 ms, invalid
		{[]byte{0x1f<<3 | 3}, 0},                           // code 3 without count
		{nil, 0},                                           // empty
	}
	for _, tt := range tests {
		got, err := opusPacketDuration(tt.pkt)
		if tt.want == 0 {
			if err == nil {
				t.Errorf("% x: got %v, want an error", tt.pkt, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("% x: got %v, %v; want %v", tt.pkt, got, err, tt.want)
		}
	}
}

// oggPage builds one Ogg page; segments are lacing values, body their bytes.
func oggPage(flags byte, seq uint32, lacing []byte, body []byte) []byte {
	h := make([]byte, oggPageHeaderLen, oggPageHeaderLen+len(lacing)+len(body))
	copy(h, "OggS")
	h[5] = flags
	binary.LittleEndian.PutUint32(h[14:], 7) // serial
	binary.LittleEndian.PutUint32(h[18:], seq)
	h[26] = byte(len(lacing))
	binary.LittleEndian.PutUint32(h[22:], oggCRC(h, lacing, body))
	return append(append(h, lacing...), body...)
}

func TestOggPacketAcrossPages(t *testing.T) {
	head := append([]byte("OpusHead"), 1, 2, 0x38, 1, 0x80, 0xbb, 0, 0, 0, 0, 0)
	tags := append([]byte("OpusTags"), 0, 0, 0, 0, 0, 0, 0, 0)
	big := bytes.Repeat([]byte{0xfc}, 300) // 20 ms CELT packet, 255+45 bytes
	small := []byte{0xfc, 1, 2}
	var file []byte
	file = append(file, oggPage(0x02, 0, []byte{byte(len(head))}, head)...)
	file = append(file, oggPage(0, 1, []byte{byte(len(tags))}, tags)...)
	// small, then big split 255 | 45 over two pages, then small again.
	file = append(file, oggPage(0, 2, []byte{3, 255}, append(bytes.Clone(small), big[:255]...))...)
	rest := append(bytes.Clone(big[255:]), small...)
	prefix := bytes.Clone(file)
	file = append(file, oggPage(oggContinued, 3, []byte{45, 3}, rest)...)

	r, err := NewOggReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{small, big, small, small} // the fourth is the loop restarting
	for i, w := range want {
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !bytes.Equal(f.Data, w) || f.Duration != 20*time.Millisecond {
			t.Fatalf("packet %d: %d bytes / %v, want %d bytes / 20ms", i, len(f.Data), f.Duration, len(w))
		}
	}

	// A page that should continue a packet but does not say so is corrupt.
	r, err = NewOggReader(bytes.NewReader(append(prefix, oggPage(0, 3, []byte{45, 3}, rest)...)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadFrame(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("missing continuation: %v, want ErrInvalid", err)
	}
}
