package media

import (
	"bytes"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// packetizeLoops reads n frames (crossing loop boundaries) and packetizes them.
func packetizeLoops(t testing.TB, r FrameReader, n int) (*Packetizer, [][]*rtp.Packet, []Frame) {
	t.Helper()
	p, err := NewPacketizer(r.Codec())
	if err != nil {
		t.Fatal(err)
	}
	frames := readN(t, r, n)
	out := make([][]*rtp.Packet, len(frames))
	for i, f := range frames {
		out[i] = p.Packetize(f)
	}
	return p, out, frames
}

func TestPacketizerContinuousAcrossLoops(t *testing.T) {
	tests := []struct {
		file    string
		open    func(b []byte) (FrameReader, error)
		perLoop int
		ticks   uint32 // timestamp step per frame
	}{
		{"short.ivf", func(b []byte) (FrameReader, error) { return NewIVFReader(bytes.NewReader(b)) }, 30, 3000},
		{"short.h264", func(b []byte) (FrameReader, error) { return NewH264Reader(bytes.NewReader(b), 30) }, 30, 3000},
		{"short.ogg", func(b []byte) (FrameReader, error) { return NewOggReader(bytes.NewReader(b)) }, 50, 960},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			r, err := tt.open(readTestdata(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			p, frames, _ := packetizeLoops(t, r, 2*tt.perLoop+5)
			var prev *rtp.Packet
			for i, pkts := range frames {
				if len(pkts) == 0 {
					t.Fatalf("frame %d: no packets", i)
				}
				for j, pkt := range pkts {
					if pkt.SSRC != p.SSRC() || pkt.PayloadType != r.Codec().PayloadType {
						t.Fatalf("frame %d: ssrc %d pt %d", i, pkt.SSRC, pkt.PayloadType)
					}
					if len(pkt.Payload)+12 > MTU {
						t.Fatalf("frame %d: packet of %d bytes over the MTU", i, len(pkt.Payload)+12)
					}
					if pkt.Marker != (j == len(pkts)-1) {
						t.Fatalf("frame %d packet %d: marker %v", i, j, pkt.Marker)
					}
					if prev != nil {
						if pkt.SequenceNumber != prev.SequenceNumber+1 {
							t.Fatalf("frame %d: seq %d after %d", i, pkt.SequenceNumber, prev.SequenceNumber)
						}
						want := prev.Timestamp
						if j == 0 {
							want += tt.ticks
						}
						if pkt.Timestamp != want {
							t.Fatalf("frame %d (loop %d): ts %d after %d, want %d",
								i, i/tt.perLoop, pkt.Timestamp, prev.Timestamp, want)
						}
					}
					prev = pkt
				}
			}
		})
	}
}

func TestPacketizerTicksDoNotDrift(t *testing.T) {
	p, err := NewPacketizer(VP8)
	if err != nil {
		t.Fatal(err)
	}
	// 1/30 s is 33333333 ns, 2999.99997 ticks: truncating each frame would
	// lose a tick per frame; rounding each would gain 0.3 µs per frame.
	const n = 100000
	d := time.Second / 30
	var sum uint64
	for i := range n {
		step := p.ticks(d)
		if i < 1000 && step != 3000 {
			t.Fatalf("frame %d: %d ticks, want 3000", i, step)
		}
		sum += uint64(step)
	}
	exact := float64(n) * float64(d) * 90000 / float64(time.Second)
	if diff := float64(sum) - exact; diff < -1 || diff > 1 {
		t.Fatalf("%d frames advanced %d ticks, want %.1f", n, sum, exact)
	}
	if _, err := NewPacketizer(Codec{MimeType: "video/AV1", ClockRate: 90000}); err == nil {
		t.Error("AV1 packetizer: want an error")
	}
}

func BenchmarkPacketize(b *testing.B) {
	for _, tt := range []struct {
		name string
		file string
		open func([]byte) (FrameReader, error)
	}{
		{"vp8", "short.ivf", func(d []byte) (FrameReader, error) { return NewIVFReader(bytes.NewReader(d)) }},
		{"h264", "short.h264", func(d []byte) (FrameReader, error) { return NewH264Reader(bytes.NewReader(d), 30) }},
		{"opus", "short.ogg", func(d []byte) (FrameReader, error) { return NewOggReader(bytes.NewReader(d)) }},
	} {
		b.Run(tt.name, func(b *testing.B) {
			r, err := tt.open(readTestdata(b, tt.file))
			if err != nil {
				b.Fatal(err)
			}
			frames := readN(b, r, 30)
			p, err := NewPacketizer(r.Codec())
			if err != nil {
				b.Fatal(err)
			}
			var bytes, pkts int
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				f := frames[i%len(frames)]
				pkts += len(p.Packetize(f))
				bytes += len(f.Data)
			}
			b.SetBytes(int64(bytes / max(b.N, 1)))
			b.ReportMetric(float64(pkts)/float64(b.N), "pkts/frame")
		})
	}
}
