package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// chromiumPath finds a Chromium to drive. Without one the browser tests
// skip on a developer's machine and fail in CI (CI=true), where .ci/run
// installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium found; CI must install it (.ci/run)")
	}
	t.Skip("no Chromium found; install chromium to run the browser tests")
	return ""
}

// newBrowser starts a headless Chromium with the flags FIELD-NOTES verified
// for WebRTC on loopback, plus extra ones, and returns a tab context.
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.WindowSize(1280, 800),
	}
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// pageStats is what the watch page reports through window.canopy.
type pageStats struct {
	FramesDecoded        float64 `json:"framesDecoded"`
	VideoWidth           float64 `json:"videoWidth"`
	AudioPacketsReceived float64 `json:"audioPacketsReceived"`
	State                string  `json:"state"`
}

const statsJS = `(async () => {
  const c = window.canopy && window.canopy.client;
  if (!c) return {framesDecoded: 0, videoWidth: 0, audioPacketsReceived: 0, state: 'no client'};
  const s = await c.stats();
  return {framesDecoded: s.framesDecoded || 0, videoWidth: window.canopy.video.videoWidth || 0,
          audioPacketsReceived: s.audioPacketsReceived || 0, state: c.state};
})()`

func readPageStats(ctx context.Context) (pageStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[pageStats](statsJS, chromedp.EvalAwaitPromise))
}

// waitPlaying polls the page until it has decoded more than minFrames.
func waitPlaying(t *testing.T, ctx context.Context, minFrames float64, timeout time.Duration) pageStats {
	t.Helper()
	var last pageStats
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		s, err := readPageStats(ctx)
		if err == nil {
			last = s
			if s.FramesDecoded > minFrames && s.VideoWidth > 0 {
				return s
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("page did not play within %s: last stats %+v", timeout, last)
	return last
}

// TestBrowserWatchUnderGoRelay opens the watch page in headless Chromium
// with the source full, so the browser is placed under a Go relay, and
// checks that it decodes video that keeps advancing and receives audio.
func TestBrowserWatchUnderGoRelay(t *testing.T) {
	browserTest(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 1})
	src := startSource(t, url, "browser", 1)
	relay := startPeer(t, url, "browser", protocol.RoleRelay, 4, nil)
	waitFor(t, 10*time.Second, "relay placed", func() bool { return relay.node.Parent() == src.node.ID() })

	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"/watch/browser")); err != nil {
		t.Fatal(err)
	}
	first := waitPlaying(t, ctx, 10, 45*time.Second)
	later := waitPlaying(t, ctx, first.FramesDecoded+30, 30*time.Second)
	t.Logf("browser: %+v then %+v", first, later)
	if later.AudioPacketsReceived == 0 {
		t.Error("browser received no audio")
	}
	var tr treeResponse
	getJSON(t, url+"/api/streams/browser/tree", &tr)
	for _, n := range tr.Nodes {
		if string(n.Kind) == string(protocol.KindBrowser) && n.Parent != relay.node.ID() {
			t.Errorf("browser placed under %q, want the Go relay %s", n.Parent, relay.node.ID())
		}
	}
	if relay.node.Children() != 1 {
		t.Errorf("relay feeds %d children, want the browser", relay.node.Children())
	}
}
