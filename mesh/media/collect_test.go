package media

import (
	"bytes"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// TestFrameCollector: frames come out whole, in order, as soon as their
// marker packet is in, across reordering; a frame with a lost packet is
// given up after collectWait and the frames behind it follow.
func TestFrameCollector(t *testing.T) {
	r, c, err := OpenFile("testdata/short.h264")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	frames := readN(t, r, 30)
	p, _ := NewPacketizer(H264)
	var pkts []*rtp.Packet
	var ends []int // index of each frame's last packet
	for _, f := range frames {
		pkts = append(pkts, p.Packetize(f)...)
		ends = append(ends, len(pkts)-1)
	}
	col, err := NewFrameCollector(H264)
	if err != nil {
		t.Fatal(err)
	}
	lost := ends[9] // frame 10's last packet never comes
	now := time.Now()
	var got []Collected
	for i := 0; i < len(pkts); i++ {
		j := i
		if i%7 == 3 && i+1 < len(pkts) { // swap neighbours now and then
			j = i + 1
			got = append(got, col.Push(pkts[j], now)...)
			j = i
			i++
		}
		if j != lost {
			got = append(got, col.Push(pkts[j], now)...)
		}
		if j == ends[4] && len(got) != 5 {
			t.Fatalf("after frame 5's marker: %d frames out", len(got))
		}
	}
	if len(got) != 9 {
		t.Fatalf("%d frames before the hole gave up, want 9", len(got))
	}
	// Time passes; the next packet gives the hole up.
	extra := p.Packetize(frames[0])
	for _, q := range extra {
		got = append(got, col.Push(q, now.Add(collectWait))...)
	}
	if len(got) != len(frames) { // all but the lost one, plus the extra
		t.Fatalf("%d frames, want %d", len(got), len(frames))
	}
	for i, g := range got[:len(frames)-1] {
		want := frames[i]
		if i >= 9 {
			want = frames[i+1]
		}
		if framesEqualNALs(g.Data, want.Data) == false {
			t.Fatalf("frame %d differs", i)
		}
	}
}

// framesEqualNALs compares two Annex-B access units NAL by NAL (the
// depacketizer writes 4-byte start codes and drops AUDs).
func framesEqualNALs(a, b []byte) bool {
	split := func(x []byte) [][]byte {
		var out [][]byte
		for _, n := range bytes.Split(x, []byte{0, 0, 1}) {
			n = bytes.TrimRight(n, "\x00")
			if len(n) > 0 && n[0]&0x1f != 9 {
				out = append(out, n)
			}
		}
		return out
	}
	na, nb := split(a), split(b)
	if len(na) != len(nb) {
		return false
	}
	for i := range na {
		if !bytes.Equal(na[i], nb[i]) {
			return false
		}
	}
	return true
}

// TestFrameCollectorDropsBrokenFrameTails: an H264 frame of several slices,
// each its own packet, whose first or middle packet is lost, is given up
// whole: the slices behind the hole are partition heads too, but they are
// not a frame (a signing source would sign and send a frame the encoder
// never made). The frame after it comes out.
func TestFrameCollectorDropsBrokenFrameTails(t *testing.T) {
	nal := func(seq uint16, ts uint32, typ byte, body string, marker bool) *rtp.Packet {
		return &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts, Marker: marker},
			Payload: append([]byte{0x60 | typ}, body...)}
	}
	pkts := []*rtp.Packet{
		nal(1, 1000, 5, "a1", false), nal(2, 1000, 5, "a2", true),
		nal(3, 2000, 1, "b1", false), nal(4, 2000, 1, "b2", false), nal(5, 2000, 1, "b3", true),
		nal(6, 3000, 1, "c1", true),
	}
	for _, lost := range []uint16{3, 4} {
		col, err := NewFrameCollector(H264)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		var got []uint32
		for _, p := range pkts {
			if p.SequenceNumber == lost {
				continue
			}
			at := now
			if p.SequenceNumber == 6 {
				at = now.Add(collectWait) // the hole is given up
			}
			for _, fr := range col.Push(p, at) {
				got = append(got, fr.Timestamp)
			}
		}
		if len(got) != 2 || got[0] != 1000 || got[1] != 3000 {
			t.Errorf("packet %d lost: frames %v out, want [1000 3000] (the broken frame given up whole)", lost, got)
		}
	}
}
