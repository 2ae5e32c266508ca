package main

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/pion/rtp"

	"canopy/mesh"
	"canopy/mesh/media"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// The Chromium time-to-first-frame measurement: a source with a fixed 10 s
// GOP that ignores keyframe requests (server/testdata/ttff_gop10s.ivf,
// looped; scripts/ttff/make-clip.sh makes it), and headless Chromium tabs
// that each open /watch/<stream> at a random point of the GOP. It prints
// figures and fails only if a tab never shows a picture. Run it with
//
//	CANOPY_TTFF=12 go test ./server -run TestChromiumTimeToFirstFrame -v -count=1
//
// (CANOPY_TTFF is the number of joins.)

// ttffInitJS runs in every tab before the page's own scripts. Times are
// performance.now() values: milliseconds since navigation started.
const ttffInitJS = `(() => {
  const t = { frames: [], origin: performance.timeOrigin };
  window.__ttff = t;
  const Orig = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Orig {
    constructor(...a) {
      super(...a);
      t.pcCreated ??= performance.now();
      this.addEventListener('connectionstatechange', () => {
        if (this.connectionState === 'connected') t.connected ??= performance.now();
      });
      this.addEventListener('track', () => { t.track ??= performance.now(); });
      this.addEventListener('icecandidate', (e) => { if (e.candidate) t.localCand ??= performance.now(); else t.gathered ??= performance.now(); });
      this.addEventListener('iceconnectionstatechange', () => {
        if (this.iceConnectionState === 'checking') t.checking ??= performance.now();
        if (this.iceConnectionState === 'connected') t.iceConnected ??= performance.now();
      });
      const poll = setInterval(async () => {
        if (t.decoded !== undefined || this.connectionState === 'closed') { clearInterval(poll); return; }
        const stats = await this.getStats();
        stats.forEach((r) => {
          if (r.type === 'inbound-rtp' && r.kind === 'video' && r.framesDecoded > 0) t.decoded ??= performance.now();
        });
      }, 5);
    }
  };
  for (const m of ['setRemoteDescription', 'setLocalDescription', 'addIceCandidate']) {
    const orig = Orig.prototype[m];
    Orig.prototype[m] = function (...a) {
      t[m] ??= performance.now();
      return orig.apply(this, a);
    };
  }
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(...a) {
      super(...a);
      this.addEventListener('open', () => { t.wsOpen ??= performance.now(); });
      this.addEventListener('message', () => { t.wsFirstMsg ??= performance.now(); });
    }
  };
  document.addEventListener('DOMContentLoaded', () => { t.dom = performance.now(); });
  const watch = () => {
    const v = window.canopy && window.canopy.video;
    if (!v) { setTimeout(watch, 5); return; }
    const onFrame = (now, m) => {
      t.frame ??= m.presentationTime;
      if (t.frames.length < 2000) t.frames.push([performance.timeOrigin + m.presentationTime, m.rtpTimestamp ?? -1]);
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  };
  watch();
})()`

// ttffPage is what ttffInitJS recorded.
type ttffPage struct {
	Origin    float64      `json:"origin"` // performance.timeOrigin, wall-clock ms
	PCCreated *float64     `json:"pcCreated"`
	Connected *float64     `json:"connected"`
	Track     *float64     `json:"track"`
	Decoded   *float64     `json:"decoded"`
	Frame     *float64     `json:"frame"`
	Frames    [][2]float64 `json:"frames"` // wall-clock ms of presentation, RTP timestamp
}

// gopSource plays a looped clip through a source node, ignoring keyframe
// requests, and remembers when it sent each frame (by RTP timestamp) and
// when it sent each keyframe.
type gopSource struct {
	node   *mesh.Node
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	sent  map[uint32]time.Time
	keys  []time.Time
	frame int
}

func startGOPSource(t *testing.T, server, stream, clip string) *gopSource {
	t.Helper()
	f, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	video, err := media.NewIVFReader(f)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	node, err := mesh.Dial(ctx, mesh.Config{
		Server: server, Stream: stream, Role: protocol.RoleSource, Capacity: 32,
		Tracks: mesh.TracksFor(video), LoopbackOnly: true, Logger: testLogger(),
	})
	if err != nil {
		cancel()
		t.Fatalf("source: %v", err)
	}
	s := &gopSource{node: node, cancel: cancel, done: make(chan struct{}), sent: make(map[uint32]time.Time)}
	pk, err := media.NewPacketizer(video.Codec())
	if err != nil {
		t.Fatal(err)
	}
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
			return node.WriteFrame("video", pkts, now)
		})
	}()
	t.Cleanup(func() { cancel(); <-s.done; _ = node.Close() })
	return s
}

// sinceKeyframe says how far into its GOP the source was at time at.
func (s *gopSource) sinceKeyframe(at time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.keys) - 1; i >= 0; i-- {
		if !s.keys[i].After(at) {
			return at.Sub(s.keys[i])
		}
	}
	return -1
}

func (s *gopSource) sentAt(ts uint32) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.sent[ts]
	return at, ok
}

// ttffJoin is one tab's figures, in milliseconds from navigation start.
type ttffJoin struct {
	intoGOP                       time.Duration
	connected, decoded, presented float64
	liveDelay                     float64 // median capture → presentation 2-3 s after the first frame; -1 unknown
	framesIn3s                    int
	steps                         string // every page milestone, in order
}

func TestChromiumTimeToFirstFrame(t *testing.T) {
	joins, _ := strconv.Atoi(os.Getenv("CANOPY_TTFF"))
	if joins <= 0 {
		t.Skip("a measurement: set CANOPY_TTFF=<joins> to run it")
	}
	// Browsers do not relay here, so every tab is a child of the source.
	_, url := startServer(t, tree.Config{SourceCapacity: 32, BrowserMaxCapacity: -1})
	src := startGOPSource(t, url, "ttff", "testdata/ttff_gop10s.ivf")
	browser := newBrowser(t)
	time.Sleep(500 * time.Millisecond) // let the source's first GOP start

	var res []ttffJoin
	misses := 0
	for i := range joins {
		time.Sleep(time.Duration(rand.Int64N(int64(1500 * time.Millisecond))))
		j, ok := ttffOne(t, browser, url+"/watch/ttff", src)
		if !ok {
			misses++
			continue
		}
		t.Logf("join %2d: %4.0f ms into the GOP; connected %4.0f, decoded %4.0f, presented %4.0f ms; live delay %4.0f ms; %d frames in 3 s",
			i, float64(j.intoGOP.Milliseconds()), j.connected, j.decoded, j.presented, j.liveDelay, j.framesIn3s)
		t.Logf("         %s", j.steps)
		res = append(res, j)
	}
	if len(res) == 0 {
		t.Fatalf("no tab showed a picture in %d joins", joins)
	}
	med := func(get func(ttffJoin) float64) (float64, float64) {
		v := make([]float64, 0, len(res))
		for _, j := range res {
			v = append(v, get(j))
		}
		slices.Sort(v)
		return v[len(v)/2], v[len(v)-1]
	}
	cm, cx := med(func(j ttffJoin) float64 { return j.connected })
	dm, dx := med(func(j ttffJoin) float64 { return j.decoded })
	pm, px := med(func(j ttffJoin) float64 { return j.presented })
	lm, lx := med(func(j ttffJoin) float64 { return j.liveDelay })
	fmt.Printf("chromium ttff (GOP 10 s, %d joins, %d without a picture in 15 s): navigation → connected median %.0f max %.0f ms; "+
		"→ first decoded median %.0f max %.0f ms; → first presented median %.0f max %.0f ms; live delay 2-3 s later median %.0f max %.0f ms\n",
		len(res), misses, cm, cx, dm, dx, pm, px, lm, lx)
	if misses > 0 {
		t.Errorf("%d of %d tabs showed no picture within 15 s", misses, joins)
	}
}

// ttffOne opens the page in a new tab, waits for its first presented frame
// and then 3 s more, and closes the tab.
func ttffOne(t *testing.T, browser context.Context, pageURL string, src *gopSource) (ttffJoin, bool) {
	t.Helper()
	tab, closeTab := chromedp.NewContext(browser)
	defer closeTab()
	if err := chromedp.Do(tab, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: ttffInitJS})
		return err
	})); err != nil {
		t.Fatalf("init script: %v", err)
	}
	nav := time.Now()
	if err := chromedp.Do(tab, chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	j := ttffJoin{intoGOP: src.sinceKeyframe(nav), liveDelay: -1}
	var pg ttffPage
	read := func() bool {
		ctx, cancel := context.WithTimeout(tab, 5*time.Second)
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[ttffPage]("window.__ttff || {frames: []}"))
		if err == nil {
			pg = v
		}
		return err == nil
	}
	deadline := time.Now().Add(15 * time.Second)
	for (pg.Frame == nil || pg.Decoded == nil) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		read()
	}
	if pg.Frame == nil {
		t.Logf("no frame presented within 15 s: %+v", pg)
		return j, false
	}
	time.Sleep(3 * time.Second)
	read()
	if pg.Connected != nil {
		j.connected = *pg.Connected
	}
	if pg.Decoded != nil {
		j.decoded = *pg.Decoded
	}
	j.presented = *pg.Frame
	// Delay from the source to the screen for the frames shown 2-3 s after
	// the first: with the GOP replayed at its own pace this is how far into
	// the GOP the tab joined; from the live edge it is a few frames.
	first := pg.Origin + *pg.Frame
	var delays []float64
	for _, f := range pg.Frames {
		if f[0] < first+2000 || f[0] > first+3000 || f[1] < 0 {
			continue
		}
		if at, ok := src.sentAt(uint32(f[1])); ok {
			delays = append(delays, f[0]-float64(at.UnixMicro())/1000)
		}
	}
	if len(delays) > 0 {
		slices.Sort(delays)
		j.liveDelay = delays[len(delays)/2]
	}
	for _, f := range pg.Frames {
		if f[0] <= first+3000 {
			j.framesIn3s++
		}
	}
	ctx, cancel := context.WithTimeout(tab, 5*time.Second)
	defer cancel()
	steps, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]float64](
		"Object.fromEntries(Object.entries(window.__ttff).filter(([k, v]) => typeof v === 'number' && k !== 'origin'))"))
	if err == nil {
		// Where the page's own load went: the document and its slowest
		// sub-resource (the module graph is fetched a level at a time).
		res, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]float64](`(() => {
  const n = performance.getEntriesByType('navigation')[0] || {};
  const r = performance.getEntriesByType('resource').filter((e) => !e.name.includes('/api/'));
  return { docResponse: n.responseEnd || 0, domInteractive: n.domInteractive || 0,
           lastResource: Math.max(0, ...r.map((e) => e.responseEnd)), resources: r.length };
})()`))
		if err == nil {
			maps.Copy(steps, res)
		}
		keys := make([]string, 0, len(steps))
		for k := range steps {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int { return int(steps[a] - steps[b]) })
		for _, k := range keys {
			j.steps += fmt.Sprintf(" %s=%.0f", k, steps[k])
		}
	}
	return j, true
}
