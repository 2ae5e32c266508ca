package peer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"

	"canopy/mesh/media"
	"canopy/mesh/protocol"
)

// pacedSource writes a synthetic VP8 stream one packet every 5 ms (six
// packets a frame, about 33 fps), as packets arrive from a network, with one
// keyframe at the start and none after: it never answers keyframe requests,
// so a child that does not start from the GOP cache never gets a picture.
type pacedSource struct {
	packets atomic.Int64
	stop    chan struct{}
	done    chan struct{}
}

const pacedFramePkts = 6

func startPacedSource(tb testing.TB, f *Forwarder) *pacedSource {
	s := &pacedSource{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 99, PayloadType: 96}}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			frame := i / pacedFramePkts
			p.SequenceNumber = uint16(i)
			p.Timestamp = uint32(frame) * 2700
			p.Marker = i%pacedFramePkts == pacedFramePkts-1
			p.Payload = vp8Payload(frame, frame == 0, i%pacedFramePkts == 0, 400)
			if err := f.WriteRTP(p); err != nil {
				tb.Error(err)
				return
			}
			s.packets.Add(1)
			select {
			case <-tick.C:
			case <-s.stop:
				return
			}
		}
	}()
	return s
}

func (s *pacedSource) close() { close(s.stop); <-s.done }

// joinRecord is what one child saw first.
type joinRecord struct {
	mu        sync.Mutex
	firstSeq  int // -1 until the first packet
	firstKey  bool
	packets   int
	joinedAt  int64 // source packets written when the child connected
	ffSink    *firstFrameSink
	connected time.Time
}

// TestJoinAnyTimeStartsFromKeyframe: children that join a live stream at
// random points of a GOP (the source never sends another keyframe) each
// receive, as their very first packet, the cached GOP's keyframe, and decode
// it. This is the regression test for bursts that were written before the
// child's DTLS/SRTP was up, which pion drops silently: such a child saw only
// later delta frames and had to wait for the source's next keyframe.
func TestJoinAnyTimeStartsFromKeyframe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	a := newTestAPI(t)
	f := NewForwarderWith(vp8Track, ForwarderOptions{GOPBytes: 32 << 20}, testLogger())
	defer f.Close()
	src := startPacedSource(t, f)
	defer src.close()
	waitFor(t, ctx, "the first GOP packets", func() bool { return src.packets.Load() >= 10 })

	const children = 12
	recs := make([]*joinRecord, children)
	links := make([]*link, 0, children)
	defer func() {
		for _, l := range links {
			l.close()
		}
	}()
	for i := range children {
		// A random point of the GOP, up to ~4 frames after the previous join.
		time.Sleep(time.Duration(rand.Int64N(int64(130 * time.Millisecond))))
		r := &joinRecord{firstSeq: -1, ffSink: newFirstFrameSink(t)}
		recs[i] = r
		sink := func(tr protocol.Track, p *rtp.Packet) {
			r.mu.Lock()
			if r.firstSeq < 0 {
				r.firstSeq, r.firstKey = int(p.SequenceNumber), media.IsVP8Keyframe(p.Payload)
			}
			r.packets++
			r.mu.Unlock()
			r.ffSink.sink(tr, p)
		}
		l := newLink(t, ctx, a, fmt.Sprint("c", i), []*Forwarder{f}, sink)
		links = append(links, l)
		r.joinedAt, r.connected = src.packets.Load(), time.Now()
	}
	for i, r := range recs {
		waitFor(t, ctx, fmt.Sprintf("child %d's first frame", i), func() bool { return r.ffSink.first.Load() != nil })
		r.mu.Lock()
		firstSeq, firstKey := r.firstSeq, r.firstKey
		r.mu.Unlock()
		if firstSeq != 0 || !firstKey {
			t.Errorf("child %d (joined %d packets into the GOP): first packet seq %d keyframe %v, want the GOP's keyframe, seq 0",
				i, r.joinedAt, firstSeq, firstKey)
		}
		if r.ffSink.badKey.Load() {
			t.Errorf("child %d: the first frame decoded was not a keyframe", i)
		}
		t.Logf("child %d: joined %d packets into the GOP, first frame %v after connected",
			i, r.joinedAt, r.ffSink.first.Load().Sub(r.connected).Round(time.Millisecond))
	}
	if st := f.Stats(); st.Bursts != children {
		t.Errorf("stats %+v: want %d bursts, one per child", st, children)
	}
}
