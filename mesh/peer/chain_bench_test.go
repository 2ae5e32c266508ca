package peer

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"canopy/mesh/media"
	"canopy/mesh/protocol"
	"github.com/pion/rtp"
)

// delayLog records source→here delays (ms) of the frames' last packets.
type delayLog struct {
	mu sync.Mutex
	ms []float64
}

func (d *delayLog) add(p *rtp.Packet) {
	if !p.Marker {
		return
	}
	if ct, ok := CaptureTime(p); ok {
		ms := float64(time.Since(ct).Microseconds()) / 1000
		d.mu.Lock()
		d.ms = append(d.ms, ms)
		d.mu.Unlock()
	}
}

func (d *delayLog) quantiles() (p50, p99 float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.ms) == 0 {
		return 0, 0
	}
	v := slices.Clone(d.ms)
	slices.Sort(v)
	return v[len(v)/2], v[len(v)*99/100]
}

// BenchmarkChainLatency: a 2.5 Mbps VP8-like stream (30 fps, 10 packets of
// 1040 bytes a frame) down a chain of real PeerConnections on loopback,
// source → relay 1 → … → relay 4 → leaf (depth 5), every node in this
// process, so all hops share one clock. One op is one frame; it reports the
// p50/p99 delay from the source's capture stamp to the last packet of each
// frame at depth 1 and at depth 5. Run with -benchtime=300x (10 s).
func BenchmarkChainLatency(b *testing.B) {
	const depth = 5
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	a := newTestAPI(b)
	fwds := make([]*Forwarder, depth)
	for i := range fwds {
		fwds[i] = NewForwarder(vp8Track, testLogger())
		defer fwds[i].Close()
	}
	logs := make([]*delayLog, depth)
	for i := range logs {
		logs[i] = &delayLog{}
	}
	var links []*link
	defer func() {
		for _, l := range links {
			l.close()
		}
	}()
	// Hop i carries fwds[i] to the node at depth i+1, which feeds fwds[i+1].
	for i := depth - 1; i >= 0; i-- {
		log := logs[i]
		var next *Forwarder
		if i+1 < depth {
			next = fwds[i+1]
		}
		links = append(links, newLink(b, ctx, a, fmt.Sprint("d", i+1), fwds[i:i+1], func(_ protocol.Track, p *rtp.Packet) {
			log.add(p)
			if next != nil {
				_ = next.WriteRTP(p)
			}
		}))
	}
	src := media.SyntheticVP8{Packet: rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 1234, PayloadType: 96}}, Payload: make([]byte, 1040), Packets: 10}
	tick := time.NewTicker(time.Second / 30)
	defer tick.Stop()
	frame := func(i int) {
		now := time.Now()
		_ = src.WriteFrame(i, func(p *rtp.Packet) error {
			_ = StampCaptureTime(p, now)
			return fwds[0].WriteRTP(p)
		})
		<-tick.C
	}
	for i := range 60 { // warm-up: 2 s, bursts and NACK repairs of the joins over
		frame(i)
	}
	for _, l := range logs {
		l.mu.Lock()
		l.ms = l.ms[:0]
		l.mu.Unlock()
	}
	for i := 60; b.Loop(); i++ {
		frame(i)
	}
	time.Sleep(100 * time.Millisecond) // the last frames in flight
	for _, d := range []int{1, depth} {
		p50, p99 := logs[d-1].quantiles()
		b.ReportMetric(p50, fmt.Sprintf("p50-ms/depth%d", d))
		b.ReportMetric(p99, fmt.Sprintf("p99-ms/depth%d", d))
	}
	b.ReportMetric(0, "ns/op")
}
