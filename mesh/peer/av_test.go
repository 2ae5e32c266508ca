package peer

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canopy/mesh/media"
	"canopy/mesh/protocol"
	"github.com/pion/rtp"
)

// avLeaf assembles every track it receives and tracks capture-time delay.
type avLeaf struct {
	mu       sync.Mutex
	asm      map[string]*media.Assembler
	firstKey map[string]bool
	stamped  atomic.Uint64
	maxDelay atomic.Int64
}

func (l *avLeaf) sink(t protocol.Track, p *rtp.Packet) {
	if ct, ok := CaptureTime(p); ok {
		l.stamped.Add(1)
		if d := int64(time.Since(ct)); d > l.maxDelay.Load() {
			l.maxDelay.Store(d)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.asm[t.ID]
	if a == nil {
		c, _ := media.LookupCodec(t.MimeType)
		c.ClockRate = t.ClockRate
		id := t.ID
		a, _ = media.NewAssembler(c, func(f media.Frame) {
			if _, ok := l.firstKey[id]; !ok {
				l.firstKey[id] = f.Keyframe
			}
		})
		l.asm[t.ID] = a
	}
	a.Push(p)
}

func (l *avLeaf) frames(id string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a := l.asm[id]; a != nil {
		return a.Stats().Frames
	}
	return 0
}

// TestAudioVideoThroughChain: VP8 or H264 video with Opus audio, read from
// the test files and paced in real time, pass a source → relay → leaf chain;
// the leaf decodes both from a keyframe on, and the source's capture time
// arrives with the packets.
func TestAudioVideoThroughChain(t *testing.T) {
	for _, tc := range []struct{ name, video string }{{"VP8", "short.ivf"}, {"H264", "short.h264"}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a := newTestAPI(t)
			vr, vc, err := media.OpenFile("../media/testdata/" + tc.video)
			if err != nil {
				t.Fatal(err)
			}
			defer vc.Close()
			ar, ac, err := media.OpenFile("../media/testdata/short.ogg")
			if err != nil {
				t.Fatal(err)
			}
			defer ac.Close()
			readers := []media.FrameReader{vr, ar}
			var src, relay []*Forwarder
			for _, r := range readers {
				c := r.Codec()
				kind := "video"
				if c.Channels > 0 {
					kind = "audio"
				}
				tr := protocol.Track{ID: kind, Kind: kind, MimeType: c.MimeType, ClockRate: c.ClockRate, Channels: c.Channels, Fmtp: c.Fmtp}
				src = append(src, NewForwarder(tr, testLogger()))
				relay = append(relay, NewForwarder(tr, testLogger()))
			}
			defer func() {
				for _, f := range append(src, relay...) {
					f.Close()
				}
			}()
			leaf := &avLeaf{asm: map[string]*media.Assembler{}, firstKey: map[string]bool{}}
			l2 := newLink(t, ctx, a, "leaf", relay, leaf.sink)
			defer l2.close()
			byID := map[string]*Forwarder{relay[0].Track().ID: relay[0], relay[1].Track().ID: relay[1]}
			l1 := newLink(t, ctx, a, "relay", src, func(tr protocol.Track, p *rtp.Packet) { _ = byID[tr.ID].WriteRTP(p) })
			defer l1.close()

			playCtx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			for i, r := range readers {
				pk, err := media.NewPacketizer(r.Codec())
				if err != nil {
					t.Fatal(err)
				}
				f := src[i]
				wg.Go(func() {
					_ = media.Play(playCtx, r, pk, func(pkts []*rtp.Packet, _ media.Frame) error {
						now := time.Now()
						for _, p := range pkts {
							if err := StampCaptureTime(p, now); err != nil {
								return err
							}
							if err := f.WriteRTP(p); err != nil {
								return err
							}
						}
						return nil
					})
				})
			}
			waitFor(t, ctx, "60 video and 100 audio frames at the leaf", func() bool {
				return leaf.frames("video") >= 60 && leaf.frames("audio") >= 100
			})
			stop()
			wg.Wait()
			leaf.mu.Lock()
			keyFirst := leaf.firstKey["video"]
			leaf.mu.Unlock()
			if !keyFirst {
				t.Fatal("the leaf's first video frame was not a keyframe")
			}
			if leaf.stamped.Load() == 0 {
				t.Fatal("no packet reached the leaf with its capture time")
			}
			t.Logf("max source→leaf delay (2 hops) %v over %d stamped packets",
				time.Duration(leaf.maxDelay.Load()), leaf.stamped.Load())
		})
	}
}
