package peer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canopy/mesh/media"
	"canopy/mesh/protocol"
	"github.com/pion/rtp"
)

// synthFrame writes frame i of a synthetic VP8 stream (pkts packets of size
// bytes, keyframe when key) into f.
func synthFrame(tb testing.TB, f *Forwarder, p *rtp.Packet, i int, key bool, pkts, size int) {
	tb.Helper()
	for j := range pkts {
		p.SequenceNumber = uint16(i*pkts + j)
		p.Timestamp = uint32(i) * 3000
		p.Marker = j == pkts-1
		p.Payload = vp8Payload(i, key, j == 0, size)
		if err := f.WriteRTP(p); err != nil {
			tb.Fatal(err)
		}
	}
}

// TestGOPBurstContinuity: a child bound mid-GOP first gets the cached GOP
// from its keyframe, then the live packets, with no gap in sequence numbers;
// the cached frames are moved up to 1 ms apart before the newest one (the
// last frame cached when the child was attached).
func TestGOPBurstContinuity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 7}}
	const pkts = 3
	for i := range 75 {
		synthFrame(t, f, p, i, i%60 == 0, pkts, 200)
	}
	w := &discardWriter{keep: true}
	d := bindFake(t, f, "late", 9, w)
	for i := 75; i < 85; i++ {
		synthFrame(t, f, p, i, false, pkts, 200)
	}
	want := (85 - 60) * pkts
	waitFor(t, ctx, "burst and live packets", func() bool { return w.n.Load() == uint64(want) })
	w.mu.Lock()
	defer w.mu.Unlock()
	if h := w.headers[0]; h.SequenceNumber != 60*pkts || h.Timestamp != 74*3000-14*90 {
		t.Fatalf("first packet seq %d ts %d, want the keyframe's %d at %d", h.SequenceNumber, h.Timestamp, 60*pkts, 74*3000-14*90)
	}
	for i := 1; i < len(w.headers); i++ {
		h, prev := w.headers[i], w.headers[i-1]
		if h.SequenceNumber != prev.SequenceNumber+1 || int32(h.Timestamp-prev.Timestamp) < 0 {
			t.Fatalf("packet %d: seq %d ts %d after seq %d ts %d", i, h.SequenceNumber, h.Timestamp, prev.SequenceNumber, prev.Timestamp)
		}
		if frame := int(h.SequenceNumber) / pkts; frame >= 74 && h.Timestamp != uint32(frame)*3000 {
			t.Fatalf("frame %d: ts %d, want the original %d from the newest cached frame on", frame, h.Timestamp, frame*3000)
		}
	}
	if st := f.Stats(); st.Bursts != 1 {
		t.Fatalf("stats %+v, want one burst", st)
	}
	// The child keeps the burst to answer NACKs until retainSlots packets
	// followed it, or until it goes.
	if f.gops.cur.refs.Load() != 1 {
		t.Fatalf("GOP refs %d, want 1: held for retransmission", f.gops.cur.refs.Load())
	}
	d.close()
	waitFor(t, ctx, "the GOP to be released", func() bool { return f.gops.cur.refs.Load() == 0 })
}

// liveSource writes a synthetic VP8 stream in real time (30 fps) with a fixed
// GOP and ignores keyframe requests, like a file or a fixed-GOP encoder.
type liveSource struct {
	frames   atomic.Int64
	mu       sync.Mutex
	keyTimes []time.Time
	stop     chan struct{}
	done     chan struct{}
}

func startLiveSource(tb testing.TB, f *Forwarder, gop time.Duration, pkts, size int) *liveSource {
	s := &liveSource{stop: make(chan struct{}), done: make(chan struct{})}
	perGOP := int(gop / (time.Second / 30))
	go func() {
		defer close(s.done)
		p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 77, PayloadType: 96}}
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		for i := 0; ; i++ {
			key := i%perGOP == 0
			if key {
				s.mu.Lock()
				s.keyTimes = append(s.keyTimes, time.Now())
				s.mu.Unlock()
			}
			synthFrame(tb, f, p, i, key, pkts, size)
			s.frames.Add(1)
			select {
			case <-tick.C:
			case <-s.stop:
				return
			}
		}
	}()
	return s
}

func (s *liveSource) close() { close(s.stop); <-s.done }

func (s *liveSource) keyframes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keyTimes)
}

// firstFrameSink assembles one track and records when the first complete
// frame (which must be a keyframe) came out.
type firstFrameSink struct {
	asm    *media.Assembler
	first  atomic.Pointer[time.Time]
	badKey atomic.Bool
}

func newFirstFrameSink(tb testing.TB) *firstFrameSink {
	s := &firstFrameSink{}
	asm, err := media.NewAssembler(media.VP8, func(fr media.Frame) {
		if s.first.Load() == nil {
			now := time.Now()
			s.first.Store(&now)
			s.badKey.Store(!fr.Keyframe)
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	s.asm = asm
	return s
}

func (s *firstFrameSink) sink(_ protocol.Track, p *rtp.Packet) { s.asm.Push(p) }

// joinTTFF connects a new child to f and returns the time from the start of
// signaling to its first complete frame, and that frame's verdict.
func joinTTFF(tb testing.TB, ctx context.Context, a *API, f *Forwarder, id string) (time.Duration, *firstFrameSink, *link) {
	tb.Helper()
	s := newFirstFrameSink(tb)
	t0 := time.Now()
	l := newLink(tb, ctx, a, id, []*Forwarder{f}, s.sink)
	waitFor(tb, ctx, "first frame", func() bool { return s.first.Load() != nil })
	return s.first.Load().Sub(t0), s, l
}

// TestJoinMidGOPStartsFromCache: with a 10 s GOP and a source that ignores
// keyframe requests, a child joining mid-GOP decodes its first frame (a
// keyframe) long before the source's next keyframe, and keeps decoding.
func TestJoinMidGOPStartsFromCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newTestAPI(t)
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	src := startLiveSource(t, f, 10*time.Second, 5, 1000)
	defer src.close()
	waitFor(t, ctx, "1.5 s of GOP", func() bool { return src.frames.Load() >= 45 })

	ttff, s, l := joinTTFF(t, ctx, a, f, "late")
	defer l.close()
	if s.badKey.Load() {
		t.Fatal("the first frame decoded was not a keyframe")
	}
	if n := src.keyframes(); n != 1 {
		t.Fatalf("the source sent %d keyframes before the first frame; the cache was not used", n)
	}
	t.Logf("join → first frame %v (GOP 10 s, joined %d frames into it)", ttff, 45)
	// The burst's frames and the live ones after it all decode.
	target := src.frames.Load() + 15
	waitFor(t, ctx, "frames after the burst", func() bool { return int64(s.asm.Stats().Frames) >= target })
}

// BenchmarkTimeToFirstFrame: Go viewers join a live 30 fps stream at random
// points of its GOP; join (signaling start) → first decoded frame, p50/p95.
// The source ignores keyframe requests. Run with -benchtime=20x.
func BenchmarkTimeToFirstFrame(b *testing.B) {
	for _, tc := range []struct {
		name string
		gop  time.Duration
		opts ForwarderOptions
	}{
		{"gop=1s/cache", time.Second, ForwarderOptions{}},
		{"gop=10s/cache", 10 * time.Second, ForwarderOptions{}},
		{"gop=1s/no-cache", time.Second, ForwarderOptions{GOPBytes: -1}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			a := newTestAPI(b)
			f := NewForwarderWith(vp8Track, tc.opts, testLogger())
			defer f.Close()
			src := startLiveSource(b, f, tc.gop, 8, 1100) // ~2.1 Mbps
			defer src.close()
			var ttffs []time.Duration
			for i := 0; b.Loop(); i++ {
				// A random point of the GOP, without waiting for a whole one.
				time.Sleep(time.Duration(rand.Int64N(int64(min(tc.gop, 2*time.Second)))))
				d, _, l := joinTTFF(b, ctx, a, f, fmt.Sprint("v", i))
				ttffs = append(ttffs, d)
				l.close()
			}
			slices.Sort(ttffs)
			b.ReportMetric(float64(ttffs[len(ttffs)/2])/1e6, "p50-ms")
			b.ReportMetric(float64(ttffs[len(ttffs)*95/100])/1e6, "p95-ms")
		})
	}
}
