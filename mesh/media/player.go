package media

import (
	"context"
	"time"

	"github.com/pion/rtp"
)

// maxLag is how far behind schedule Play may fall (a stalled consumer, a
// suspended process) before it gives up catching up and restarts its clock;
// catching up would burst that much media into the network at once.
const maxLag = time.Second

// Play reads frames from r, packetizes them with p and hands each frame's
// packets to out at the frame's time, until ctx ends (returning ctx.Err()) or
// r or out fails (a live reader's io.EOF included). Frame n is due at start
// + the durations of frames 0..n-1 (+ the gaps of frames 1..n, for live
// readers), measured on the monotonic clock, so timer lateness never
// accumulates.
func Play(ctx context.Context, r FrameReader, p *Packetizer, out func(pkts []*rtp.Packet, f Frame) error) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	start := time.Now()
	var due time.Duration // media time of the next frame, relative to start
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := r.ReadFrame()
		if err != nil {
			return err
		}
		pkts := p.Packetize(f)
		due += f.Gap
		wait := time.Until(start.Add(due))
		if wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timer.C:
			}
		} else if wait < -maxLag {
			start, due = time.Now(), 0
		}
		if err := out(pkts, f); err != nil {
			return err
		}
		due += f.Duration
	}
}
