package main

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// cspInitJS runs before any of a page's scripts and records every CSP
// violation the page causes (the event is composed: shadow DOM included).
const cspInitJS = `window.__csp = [];
window.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(e.effectiveDirective + ' ' + (e.blockedURI || 'inline') + ' ' + (e.sourceFile || '') + ':' + e.lineNumber);
}, true);`

func cspViolations(t *testing.T, ctx context.Context) []string {
	t.Helper()
	v, err := evalJS[[]string](ctx, `window.__csp || ['no recorder']`)
	if err != nil {
		t.Fatalf("read CSP violations: %v", err)
	}
	return v
}

// TestPagesWorkUnderTheirCSP opens each of Canopy's pages in headless
// Chromium under the headers the server sends (script-src, style-src and
// connect-src 'self', no inline code) and checks that they still do their
// job, the watch and embed pages decoding video and the dashboard drawing
// the tree, without a single CSP violation. An injected inline style is
// then refused: the policy is in force, and the recorder sees violations.
func TestPagesWorkUnderTheirCSP(t *testing.T) {
	browserTest(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 4})
	const stream = "csp"
	startSource(t, url, stream, 4)
	startPeer(t, url, stream, protocol.RoleViewer, 0, nil) // the dashboard has an edge to draw

	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspInitJS})
		return err
	})); err != nil {
		t.Fatalf("init script: %v", err)
	}
	visit := func(path string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(url+path)); err != nil {
			t.Fatal(err)
		}
	}

	visit("/watch/" + stream + "?stats=1")
	st := waitPlaying(t, ctx, 30, 60*time.Second)
	t.Logf("/watch under CSP: %+v", st)
	if v := cspViolations(t, ctx); len(v) != 0 {
		t.Errorf("/watch: CSP violations %q", v)
	}

	visit("/embed/" + stream + "?muted=1&autoplay=1&controls=1")
	st = waitPlaying(t, ctx, 30, 60*time.Second)
	t.Logf("/embed under CSP: %+v", st)
	if v := cspViolations(t, ctx); len(v) != 0 {
		t.Errorf("/embed: CSP violations %q", v)
	}

	visit("/stats/" + stream)
	view := waitDashboard(t, ctx, "the tree is drawn", func(v dashboardView) bool { return len(v.Nodes) >= 2 && v.Edges >= 1 })
	t.Logf("/stats under CSP: %d nodes, %d edges, peers %s", len(view.Nodes), view.Edges, view.Peers)
	if v := cspViolations(t, ctx); len(v) != 0 {
		t.Errorf("/stats: CSP violations %q", v)
	}

	visit("/")
	waitFor(t, 20*time.Second, "the stream list shows the stream", func() bool {
		v, err := evalJS[bool](ctx, `!!document.querySelector('[data-stream="`+stream+`"]')`)
		return err == nil && v
	})
	if v := cspViolations(t, ctx); len(v) != 0 {
		t.Errorf("/: CSP violations %q", v)
	}

	// The control: the policy is enforced and the recorder records.
	if _, err := evalJS[bool](ctx, `(() => { const s = document.createElement('style'); s.textContent = 'body { color: red }'; document.head.append(s); return true; })()`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "an injected inline style is refused", func() bool { return len(cspViolations(t, ctx)) > 0 })
	t.Logf("injected style: %q", cspViolations(t, ctx))
}
