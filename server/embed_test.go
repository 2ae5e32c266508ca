package main

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"canopy/mesh/tree"
)

var (
	screenshotOnce sync.Once
	screenshotPath string
)

// screenshotDir is $CANOPY_SCREENSHOTS, or a temporary directory that
// outlives the test run so the images can be looked at; it is logged.
func screenshotDir(t *testing.T) string {
	t.Helper()
	screenshotOnce.Do(func() {
		screenshotPath = os.Getenv("CANOPY_SCREENSHOTS")
		if screenshotPath == "" {
			dir, err := os.MkdirTemp("", "canopy-screenshots-")
			if err != nil {
				return
			}
			screenshotPath = dir
		}
		_ = os.MkdirAll(screenshotPath, 0o755)
	})
	return screenshotPath
}

// saveScreenshot writes a PNG of the tab's page. A failure is logged, not
// fatal: screenshots are for people, the assertions are elsewhere.
func saveScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := screenshotDir(t)
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	t.Logf("screenshot: %s", path)
}

// TestEmbedRoutesHeaders checks what lets other sites embed the player: the
// iframe page may be framed, and the script and modules carry CORS headers.
func TestEmbedRoutesHeaders(t *testing.T) {
	lightTest(t)
	_, srvURL := startServer(t, tree.Config{})
	for _, tc := range []struct {
		path, contentType string
		cors              bool
	}{
		{"/embed/demo?muted=1&autoplay=1&controls=1", "text/html", false},
		{"/embed.js", "javascript", true},
		{"/static/js/player-element.js", "javascript", true},
		{"/static/js/client.js", "javascript", true},
	} {
		req, _ := http.NewRequest(http.MethodGet, srvURL+tc.path, nil)
		req.Header.Set("Origin", "https://partner.example")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", tc.path, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); !strings.Contains(ct, tc.contentType) {
			t.Errorf("%s: Content-Type %q, want %s", tc.path, ct, tc.contentType)
		}
		if xfo := res.Header.Get("X-Frame-Options"); xfo != "" {
			t.Errorf("%s: X-Frame-Options %q forbids embedding", tc.path, xfo)
		}
		if got := res.Header.Get("Access-Control-Allow-Origin"); tc.cors && got != "*" {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want *", tc.path, got)
		}
	}
	res, err := http.Get(srvURL + "/api/streams")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("/api/streams: Access-Control-Allow-Origin %q; only the player's assets are shared", got)
	}
}

// partnerPage is a page on another origin that embeds a stream twice: with
// the web component and with the iframe. It records the component's events
// and the iframe's posted messages in window globals for the test to read.
const partnerPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Partner site</title>
<style>
  body { margin: 0; padding: 28px; background: #f3f4f6; color: #111827; font: 15px/1.5 system-ui, sans-serif; }
  h1 { margin: 0 0 4px; font-size: 22px; } p { margin: 0 0 20px; color: #4b5563; }
  .row { display: flex; gap: 24px; flex-wrap: wrap; }
  .col { flex: 1 1 420px; background: #fff; padding: 16px; border-radius: 14px; box-shadow: 0 1px 3px rgba(0,0,0,.08); }
  h2 { margin: 0 0 10px; font-size: 14px; text-transform: uppercase; letter-spacing: .06em; color: #6b7280; }
  canopy-player { border-radius: 10px; }
  iframe { width: 100%%; aspect-ratio: 16 / 9; border: 0; border-radius: 10px; display: block; }
</style>
<script type="module" src="%[1]s/embed.js"></script>
</head><body>
<h1>Partner site</h1><p>Another origin embedding a Canopy stream two ways.</p>
<div class="row">
  <div class="col"><h2>&lt;canopy-player&gt;</h2>
    <canopy-player id="player" stream="%[2]s" server="%[1]s"></canopy-player></div>
  <div class="col"><h2>iframe</h2>
    <iframe id="frame" src="%[1]s/embed/%[2]s?muted=1&amp;autoplay=1&amp;controls=1" allow="autoplay; fullscreen" allowfullscreen></iframe></div>
</div>
<script>
  window.events = []; window.frameEvents = []; window.frameStats = null;
  const p = document.getElementById('player');
  for (const type of ['live', 'stalled', 'reconnecting', 'offline', 'parentchange']) {
    p.addEventListener(type, () => window.events.push(type));
  }
  window.addEventListener('message', (e) => {
    if (!e.data || e.data.source !== 'canopy') return;
    if (e.data.event === 'stats') window.frameStats = e.data.detail;
    else window.frameEvents.push(e.data.event);
  });
</script>
</body></html>`

// embedState is what the partner page has seen.
type embedState struct {
	Events        []string `json:"events"`
	FrameEvents   []string `json:"frameEvents"`
	Frames        float64  `json:"frames"`
	Width         float64  `json:"width"`
	FrameFrames   float64  `json:"frameFrames"`
	FrameWidth    float64  `json:"frameWidth"`
	ComponentSays string   `json:"state"`
}

const embedStateJS = `(() => {
  const p = document.getElementById('player');
  const s = p && p.stats;
  const f = window.frameStats;
  return {events: window.events || [], frameEvents: window.frameEvents || [],
          frames: s ? s.framesDecoded : 0, width: p && p.video ? p.video.videoWidth : 0,
          frameFrames: f ? f.framesDecoded : 0, frameWidth: f ? (f.videoWidth || 0) : 0,
          state: p && p.state ? p.state : ''};
})()`

// TestEmbedPlaysOnAnotherOrigin serves a page from a second loopback origin
// with the web component (loaded from the Canopy server through /embed.js)
// and the iframe player, and checks that both decode frames and that the
// component fires 'live'. Then it takes the screenshots of the player pages.
func TestEmbedPlaysOnAnotherOrigin(t *testing.T) {
	browserTest(t)
	const stream = "embedded"
	var canopyURL string
	partner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, partnerPage, html.EscapeString(canopyURL), stream)
	}))
	t.Cleanup(partner.Close)
	// No -allow-origin: embedding a public stream needs no configuration.
	s := NewServer(Config{Policy: tree.Config{}, Logger: testLogger()})
	canopyURL = serve(t, s)
	startSource(t, canopyURL, stream, 4)
	if partner.URL == canopyURL {
		t.Fatal("the partner page must be on another origin")
	}

	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(partner.URL+"/")); err != nil {
		t.Fatal(err)
	}
	var st embedState
	read := func() embedState {
		v, err := evalJS[embedState](ctx, embedStateJS)
		if err != nil {
			t.Fatalf("read partner page: %v", err)
		}
		return v
	}
	has := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	waitFor(t, 60*time.Second, "the component fires live and decodes frames", func() bool {
		st = read()
		return has(st.Events, "live") && has(st.Events, "parentchange") && st.Frames > 10 && st.Width > 0
	})
	first := st
	waitFor(t, 60*time.Second, "the iframe player posts live and decodes frames", func() bool {
		st = read()
		return has(st.FrameEvents, "live") && st.FrameFrames > 10 && st.FrameWidth > 0
	})
	waitFor(t, 30*time.Second, "both keep decoding", func() bool {
		st = read()
		return st.Frames > first.Frames+30 && st.FrameFrames > 30
	})
	t.Logf("partner page: %+v", st)
	if st.ComponentSays != "live" {
		t.Errorf("component state %q, want live", st.ComponentSays)
	}
	var tr treeResponse
	getJSON(t, canopyURL+"/api/streams/"+stream+"/tree", &tr)
	if len(tr.Nodes) != 3 {
		t.Errorf("tree has %d nodes, want the source and two browsers: %+v", len(tr.Nodes), tr.Nodes)
	}
	saveScreenshot(t, ctx, "partner-page.png")

	// The stream list at / finds the stream by itself (it polls /api/streams).
	if err := chromedp.Do(ctx, chromedp.Navigate(canopyURL+"/")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the stream list shows the stream", func() bool {
		v, err := evalJS[string](ctx, `(() => { const c = document.querySelector('[data-stream="`+stream+`"] .card-sub'); return c ? c.textContent : ''; })()`)
		return err == nil && v != ""
	})
	saveScreenshot(t, ctx, "index.png")

	// The player pages themselves, as people see them.
	shots := []struct {
		name, path string
		w, h       int64
		mobile     bool
		play       bool
	}{
		{"watch-desktop.png", "/watch/" + stream + "?stats=1", 1280, 800, false, true},
		{"watch-phone.png", "/watch/" + stream, 390, 844, true, true},
		{"embed.png", "/embed/" + stream + "?muted=1&autoplay=1&controls=1", 640, 360, false, true},
		{"watch-offline.png", "/watch/nosuchstream", 1280, 800, false, false},
	}
	for _, sh := range shots {
		var opts []chromedp.EmulateViewportOption
		if sh.mobile {
			opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateScale(2))
		}
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(sh.w, sh.h, opts...), chromedp.Navigate(canopyURL+sh.path)); err != nil {
			t.Fatal(err)
		}
		if sh.play {
			waitPlaying(t, ctx, 30, 45*time.Second)
			// Rates need two samples; the overlay has faded by then too.
			waitFor(t, 15*time.Second, "the player knows its bitrate", func() bool {
				v, err := evalJS[float64](ctx, `(() => { const p = window.canopy && window.canopy.player; return p && p.stats ? p.stats.bitrateKbps : 0; })()`)
				return err == nil && v > 0
			})
		} else {
			waitFor(t, 20*time.Second, "the page shows offline", func() bool {
				v, err := evalJS[string](ctx, `window.canopy && window.canopy.player ? window.canopy.player.state : ''`)
				return err == nil && v == "offline"
			})
		}
		saveScreenshot(t, ctx, sh.name)
	}
}
