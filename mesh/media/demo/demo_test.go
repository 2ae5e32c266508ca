package demo

import (
	"testing"
	"time"

	"canopy/mesh/media"
)

func TestClip(t *testing.T) {
	if n := len(Video()) + len(Audio()); n > 1<<20 {
		t.Fatalf("demo clip is %d bytes, over 1 MB: it is embedded in every server binary", n)
	}
	video, audio, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	if video.Codec() != media.VP8 || audio.Codec() != media.Opus {
		t.Fatalf("codecs %s, %s", video.Codec().MimeType, audio.Codec().MimeType)
	}
	// One loop is 300 video frames (10 s at 30 fps, a keyframe every 2 s) and
	// 500 Opus packets of 20 ms; both loops must last the same, or audio and
	// video drift apart a little more on every repeat.
	vLoop, vKeys := loopLength(t, video, 300)
	aLoop, _ := loopLength(t, audio, 500)
	// 1/30 s is not a whole number of ns, so video is 100 ns short per loop:
	// under a millisecond a day. A whole audio packet (20 ms) would not be.
	if d := vLoop - aLoop; d < -time.Microsecond || d > time.Microsecond {
		t.Errorf("video loop %v, audio loop %v: they would drift apart", vLoop, aLoop)
	}
	if d := vLoop - 10*time.Second; d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("video loop %v, want 10s", vLoop)
	}
	if want := []int{0, 60, 120, 180, 240}; len(vKeys) != len(want) || vKeys[0] != 0 || vKeys[4] != 240 {
		t.Errorf("video keyframes at %v, want %v", vKeys, want)
	}
}

// loopLength reads one pass and checks that the next frame is the first again.
func loopLength(t *testing.T, r media.FrameReader, frames int) (time.Duration, []int) {
	t.Helper()
	var (
		total time.Duration
		keys  []int
		first []byte
	)
	for i := range frames + 1 {
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("%s frame %d: %v", r.Codec().MimeType, i, err)
		}
		if i == 0 {
			first = f.Data
		}
		if i == frames {
			if string(f.Data) != string(first) {
				t.Fatalf("%s: frame %d is not the first frame again", r.Codec().MimeType, i)
			}
			break
		}
		if f.Keyframe {
			keys = append(keys, i)
		}
		total += f.Duration
	}
	return total, keys
}
