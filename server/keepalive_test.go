package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestPingAnswered: a peer's ping gets a pong at once from its edge; one
// in another encoding reaches the owner, which answers too; a burst gets
// at most one pong per pongEvery.
func TestPingAnswered(t *testing.T) {
	lightTest(t)
	_, url := startServer(t, tree.Config{})
	startSource(t, url, "ping", 1)
	p, _ := join(t, url, protocol.RoleViewer, protocol.KindBrowser, "ping", 0)
	p.send(`{"type":"ping"}`)
	p.next(protocol.TypePong)
	time.Sleep(pongEvery) // the rate limit's own interval, not a wait for a condition
	p.send(`{ "type": "ping" }`)
	p.next(protocol.TypePong)
	time.Sleep(pongEvery)
	for range 20 {
		p.send(`{"type":"ping"}`)
	}
	pongs := 0
	end := time.After(pongEvery + pongEvery/2)
	for done := false; !done; {
		select {
		case m := <-p.in:
			if m.Type == protocol.TypePong {
				pongs++
			}
		case <-end:
			done = true
		}
	}
	if pongs < 1 || pongs > 2 {
		t.Errorf("20 pings in a burst got %d pongs in %v; want 1 or 2", pongs, pongEvery+pongEvery/2)
	}
}

// TestBrowserLeavesAStoppedServer: a Chromium viewer's server (here a
// proxy in front of it) stops without closing anything: the socket stays
// open and silent, as a SIGSTOPped server's does. The tab's unanswered
// ping tells it the server is gone, and it resumes its place through the
// next server of its list: the same id, the same parent, and it plays on.
// Before the keepalive a tab never noticed, and the server, its pings
// unanswered, removed it after 30 s.
func TestBrowserLeavesAStoppedServer(t *testing.T) {
	browserTest(t)
	s, url := startServer(t, tree.Config{SourceCapacity: 2})
	startSource(t, url, "silent", 2)
	px := startProxy(t, url)
	ctx := newBrowser(t)
	logConsole(t, ctx, "tab")
	// A page of no CSP of Canopy's (connect-src 'self' would refuse the
	// proxy's origin): a site that embeds the player with a server list.
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"/healthz")); err != nil {
		t.Fatal(err)
	}
	start := fmt.Sprintf(`(async () => {
	  const { CanopyClient } = await import('/static/js/client.js');
	  const c = new CanopyClient({ server: %q, stream: 'silent', capacity: 0 });
	  const v = document.createElement('video');
	  v.muted = true; v.autoplay = true; document.body.append(v);
	  c.addEventListener('track', (e) => { if (v.srcObject !== e.detail.stream) v.srcObject = e.detail.stream; });
	  window.__c = c; window.__v = v; window.__resumed = 0;
	  c.addEventListener('resumed', () => { window.__resumed++; });
	  c.start();
	  return true;
	})()`, px.url()+","+url)
	if _, err := evalJS[bool](ctx, start); err != nil {
		t.Fatal(err)
	}
	type state struct {
		ID      string  `json:"id"`
		State   string  `json:"state"`
		URL     string  `json:"url"`
		Frames  float64 `json:"frames"`
		Resumed float64 `json:"resumed"`
	}
	read := func() state {
		st, err := evalJS[state](ctx, `({ id: __c.id ?? '', state: __c.state, url: __c.url,
		  frames: __v.getVideoPlaybackQuality().totalVideoFrames, resumed: __resumed })`)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	var before state
	waitFor(t, 30*time.Second, "the tab plays through the proxy", func() bool {
		before = read()
		return before.State == "live" && before.Frames >= 30
	})
	parent := parentOf(s, "silent", before.ID)
	co := s.hub.get("silent")
	co.mu.Lock()
	old := co.peers[before.ID]
	co.mu.Unlock()

	px.freeze()
	stopped := time.Now()
	waitFor(t, 30*time.Second, "the tab resumes through the next server", func() bool {
		return resumedFrom(s, "silent", before.ID, old)
	})
	took := time.Since(stopped)
	// The media never stopped (its path is not the proxy's): the tab's own
	// word that it resumed is waited for, the server's welcome being on
	// its way when the server already counts the resume.
	var after state
	waitFor(t, 30*time.Second, "the tab resumes and plays on", func() bool {
		after = read()
		return after.Resumed > 0 && after.State == "live" && after.Frames >= before.Frames+60
	})
	if after.ID != before.ID || after.Resumed != 1 || after.URL == before.URL {
		t.Errorf("after the stop: %+v, before %+v; want the same id, one resume, the other server", after, before)
	}
	if got := parentOf(s, "silent", before.ID); got != parent {
		t.Errorf("the tab's parent is %q after the resume, %q before", got, parent)
	}
	t.Logf("the tab resumed %v after its server stopped (a ping after 2 s of silence, 4 s for its pong, then the server's %v check of the old connection)",
		took.Round(time.Millisecond), probeTimeout)
}
