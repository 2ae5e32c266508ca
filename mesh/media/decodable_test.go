package media

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/pion/rtp"
)

// testFrames reads n frames of each video test file, with its codec.
func testFrames(t *testing.T, n int) map[Codec][]Frame {
	t.Helper()
	ivf, err := NewIVFReader(bytes.NewReader(readTestdata(t, "short.ivf")))
	if err != nil {
		t.Fatal(err)
	}
	h264, err := NewH264Reader(bytes.NewReader(readTestdata(t, "short.h264")), 30)
	if err != nil {
		t.Fatal(err)
	}
	return map[Codec][]Frame{VP8: readN(t, ivf, n), H264: readN(t, h264, n)}
}

// TestDecodableRealFramesNotNoise: every frame of the test files parses,
// whole and packet by packet; random bytes of the same sizes almost never do.
func TestDecodableRealFramesNotNoise(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for c, frames := range testFrames(t, 90) {
		pk, err := NewPacketizer(c)
		if err != nil {
			t.Fatal(err)
		}
		check := NewFrameCheck(c.MimeType)
		noise := NewFrameCheck(c.MimeType)
		dec, noiseDec := NewDecoder(c.MimeType), NewDecoder(c.MimeType)
		passed, noisePackets := 0, 0
		for i, f := range frames {
			if !dec.Decodable(f.Data) {
				t.Errorf("%s frame %d (%d bytes, key %v) judged undecodable", c.MimeType, i, len(f.Data), f.Keyframe)
			}
			pkts := pk.Packetize(f)
			for j, p := range pkts {
				if got := check.Push(p); got != (j == len(pkts)-1) {
					t.Errorf("%s frame %d packet %d/%d: Push = %v", c.MimeType, i, j, len(pkts), got)
				}
			}
			junk := make([]byte, len(f.Data))
			for k := range junk {
				junk[k] = byte(rng.Uint32())
			}
			if c == H264 && len(junk) > 4 {
				copy(junk, annexBStartCode) // noise that at least frames as NAL units
			}
			if noiseDec.Decodable(junk) {
				passed++
			}
			for _, p := range pkts {
				g := *p
				g.Payload = make([]byte, len(p.Payload))
				for k := range g.Payload {
					g.Payload[k] = byte(rng.Uint32())
				}
				if noise.Push(&g) {
					noisePackets++
				}
			}
		}
		t.Logf("%s: %d of %d noise frames parse whole, %d packet by packet", c.MimeType, passed, len(frames), noisePackets)
		if passed > len(frames)/20 || noisePackets > len(frames)/20 {
			t.Errorf("%s: noise passes as frames: %d whole, %d by packets, of %d", c.MimeType, passed, noisePackets, len(frames))
		}
	}
}

// TestFrameCheckGapsDoNotCount: a frame with a packet missing, or one out
// of order, does not count; the next whole frame does.
func TestFrameCheckGapsDoNotCount(t *testing.T) {
	for c, frames := range testFrames(t, 60) {
		pk, err := NewPacketizer(c)
		if err != nil {
			t.Fatal(err)
		}
		var bigs [][]*rtp.Packet
		for _, f := range frames {
			if pkts := pk.Packetize(f); len(pkts) >= 3 {
				bigs = append(bigs, pkts)
			}
		}
		if len(bigs) < 2 {
			t.Fatalf("%s: too few frames of 3 packets or more", c.MimeType)
		}
		check := NewFrameCheck(c.MimeType)
		gap := append(append([]*rtp.Packet{}, bigs[0][:1]...), bigs[0][2:]...)
		for _, p := range gap {
			if check.Push(p) {
				t.Errorf("%s: a frame with a hole counted", c.MimeType)
			}
		}
		done := false
		for _, p := range bigs[1] {
			done = check.Push(p)
		}
		if !done {
			t.Errorf("%s: the whole frame after a hole did not count", c.MimeType)
		}
	}
}

// FuzzDecodable: whatever a parent sends, judging it never panics.
func FuzzDecodable(f *testing.F) {
	f.Add([]byte{0x90, 0x80, 0x01, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00}, true)
	f.Add([]byte{0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x65, 0x88}, false)
	f.Add([]byte{0x7c, 0x85, 0x88, 0x00}, false)
	f.Fuzz(func(t *testing.T, b []byte, vp8 bool) {
		mime := H264.MimeType
		if vp8 {
			mime = VP8.MimeType
		}
		_ = NewDecoder(mime).Decodable(b)
		c := NewFrameCheck(mime)
		for i := 0; i < len(b); i += 7 {
			p := &rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(i / 7), Marker: b[i]&1 == 1}, Payload: b[i:]}
			_ = c.Push(p)
		}
	})
}
