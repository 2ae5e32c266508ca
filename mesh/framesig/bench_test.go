package framesig

import (
	"math/rand/v2"
	"testing"
)

// Frame sizes: a 1.5 Mbit/s 30 fps VP8 delta frame is ~6 KB, a keyframe
// ~40 KB; a 20 ms Opus frame at 64 kbit/s is 160 bytes.
var benchFrames = []struct {
	name, mime string
	size       int
}{
	{"opus-160B", "audio/opus", 160},
	{"vp8-6KB", "video/VP8", 6000},
	{"vp8-40KB", "video/VP8", 40000},
	{"h264-6KB", "video/H264", 6000},
}

func benchFrame(mime string, n int) []byte {
	r := rand.New(rand.NewPCG(5, 6))
	b := randomBytes(r, n)
	if mime == "video/H264" {
		// One IDR slice with no start code inside it.
		b = append([]byte{0, 0, 0, 1, 0x65}, b...)
		for i := 5; i < len(b); i++ {
			if b[i] == 0 {
				b[i] = 1
			}
		}
	}
	return b
}

// BenchmarkSign reports the CPU a source spends per frame and the bytes a
// signature adds.
func BenchmarkSign(b *testing.B) {
	_, priv := testKey(b)
	for _, c := range benchFrames {
		b.Run(c.name, func(b *testing.B) {
			s, _ := NewSigner(priv, c.mime)
			frame := benchFrame(c.mime, c.size)
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			var out []byte
			for b.Loop() {
				out = s.Sign(frame)
			}
			b.ReportMetric(float64(len(out)-len(frame)), "B-added/frame")
		})
	}
}

// BenchmarkVerify reports the CPU a viewer spends per frame.
func BenchmarkVerify(b *testing.B) {
	pub, priv := testKey(b)
	for _, c := range benchFrames {
		b.Run(c.name, func(b *testing.B) {
			s, _ := NewSigner(priv, c.mime)
			frame := benchFrame(c.mime, c.size)
			signed := make([][]byte, 1024)
			for i := range signed {
				signed[i] = s.Sign(frame)
			}
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			v, _ := NewVerifier(pub, c.mime)
			i := 0
			for b.Loop() {
				if i == len(signed) { // counters must rise: start over with a fresh verifier
					v, _ = NewVerifier(pub, c.mime)
					i = 0
				}
				if _, _, err := v.Verify(signed[i]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
