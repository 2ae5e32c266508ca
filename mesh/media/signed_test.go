package media

import (
	"bytes"
	"testing"

	"github.com/pion/rtp"

	"canopy/mesh/framesig"
)

// assembleAll pushes packets through an Assembler and returns its frames.
func assembleAll(t *testing.T, c Codec, frames [][]*rtp.Packet) []Frame {
	t.Helper()
	var out []Frame
	a, err := NewAssembler(c, func(f Frame) { out = append(out, Frame{Data: bytes.Clone(f.Data)}) })
	if err != nil {
		t.Fatal(err)
	}
	for _, pkts := range frames {
		for _, p := range pkts {
			a.Push(p)
		}
	}
	a.Flush()
	return out
}

// TestVP8TrailerInMarkerPacket: whatever a frame's size, its last 75 bytes
// (a signature trailer) travel in its marker packet, packets stay within the
// MTU, and the assembler gives the frame back byte for byte.
func TestVP8TrailerInMarkerPacket(t *testing.T) {
	p, err := NewPacketizer(VP8)
	if err != nil {
		t.Fatal(err)
	}
	key := vp8Key(t)
	var sent [][]*rtp.Packet
	var want [][]byte
	for _, n := range []int{75, 100, 1196, 1197, 1200, 1250, 1271, 1272, 2392, 2393, 2400, 5000, 1196*3 + 1} {
		frame := append(bytes.Clone(key), make([]byte, n)...)
		for i := len(key); i < len(frame); i++ {
			frame[i] = byte(i)
		}
		pkts := p.Packetize(Frame{Data: frame, Duration: 33e6})
		last := pkts[len(pkts)-1]
		if !last.Marker {
			t.Fatalf("%d bytes: last packet has no marker", len(frame))
		}
		if got := len(last.Payload) - vp8DescriptorSize; got < keepTail {
			t.Fatalf("%d bytes: marker packet carries %d media bytes", len(frame), got)
		}
		if !bytes.HasSuffix(last.Payload, frame[len(frame)-keepTail:]) {
			t.Fatalf("%d bytes: the frame's tail is not in its marker packet", len(frame))
		}
		for _, q := range pkts {
			if b, _ := q.Marshal(); len(b) > MTU {
				t.Fatalf("%d bytes: a %d-byte packet", len(frame), len(b))
			}
		}
		sent, want = append(sent, pkts), append(want, frame)
	}
	got := assembleAll(t, VP8, sent)
	if len(got) != len(want) {
		t.Fatalf("%d frames assembled, %d sent", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i].Data, want[i]) {
			t.Fatalf("frame %d changed on the way", i)
		}
	}
}

// vp8Key is the start of a VP8 keyframe (so the assembler's decoder check
// passes): frame tag with the key bit clear, start code, 320x240.
func vp8Key(t *testing.T) []byte {
	t.Helper()
	return []byte{0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00}
}

// TestSignedH264SurvivesRTP: an access unit signed by a source verifies
// after pion's H264 packetizer (STAP-A for SPS/PPS, FU-A for large slices,
// AUD dropped) and the assembler.
func TestSignedH264SurvivesRTP(t *testing.T) {
	pub, priv, err := framesig.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := framesig.NewSigner(priv, H264.MimeType)
	v, _ := framesig.NewVerifier(pub, H264.MimeType)
	r, c, err := OpenFile("testdata/short.h264")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, _ := NewPacketizer(H264)
	var sent [][]*rtp.Packet
	frames := readN(t, r, 40)
	for _, f := range frames {
		f.Data = s.Sign(f.Data)
		sent = append(sent, p.Packetize(f))
	}
	got := assembleAll(t, H264, sent)
	if len(got) < len(frames)-1 { // the assembler may hold the last frame
		t.Fatalf("%d of %d frames assembled", len(got), len(frames))
	}
	for i, f := range got {
		media, _, err := v.Verify(f.Data)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if framesig.Hash(framesig.FormatSEI, media) != framesig.Hash(framesig.FormatSEI, frames[i].Data) {
			t.Fatalf("frame %d: media differs from what was signed", i)
		}
	}
}
