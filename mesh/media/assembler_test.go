package media

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/pion/rtp"
)

// roundTrip sends n frames of r through a Packetizer and an Assembler,
// pushing packets in the order push chooses, and returns what came out.
func roundTrip(t *testing.T, r FrameReader, n int, push func(a *Assembler, pkts []*rtp.Packet)) ([]Frame, []Frame, *Assembler) {
	t.Helper()
	_, perFrame, sent := packetizeLoops(t, r, n)
	var got []Frame
	a, err := NewAssembler(r.Codec(), func(f Frame) { got = append(got, f) })
	if err != nil {
		t.Fatal(err)
	}
	var all []*rtp.Packet
	for _, pkts := range perFrame {
		all = append(all, pkts...)
	}
	push(a, all)
	a.Flush()
	return sent, got, a
}

func pushAll(a *Assembler, pkts []*rtp.Packet) {
	for _, p := range pkts {
		a.Push(p)
	}
}

func TestAssemblerRoundTrip(t *testing.T) {
	tests := []struct {
		file    string
		open    func([]byte) (FrameReader, error)
		perLoop int
	}{
		// VP8 is the contract viewers rely on: hash a frame, compare with the source.
		{"short.ivf", func(b []byte) (FrameReader, error) { return NewIVFReader(bytes.NewReader(b)) }, 30},
		{"short.h264", func(b []byte) (FrameReader, error) { return NewH264Reader(bytes.NewReader(b), 30) }, 30},
		{"short.ogg", func(b []byte) (FrameReader, error) { return NewOggReader(bytes.NewReader(b)) }, 50},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			r, err := tt.open(readTestdata(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			n := 2*tt.perLoop + 3 // crosses two loop boundaries
			sent, got, a := roundTrip(t, r, n, pushAll)
			if len(got) != len(sent) {
				t.Fatalf("assembled %d frames, sent %d", len(got), len(sent))
			}
			for i := range sent {
				if sha256.Sum256(got[i].Data) != sha256.Sum256(sent[i].Data) {
					t.Fatalf("frame %d (loop %d): %d bytes assembled differ from %d sent",
						i, i/tt.perLoop, len(got[i].Data), len(sent[i].Data))
				}
				if got[i].Keyframe != sent[i].Keyframe {
					t.Fatalf("frame %d: keyframe %v, sent %v", i, got[i].Keyframe, sent[i].Keyframe)
				}
				// The last frame's duration is unknown to the receiver (no successor).
				if i < len(sent)-1 && absDur(got[i].Duration-sent[i].Duration) > 50_000 {
					t.Errorf("frame %d: duration %v, sent %v", i, got[i].Duration, sent[i].Duration)
				}
			}
			st := a.Stats()
			if st.Frames != uint64(n) || st.Lost != 0 {
				t.Errorf("stats %+v, want %d frames and no loss", st, n)
			}
		})
	}
}

func absDur[T ~int64](d T) T {
	if d < 0 {
		return -d
	}
	return d
}

func TestAssemblerLossAndReorder(t *testing.T) {
	open := func() FrameReader {
		r, err := NewIVFReader(bytes.NewReader(readTestdata(t, "short.ivf")))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// Swapping neighbours is reordering, not loss: every frame still arrives.
	// (Not the very first two packets: samplebuilder anchors on the first
	// packet it sees and drops a frame that turns out to start earlier.)
	sent, got, a := roundTrip(t, open(), 40, func(a *Assembler, pkts []*rtp.Packet) {
		for i := 1; i+1 < len(pkts); i += 7 {
			pkts[i], pkts[i+1] = pkts[i+1], pkts[i]
		}
		pushAll(a, pkts)
	})
	if len(got) != len(sent) || a.Stats().Lost != 0 {
		t.Fatalf("reordered: %d of %d frames, stats %+v", len(got), len(sent), a.Stats())
	}

	// Dropping the first packet of frame 20 loses exactly that frame and is
	// counted; nothing corrupt is delivered.
	var lostFrame []byte
	sent, got, a = roundTrip(t, open(), 40, func(a *Assembler, pkts []*rtp.Packet) {
		frame := 0
		for i, p := range pkts {
			if frame == 20 && (i == 0 || pkts[i-1].Marker) {
				lostFrame = p.Payload
			} else {
				a.Push(p)
			}
			if p.Marker {
				frame++
			}
		}
	})
	if lostFrame == nil {
		t.Fatal("test did not drop a packet")
	}
	if st := a.Stats(); st.Lost != 1 || st.Frames != uint64(len(sent)-1) || st.Dropped == 0 {
		t.Fatalf("after one lost packet: stats %+v, sent %d frames", st, len(sent))
	}
	source := map[[32]byte]bool{}
	for _, f := range sent {
		source[sha256.Sum256(f.Data)] = true
	}
	for i, f := range got {
		if !source[sha256.Sum256(f.Data)] {
			t.Fatalf("assembled frame %d matches no source frame", i)
		}
	}
}

func TestAssemblerSequenceWrap(t *testing.T) {
	a, err := NewAssembler(Opus, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint16{65533, 65534, 65535, 1, 2, 0} { // 0 arrives late
		a.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: uint32(seq) * 960}, Payload: []byte{0xfc, 1}})
	}
	if st := a.Stats(); st.Packets != 6 || st.Lost != 0 {
		t.Fatalf("stats %+v, want 6 packets, none lost", st)
	}
	a.Push(&rtp.Packet{Header: rtp.Header{SequenceNumber: 5, Timestamp: 5 * 960}, Payload: []byte{0xfc, 1}})
	if st := a.Stats(); st.Lost != 2 {
		t.Fatalf("stats %+v, want 2 lost (3 and 4)", st)
	}
	if _, err := NewAssembler(Codec{MimeType: "video/AV1", ClockRate: 90000}, nil); err == nil {
		t.Error("AV1 assembler: want an error")
	}
}

func TestIsKeyframe(t *testing.T) {
	tests := []struct {
		name    string
		mime    string
		payload []byte
		want    bool
	}{
		{"vp8 key, no extension", "video/VP8", []byte{0x10, 0x50}, true},
		{"vp8 key, 15-bit picture id", "video/vp8", []byte{0x90, 0x80, 0x81, 0x23, 0x50}, true},
		{"vp8 key, 7-bit picture id", "video/VP8", []byte{0x90, 0x80, 0x11, 0x50}, true},
		{"vp8 key, pid + tl0 + tid", "video/VP8", []byte{0x90, 0xe0, 0x11, 0x05, 0x40, 0x50}, true},
		{"vp8 delta frame", "video/VP8", []byte{0x90, 0x80, 0x81, 0x23, 0x51}, false},
		{"vp8 key, not first packet", "video/VP8", []byte{0x80, 0x80, 0x81, 0x23, 0x50}, false},
		{"vp8 key, partition 1", "video/VP8", []byte{0x11, 0x50}, false},
		{"vp8 truncated descriptor", "video/VP8", []byte{0x90, 0x80, 0x81}, false},
		{"vp8 empty", "video/VP8", nil, false},
		{"h264 idr", "video/H264", []byte{0x65, 0x88}, true},
		{"h264 sps", "video/H264", []byte{0x67, 0x42}, true},
		{"h264 non-idr slice", "video/H264", []byte{0x41, 0x9a}, false},
		{"h264 stap-a sps+pps", "video/H264", []byte{0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce}, true},
		{"h264 stap-a sei+slice", "video/H264", []byte{0x78, 0, 2, 0x06, 0x05, 0, 2, 0x41, 0x9a}, false},
		{"h264 stap-a bad length", "video/H264", []byte{0x78, 0, 9, 0x67}, false},
		{"h264 fu-a idr start", "video/H264", []byte{0x7c, 0x85, 0x88}, true},
		{"h264 fu-a idr middle", "video/H264", []byte{0x7c, 0x05, 0x88}, false},
		{"h264 fu-a slice start", "video/H264", []byte{0x5c, 0x81, 0x9a}, false},
		{"h264 fu-a short", "video/H264", []byte{0x7c}, false},
		{"opus", "audio/opus", []byte{0xfc}, true},
		{"unknown video", "video/AV1", []byte{0x10}, false},
	}
	for _, tt := range tests {
		if got := IsKeyframe(tt.mime, tt.payload); got != tt.want {
			t.Errorf("%s: IsKeyframe = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestIsKeyframeOnPacketizedClip(t *testing.T) {
	// On real packets: exactly the first packet of each keyframe qualifies
	// for VP8; for H264 the STAP-A with SPS/PPS that starts each IDR does.
	for _, tt := range []struct {
		file string
		open func([]byte) (FrameReader, error)
	}{
		{"short.ivf", func(b []byte) (FrameReader, error) { return NewIVFReader(bytes.NewReader(b)) }},
		{"short.h264", func(b []byte) (FrameReader, error) { return NewH264Reader(bytes.NewReader(b), 30) }},
	} {
		r, err := tt.open(readTestdata(t, tt.file))
		if err != nil {
			t.Fatal(err)
		}
		_, perFrame, frames := packetizeLoops(t, r, 30)
		for i, pkts := range perFrame {
			if got := IsKeyframe(r.Codec().MimeType, pkts[0].Payload); got != frames[i].Keyframe {
				t.Errorf("%s frame %d: first packet IsKeyframe %v, frame keyframe %v", tt.file, i, got, frames[i].Keyframe)
			}
			if r.Codec() == VP8 {
				for j, p := range pkts[1:] {
					if IsKeyframe("video/VP8", p.Payload) {
						t.Errorf("frame %d packet %d: continuation reported as keyframe", i, j+1)
					}
				}
			}
		}
	}
}
