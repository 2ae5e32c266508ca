package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"canopy/mesh/media"
	"canopy/mesh/tree"
)

// startWHIPGOPSource publishes the 10 s GOP clip over WHIP from a pion
// publisher that ignores keyframe requests, as a fixed-GOP encoder does,
// and records what it sent as startGOPSource does.
func startWHIPGOPSource(t *testing.T, url, stream, clip string) *gopSource {
	t.Helper()
	c := newWHIPClient(t, webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeVP8, ClockRate: 90000,
		RTCPFeedback: []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}}, PayloadType: 96})
	if code, body := c.publish(url, stream, ""); code != http.StatusCreated {
		t.Fatalf("POST /whip: %d %s", code, body)
	}
	waitFor(t, 20*time.Second, "the publisher connects", func() bool { return c.pc.ConnectionState() == webrtc.PeerConnectionStateConnected })
	f, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	video, err := media.NewIVFReader(f)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := media.NewPacketizer(video.Codec())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &gopSource{cancel: cancel, done: make(chan struct{}), sent: make(map[uint32]time.Time)}
	go func() {
		defer close(s.done)
		_ = media.Play(ctx, video, pk, func(pkts []*rtp.Packet, fr media.Frame) error {
			now := time.Now()
			s.mu.Lock()
			s.sent[pkts[0].Timestamp] = now
			if fr.Keyframe {
				s.keys = append(s.keys, now)
			}
			s.frame++
			s.mu.Unlock()
			for _, p := range pkts {
				if err := c.video.WriteRTP(p); err != nil {
					return err
				}
			}
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-s.done })
	return s
}

// TestChromiumTimeToFirstFrameWHIP is TestChromiumTimeToFirstFrame with the
// stream published over WHIP: tabs open /watch/<stream> at random points
// of a 10 s GOP the publisher will not shorten. A measurement:
//
//	CANOPY_TTFF=12 go test ./server -run TestChromiumTimeToFirstFrameWHIP -v -count=1
func TestChromiumTimeToFirstFrameWHIP(t *testing.T) {
	joins, _ := strconv.Atoi(os.Getenv("CANOPY_TTFF"))
	if joins <= 0 {
		t.Skip("a measurement: set CANOPY_TTFF=<joins> to run it")
	}
	_, url := startServer(t, tree.Config{SourceCapacity: 32, BrowserMaxCapacity: -1})
	src := startWHIPGOPSource(t, url, "ttffwhip", "testdata/ttff_gop10s.ivf")
	browser := newBrowser(t)
	waitFor(t, 10*time.Second, "the publisher's first keyframe", func() bool { return src.sinceKeyframe(time.Now()) >= 0 })
	var decoded []float64
	misses := 0
	for i := range joins {
		time.Sleep(time.Duration(rand.Int64N(int64(1500 * time.Millisecond)))) // a random point of the GOP
		j, ok := ttffOne(t, browser, url+"/watch/ttffwhip", src)
		if !ok {
			misses++
			continue
		}
		t.Logf("join %2d: %5.0f ms into the GOP; connected %4.0f, decoded %4.0f, presented %4.0f ms",
			i, float64(j.intoGOP.Milliseconds()), j.connected, j.decoded, j.presented)
		decoded = append(decoded, j.decoded)
	}
	if len(decoded) == 0 {
		t.Fatalf("no tab showed a picture in %d joins", joins)
	}
	slices.Sort(decoded)
	fmt.Printf("chromium ttff, WHIP-fed, GOP 10 s (%d joins, %d without a picture): navigation → first decoded median %.0f max %.0f ms\n",
		len(decoded), misses, decoded[len(decoded)/2], decoded[len(decoded)-1])
	if misses > 0 {
		t.Errorf("%d of %d tabs showed no picture within 15 s", misses, joins)
	}
}
