package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"canopy/mesh"
	"canopy/mesh/media"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestGoViewersStartFromCachedGOP: Go viewers join a 10 s GOP source that
// ignores keyframe requests, one after another at random points of the GOP,
// through the server; the first video packet each receives is the start of
// the cached keyframe, so none waits for the source's next one. Regression
// test for bursts written before the viewer's DTLS was up, which pion drops:
// the viewer then saw only deltas until the next keyframe (up to 10 s here).
func TestGoViewersStartFromCachedGOP(t *testing.T) {
	_, url := startServer(t, tree.Config{SourceCapacity: 32})
	src := startGOPSource(t, url, "gop", "testdata/ttff_gop10s.ivf")
	waitFor(t, 10*time.Second, "the source's first keyframe", func() bool { return src.sinceKeyframe(time.Now()) >= 0 })

	type first struct {
		mu    sync.Mutex
		seen  bool
		key   bool
		seq   uint16
		at    time.Time
		joins time.Time
	}
	const viewers = 8
	for i := range viewers {
		time.Sleep(time.Duration(rand.Int64N(int64(400 * time.Millisecond))))
		f := &first{joins: time.Now()}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		node, err := mesh.Dial(ctx, mesh.Config{
			Server: url, Stream: "gop", Role: protocol.RoleViewer, LoopbackOnly: true, Logger: testLogger(),
			OnPacket: func(tr protocol.Track, p *rtp.Packet) {
				if tr.Kind != "video" {
					return
				}
				f.mu.Lock()
				defer f.mu.Unlock()
				if !f.seen {
					f.seen, f.key, f.seq, f.at = true, media.IsVP8Keyframe(p.Payload), p.SequenceNumber, time.Now()
				}
			},
		})
		cancel()
		if err != nil {
			t.Fatalf("viewer %d: %v", i, err)
		}
		into := src.sinceKeyframe(f.joins)
		waitFor(t, 20*time.Second, fmt.Sprintf("viewer %d's first packet", i), func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.seen
		})
		f.mu.Lock()
		if !f.key {
			t.Errorf("viewer %d (joined %v into the GOP): first video packet seq %d is not a keyframe's; the cached GOP did not reach it",
				i, into.Round(time.Millisecond), f.seq)
		}
		t.Logf("viewer %d: joined %v into the GOP, first packet after %v", i, into.Round(time.Millisecond), f.at.Sub(f.joins).Round(time.Millisecond))
		f.mu.Unlock()
		_ = node.Close()
	}
}
