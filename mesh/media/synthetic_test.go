package media

import (
	"testing"

	"github.com/pion/rtp"
)

// TestSyntheticVP8Frames: numbering runs on, the marker ends each frame,
// and the keyframe detector sees a keyframe every 30 frames only.
func TestSyntheticVP8Frames(t *testing.T) {
	s := SyntheticVP8{Payload: make([]byte, 100), Packets: 3}
	var seqs []uint16
	for i := range 31 {
		n := 0
		_ = s.WriteFrame(i, func(p *rtp.Packet) error {
			seqs = append(seqs, p.SequenceNumber)
			if p.Timestamp != uint32(i)*3000 || p.Marker != (n == 2) {
				t.Fatalf("frame %d packet %d: ts %d marker %v", i, n, p.Timestamp, p.Marker)
			}
			if key := IsVP8Keyframe(p.Payload); key != (n == 0 && i%30 == 0) {
				t.Fatalf("frame %d packet %d: keyframe %v", i, n, key)
			}
			n++
			return nil
		})
	}
	for k := 1; k < len(seqs); k++ {
		if seqs[k] != seqs[k-1]+1 {
			t.Fatalf("sequence jumps at %d: %v", k, seqs[k-1:k+1])
		}
	}
}
