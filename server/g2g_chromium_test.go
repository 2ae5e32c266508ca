package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/pion/webrtc/v4"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// The Chromium glass-to-glass measurement: a pion WHIP publisher stamps
// each H264 frame's capture time (abs-capture-time, and its own record by
// RTP timestamp); the stream goes WHIP source node (in the server) → Go
// relay → Go relay → a Chromium /watch tab at depth 3. For every frame the
// tab reports (requestVideoFrameCallback) the figure is the tab's
// expectedDisplayTime minus the publisher's capture time, both wall-clock
// ms on this host (performance.timeOrigin + the callback's times, against
// time.Now at the publisher), matched by RTP timestamp, which the tree
// forwards unchanged. A measurement, not a test:
//
//	CANOPY_G2G=20 go test ./server -run TestChromiumGlassToGlassWHIP -v -count=1
//
// (CANOPY_G2G is the window in seconds.)

// g2gInitJS records, per presented frame: wall-clock ms of its expected
// display, presentation and the arrival of its last packet, and its RTP
// timestamp; and once a second the receiver's synchronization source (its
// captureTimestamp comes from abs-capture-time) as a cross-check.
const g2gInitJS = `(() => {
  const t = { frames: [], ssrc: [] };
  window.__g2g = t;
  const Orig = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Orig {
    constructor(...a) {
      super(...a);
      const poll = setInterval(() => {
        if (this.connectionState === 'closed') { clearInterval(poll); return; }
        for (const r of this.getReceivers()) {
          if (r.track.kind !== 'video') continue;
          for (const s of r.getSynchronizationSources()) {
            t.ssrc.push({ now: performance.timeOrigin + performance.now(), date: Date.now(), timestamp: s.timestamp,
                          captureTimestamp: s.captureTimestamp ?? null, senderCaptureTimeOffset: s.senderCaptureTimeOffset ?? null,
                          rtpTimestamp: s.rtpTimestamp });
          }
        }
      }, 1000);
    }
  };
  const watch = () => {
    const v = window.canopy && window.canopy.video;
    if (!v) { setTimeout(watch, 5); return; }
    const onFrame = (now, m) => {
      const o = performance.timeOrigin;
      if (t.frames.length < 20000) {
        t.frames.push([o + m.expectedDisplayTime, o + m.presentationTime, m.receiveTime === undefined ? -1 : o + m.receiveTime, m.rtpTimestamp ?? -1]);
      }
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  };
  watch();
})()`

// g2gPage is what g2gInitJS recorded.
type g2gPage struct {
	Frames [][4]float64 `json:"frames"` // expected display, presentation, receive (wall ms), RTP timestamp
	SSRC   []struct {
		Now              float64  `json:"now"`
		Date             float64  `json:"date"`
		Timestamp        float64  `json:"timestamp"`
		CaptureTimestamp *float64 `json:"captureTimestamp"`
		RTPTimestamp     float64  `json:"rtpTimestamp"`
	} `json:"ssrc"`
}

func TestChromiumGlassToGlassWHIP(t *testing.T) {
	secs, _ := strconv.Atoi(os.Getenv("CANOPY_G2G"))
	if secs <= 0 {
		t.Skip("a measurement: set CANOPY_G2G=<seconds> to run it")
	}
	// The source and both relays take one child each, and browsers do not
	// relay, so the tab can only be placed at depth 3.
	_, url := startServer(t, tree.Config{SourceCapacity: 1, BrowserMaxCapacity: -1})
	var mu sync.Mutex
	sent := map[uint32]time.Time{}
	c := newWHIPClient(t)
	c.obsStyle = false
	c.captureClock = time.Now
	c.sentFrame = func(ts uint32, at time.Time) { mu.Lock(); sent[ts] = at; mu.Unlock() }
	if code, body := c.publish(url, "g2g", ""); code != http.StatusCreated {
		t.Fatalf("POST: %d %s", code, body)
	}
	waitFor(t, 20*time.Second, "the publisher connects", func() bool { return c.pc.ConnectionState() == webrtc.PeerConnectionStateConnected })
	c.play(h264Clip)
	r1 := startDelayViewer(t, url, "g2g", protocol.RoleRelay, 1)
	waitFor(t, 20*time.Second, "relay 1 placed", func() bool { return r1.node.Depth() == 1 })
	r2 := startDelayViewer(t, url, "g2g", protocol.RoleRelay, 1)
	waitFor(t, 20*time.Second, "relay 2 placed", func() bool { return r2.node.Depth() == 2 })

	browser := newBrowser(t)
	if err := chromedp.Do(browser, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: g2gInitJS})
		return err
	})); err != nil {
		t.Fatalf("init script: %v", err)
	}
	if err := chromedp.Do(browser, chromedp.Navigate(url+"/watch/g2g")); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	waitPlaying(t, browser, 30, 30*time.Second)
	parent := ""
	waitFor(t, 10*time.Second, "the tab in the tree", func() bool {
		var tr treeResponse
		getJSON(t, url+"/api/streams/g2g/tree", &tr)
		for _, n := range tr.Nodes {
			if string(n.Kind) == string(protocol.KindBrowser) {
				parent = n.Parent
			}
		}
		return parent != ""
	})
	if parent != r2.node.ID() {
		t.Fatalf("the tab's parent is %q; want relay 2 (%s), depth 3", parent, r2.node.ID())
	}
	// Drop the start (the GOP cache burst and the jitter buffer settling),
	// then measure a window.
	time.Sleep(3 * time.Second)
	from := float64(time.Now().UnixMicro()) / 1000
	time.Sleep(time.Duration(secs) * time.Second)
	ctx, cancel := context.WithTimeout(browser, 10*time.Second)
	defer cancel()
	pg, err := chromedp.Run(ctx, chromedp.Evaluate[g2gPage]("window.__g2g"))
	if err != nil {
		t.Fatalf("read the page: %v", err)
	}
	var display, present, receive []float64
	unmatched := 0
	mu.Lock()
	for _, f := range pg.Frames {
		if f[1] < from || f[3] < 0 {
			continue
		}
		at, ok := sent[uint32(f[3])]
		if !ok {
			unmatched++
			continue
		}
		capMs := float64(at.UnixMicro()) / 1000
		display = append(display, f[0]-capMs)
		present = append(present, f[1]-capMs)
		if f[2] >= 0 {
			receive = append(receive, f[2]-capMs)
		}
	}
	mu.Unlock()
	if len(display) < 10*secs {
		t.Fatalf("only %d frames matched the publisher's (%d unmatched) in %d s", len(display), unmatched, secs)
	}
	q := func(v []float64, p float64) float64 {
		if len(v) == 0 {
			return -1
		}
		s := slices.Clone(v)
		slices.Sort(s)
		return s[min(len(s)-1, int(p*float64(len(s))))]
	}
	if q(display, 0) < 0 {
		t.Errorf("a negative glass-to-glass delay (%.1f ms): the clocks or units do not agree", q(display, 0))
	}
	// abs-capture-time as Chromium reports it, an NTP time in ms: the
	// cross-check of the publisher's stamps (NTP epoch is 2208988800 s
	// before Unix's).
	for i, s := range pg.SSRC {
		if s.CaptureTimestamp != nil && i < 3 {
			t.Logf("ssrc: timestamp %.1f (Date.now %.1f), captureTimestamp %.1f = unix %.1f (%.1f ms before timestamp)",
				s.Timestamp, s.Date, *s.CaptureTimestamp, *s.CaptureTimestamp-2208988800000, s.Timestamp-(*s.CaptureTimestamp-2208988800000))
		}
	}
	fmt.Printf("chromium glass-to-glass at depth 3 (WHIP source → relay → relay → tab), %d frames in %d s (%d unmatched): "+
		"capture → expected display p50 %.1f p99 %.1f ms; → presentation p50 %.1f p99 %.1f ms; → last packet received p50 %.1f p99 %.1f ms\n",
		len(display), secs, unmatched, q(display, 0.5), q(display, 0.99), q(present, 0.5), q(present, 0.99), q(receive, 0.5), q(receive, 0.99))
}
