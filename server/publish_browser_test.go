package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// publishPage is what /publish/<stream> shows, read through the DOM.
type publishPage struct {
	Badge    string `json:"badge"`
	Notice   string `json:"notice"`
	Viewers  string `json:"viewers"`
	Tree     string `json:"tree"`
	Session  string `json:"session"`
	Preview  int    `json:"preview"`
	HasStart bool   `json:"hasStart"`
}

const publishPageJS = `(() => {
  const t = (id) => (document.getElementById(id) || {}).textContent || '';
  const p = window.canopyPublish;
  return {badge: t('badge'), notice: t('notice'), viewers: t('viewers'), tree: t('treesize'),
          session: p && p.session ? p.session.state : '', preview: document.getElementById('preview').videoWidth || 0,
          hasStart: !!(p && p.start)};
})()`

func readPublishPage(ctx context.Context) (publishPage, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[publishPage](publishPageJS))
}

// waitPublishPage polls the publish page until cond holds.
func waitPublishPage(t *testing.T, ctx context.Context, timeout time.Duration, what string, cond func(publishPage) bool) publishPage {
	t.Helper()
	var last publishPage
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p, err := readPublishPage(ctx); err == nil {
			last = p
			if cond(p) {
				return p
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("publish page: %s not reached within %s; last %+v", what, timeout, last)
	return last
}

// TestBrowserPublishPage publishes from /publish/<stream> in headless
// Chromium with its fake camera and microphone, through the page's own
// WHIP client: a Go viewer two hops down (under a Go relay) and a
// Chromium viewer decode it, the page shows the audience, and Stop takes
// the stream offline for everyone while they stay connected.
func TestBrowserPublishPage(t *testing.T) {
	browserTest(t)
	for _, tc := range []struct{ name, query, codec string }{
		{"VP8", "?codec=VP8", "VP8"},
		{"H264", "?codec=H264", "H264"},
		{"screen", "?source=screen", "VP8"},
	} {
		t.Run(tc.name, func(t *testing.T) { browserPublish(t, tc.query, tc.codec) })
	}
}

func browserPublish(t *testing.T, query, codec string) {
	screen := strings.Contains(query, "screen")
	_, url := startServer(t, tree.Config{SourceCapacity: 1})
	pub := newBrowser(t, chromedp.Flag("use-fake-device-for-media-stream", true))
	if err := chromedp.Do(pub, chromedp.Navigate(url+"/publish/cam"+query)); err != nil {
		t.Fatal(err)
	}
	if screen {
		// A screen picker opens only on a click of the person's own, so
		// the preview waits for Go live; a real click gives that gesture.
		waitPublishPage(t, pub, 30*time.Second, "the page's script", func(p publishPage) bool { return p.HasStart })
		if err := chromedp.Do(pub, chromedp.Click(chromedp.ID("golive"))); err != nil {
			t.Fatal(err)
		}
	} else {
		waitPublishPage(t, pub, 30*time.Second, "preview of the fake camera", func(p publishPage) bool { return p.HasStart && p.Preview > 0 })
		clickPublish(t, pub, "golive")
	}
	waitPublishPage(t, pub, 30*time.Second, "live", func(p publishPage) bool { return p.Badge == "live" })
	waitFor(t, 20*time.Second, "the stream is live", func() bool {
		var streams []streamInfo
		getJSON(t, url+"/api/streams", &streams)
		return len(streams) == 1 && streams[0].ID == "cam" && streams[0].Live
	})

	relay := startPeer(t, url, "cam", protocol.RoleRelay, 2, nil)
	waitFor(t, 20*time.Second, "the relay under the browser's source", func() bool { return relay.node.Parent() != "" })
	viewer := startPeer(t, url, "cam", protocol.RoleViewer, 0, nil)
	waitFor(t, 45*time.Second, "the Go viewer decodes the browser's stream", func() bool { f, _, _ := viewer.counts(); return f >= 60 })
	if viewer.node.Depth() != 2 || viewer.node.Parent() != relay.node.ID() {
		t.Errorf("Go viewer at depth %d under %s; want depth 2 under the relay %s", viewer.node.Depth(), viewer.node.Parent(), relay.node.ID())
	}
	if _, _, audio := viewer.counts(); audio == 0 && !screen {
		t.Error("the Go viewer received no audio from the browser's microphone")
	}
	for _, tr := range viewer.node.Tracks() {
		if tr.Kind == "video" && !strings.EqualFold(tr.MimeType, "video/"+codec) {
			t.Errorf("the stream's video is %s; the page asked for %s", tr.MimeType, codec)
		}
	}

	watch := newBrowser(t)
	if err := chromedp.Do(watch, chromedp.Navigate(url+"/watch/cam")); err != nil {
		t.Fatal(err)
	}
	s := waitPlaying(t, watch, 30, 60*time.Second)
	t.Logf("Chromium viewer: %+v", s)
	p := waitPublishPage(t, pub, 20*time.Second, "the audience figures", func(p publishPage) bool { return p.Viewers == "3" && p.Tree == "4" })
	t.Logf("publish page: %+v", p)

	clickPublish(t, pub, "stop")
	waitPublishPage(t, pub, 20*time.Second, "offline after Stop", func(p publishPage) bool { return p.Badge == "offline" && p.Session == "" })
	waitFor(t, 20*time.Second, "the Go viewer sees the stream offline", func() bool { return viewer.offlineCount() >= 1 })
	waitFor(t, 20*time.Second, "the stream is no longer live", func() bool {
		var streams []streamInfo
		getJSON(t, url+"/api/streams", &streams)
		return len(streams) == 0 || !streams[0].Live
	})
}

// clickPublish presses one of the publish page's buttons.
func clickPublish(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { document.getElementById('`+id+`').click(); return true; })()`)); err != nil {
		t.Fatalf("click %s: %v", id, err)
	}
}
