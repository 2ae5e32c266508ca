package main

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"canopy/mesh"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// delayViewer is a Go viewer that records, for the last packet of each
// video frame, how long ago the frame was captured (abs-capture-time).
type delayViewer struct {
	node *mesh.Node
	mu   sync.Mutex
	d    []time.Duration
}

func startDelayViewer(t testing.TB, url, stream string, role protocol.Role, capacity int) *delayViewer {
	t.Helper()
	v := &delayViewer{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	node, err := mesh.Dial(ctx, mesh.Config{
		Server: url, Stream: stream, Role: role, Capacity: capacity, LoopbackOnly: true, Logger: testLogger(),
		OnPacket: func(tr protocol.Track, p *rtp.Packet) {
			if tr.Kind != "video" || !p.Marker {
				return
			}
			if at, ok := peer.CaptureTime(p); ok {
				v.mu.Lock()
				v.d = append(v.d, time.Since(at))
				v.mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Close() })
	v.node = node
	return v
}

// delays returns the delays recorded since the last call.
func (v *delayViewer) delays() []time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	d := v.d
	v.d = nil
	return d
}

func durQuantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// TestWHIPCaptureTime: a publisher that stamps abs-capture-time (as a
// browser does) has its own capture times reach the viewers unchanged; one
// that sends none (OBS) has its frames stamped when they reach the server.
func TestWHIPCaptureTime(t *testing.T) {
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	const skew = 10 * time.Second
	stamping := newWHIPClient(t)
	stamping.obsStyle = false // keeps its header extensions, as a browser's offer does
	stamping.captureClock = func() time.Time { return time.Now().Add(-skew) }
	if code, body := stamping.publish(url, "stamped", ""); code != http.StatusCreated {
		t.Fatalf("POST: %d %s", code, body)
	}
	stamping.play(h264Clip)
	obs := newWHIPClient(t)
	if code, body := obs.publish(url, "unstamped", ""); code != http.StatusCreated {
		t.Fatalf("POST: %d %s", code, body)
	}
	obs.play(h264Clip)
	vs := startDelayViewer(t, url, "stamped", protocol.RoleViewer, 0)
	vo := startDelayViewer(t, url, "unstamped", protocol.RoleViewer, 0)
	var ds, do []time.Duration
	waitFor(t, 30*time.Second, "capture times at both viewers", func() bool {
		ds, do = append(ds, vs.delays()...), append(do, vo.delays()...)
		return len(ds) >= 30 && len(do) >= 30
	})
	if p50 := durQuantile(ds, 0.5); p50 < skew || p50 > skew+2*time.Second {
		t.Errorf("publisher's own capture times: median delay %s; want the publisher's stamps (%s behind) passed on", p50, skew)
	}
	if p50 := durQuantile(do, 0.5); p50 <= 0 || p50 > 2*time.Second {
		t.Errorf("frames without capture times: median delay %s; want them stamped at the server", p50)
	}
}

// BenchmarkWHIPFirstFrame: a viewer waits on an offline stream; a WHIP
// publisher POSTs (its offer gathered, as OBS sends it); the figure is the
// time from the POST to the viewer's first complete frame.
func BenchmarkWHIPFirstFrame(b *testing.B) {
	_, url := startServer(b, tree.Config{SourceCapacity: 2})
	first := newWHIPClient(b)
	if code, body := first.publish(url, "bench", ""); code != http.StatusCreated {
		b.Fatalf("POST: %d %s", code, body)
	}
	first.play(h264Clip)
	v := startPeer(b, url, "bench", protocol.RoleViewer, 0, nil)
	waitFor(b, 30*time.Second, "the viewer plays", func() bool { f, _, _ := v.counts(); return f >= 10 })
	var took, answered, connected []time.Duration
	prev := first
	for range b.N {
		offline := v.offlineCount()
		prev.stop()
		waitFor(b, 20*time.Second, "the viewer sees offline", func() bool { return v.offlineCount() > offline })
		c := newWHIPClient(b)
		offer := c.offer()
		start := time.Now()
		resp, body := post(b, http.MethodPost, url+"/whip/bench", "application/sdp", "", offer)
		answered = append(answered, time.Since(start))
		if resp.StatusCode != http.StatusCreated {
			b.Fatalf("POST: %d %s", resp.StatusCode, body)
		}
		c.location = url + resp.Header.Get("Location")
		if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
			b.Fatal(err)
		}
		// Media starts once the connection is up, as an encoder's does:
		// pion would drop what is written before DTLS completes.
		waitFor(b, 20*time.Second, "the publisher connects", func() bool { return c.pc.ConnectionState() == webrtc.PeerConnectionStateConnected })
		connected = append(connected, time.Since(start))
		c.play(h264Clip)
		waitFor(b, 20*time.Second, "the waiting viewer's first frame", func() bool { return !v.firstFrameAfter(start).IsZero() })
		took = append(took, v.firstFrameAfter(start).Sub(start))
		prev = c
	}
	b.ReportMetric(float64(durQuantile(took, 0.5).Microseconds())/1000, "ms-first-frame-p50")
	b.ReportMetric(float64(durQuantile(took, 0.95).Microseconds())/1000, "ms-first-frame-p95")
	b.ReportMetric(float64(durQuantile(answered, 0.5).Microseconds())/1000, "ms-201-p50")
	b.ReportMetric(float64(durQuantile(connected, 0.5).Microseconds())/1000, "ms-publisher-connected-p50")
}

// BenchmarkWHIPGlassToGlass: a publisher stamps each frame's capture time
// as it packetizes it; the figure is capture → complete frame at a Go
// viewer at depth 3 (WHIP source node → relay → relay → viewer), all on
// one host's clock.
func BenchmarkWHIPGlassToGlass(b *testing.B) {
	_, url := startServer(b, tree.Config{SourceCapacity: 1})
	c := newWHIPClient(b)
	c.obsStyle = false
	c.captureClock = time.Now
	if code, body := c.publish(url, "g2g", ""); code != http.StatusCreated {
		b.Fatalf("POST: %d %s", code, body)
	}
	c.play(h264Clip)
	r1 := startDelayViewer(b, url, "g2g", protocol.RoleRelay, 1)
	waitFor(b, 20*time.Second, "relay 1 placed", func() bool { return r1.node.Depth() == 1 })
	r2 := startDelayViewer(b, url, "g2g", protocol.RoleRelay, 1)
	waitFor(b, 20*time.Second, "relay 2 placed", func() bool { return r2.node.Depth() == 2 })
	v := startDelayViewer(b, url, "g2g", protocol.RoleViewer, 0)
	waitFor(b, 20*time.Second, "the viewer at depth 3", func() bool { return v.node.Depth() == 3 && len(v.delays()) > 0 })
	// A fixed window of frames whatever b.N (run with -benchtime=1x).
	var d []time.Duration
	waitFor(b, 60*time.Second, "600 frames at depth 3", func() bool { d = append(d, v.delays()...); return len(d) >= 600 })
	b.ReportMetric(float64(len(d)), "frames")
	b.ReportMetric(float64(durQuantile(d, 0.5).Microseconds())/1000, "ms-p50")
	b.ReportMetric(float64(durQuantile(d, 0.99).Microseconds())/1000, "ms-p99")
}
