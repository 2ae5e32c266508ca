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
