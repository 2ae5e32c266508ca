package main

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// newTab opens another tab in the browser of ctx (one Chromium for several
// viewers keeps the test light on two cores).
func newTab(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(ctx)
	t.Cleanup(cancel)
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("open tab: %v", err)
	}
	return tab
}

// evalJS evaluates expr in the page (awaiting a promise) with a bound.
func evalJS[T any](ctx context.Context, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// relayState is what a watch page says about its place in the tree.
type relayState struct {
	ID            string  `json:"id"`
	Parent        string  `json:"parent"`
	Children      float64 `json:"children"`
	BytesRelayed  float64 `json:"bytesRelayed"`
	Capacity      float64 `json:"capacity"`
	RelayStatus   string  `json:"relayStatus"`
	ChildrenSeen  float64 `json:"childrenSeen"`
	FramesDecoded float64 `json:"framesDecoded"`
}

const relayStateJS = `(async () => {
  const c = window.canopy && window.canopy.client;
  if (!c) return {};
  const s = await c.stats();
  const el = document.getElementById('relay-status');
  return {id: c.id || '', parent: c.parentId || '', children: s.children, bytesRelayed: s.bytesRelayed,
          capacity: c.capacity, relayStatus: el ? el.textContent : '', childrenSeen: c.children.size,
          framesDecoded: s.framesDecoded};
})()`

func readRelayState(t *testing.T, ctx context.Context) relayState {
	t.Helper()
	s, err := evalJS[relayState](ctx, relayStateJS)
	if err != nil {
		t.Fatalf("read page: %v", err)
	}
	return s
}

// TestBrowserRelayHealsWhenItsGoParentCrashes builds source → Go relay →
// browser A → browser B (the source and the Go relay take one child each,
// browsers at most one), checks that B decodes what A relays, then crashes
// the Go relay. The server re-attaches A to the source; A swaps the new
// tracks into B's sender, so both play again and B keeps its parent.
func TestBrowserRelayHealsWhenItsGoParentCrashes(t *testing.T) {
	const stream = "relayed"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1, BrowserMaxCapacity: 1})
	src := startSource(t, srvURL, stream, 1)
	proxy := startProxy(t, srvURL)
	relay := startPeer(t, proxy.url(), stream, protocol.RoleRelay, 1, nil)
	waitFor(t, 10*time.Second, "Go relay placed under the source", func() bool { return relay.node.Parent() == src.node.ID() })
	relayID := relay.node.ID()

	tabA := newBrowser(t)
	if err := chromedp.Do(tabA, chromedp.Navigate(srvURL+"/watch/"+stream+"?stats=1")); err != nil {
		t.Fatal(err)
	}
	waitPlaying(t, tabA, 10, 45*time.Second)
	a := readRelayState(t, tabA)
	if a.Parent != relayID {
		t.Fatalf("browser A's parent is %q, want the Go relay %s", a.Parent, relayID)
	}
	if a.Capacity != 2 {
		t.Errorf("browser A claims capacity %v, want the default 2", a.Capacity)
	}

	tabB := newTab(t, tabA)
	if err := chromedp.Do(tabB, chromedp.Navigate(srvURL+"/watch/"+stream+"?relay=0")); err != nil {
		t.Fatal(err)
	}
	waitPlaying(t, tabB, 10, 60*time.Second)
	b := readRelayState(t, tabB)
	if b.Parent != a.ID {
		t.Fatalf("browser B's parent is %q, want browser A %s", b.Parent, a.ID)
	}
	if b.Capacity != 0 {
		t.Errorf("browser B opened with ?relay=0 claims capacity %v", b.Capacity)
	}
	var before relayState
	waitFor(t, 20*time.Second, "A reports relaying to B", func() bool {
		before = readRelayState(t, tabA)
		return before.Children == 1 && before.BytesRelayed > 0
	})
	t.Logf("before the crash: A %+v", before)
	framesA := waitPlaying(t, tabA, 0, 5*time.Second).FramesDecoded
	framesB := waitPlaying(t, tabB, 0, 5*time.Second).FramesDecoded

	proxy.cutAll() // the Go relay's signaling drops: a crash to the server
	waitFor(t, 15*time.Second, "A re-attached to the source", func() bool {
		return readRelayState(t, tabA).Parent == src.node.ID()
	})
	afterA := waitPlaying(t, tabA, framesA+60, 45*time.Second)
	afterB := waitPlaying(t, tabB, framesB+60, 45*time.Second)
	t.Logf("after the crash: A %+v, B %+v", afterA, afterB)

	b2 := readRelayState(t, tabB)
	if b2.Parent != a.ID || b2.ID != b.ID {
		t.Errorf("B moved (id %s parent %s, was id %s parent %s); its relay's parent change should not reach it", b2.ID, b2.Parent, b.ID, a.ID)
	}
	var tr treeResponse
	getJSON(t, srvURL+"/api/streams/"+stream+"/tree", &tr)
	for _, n := range tr.Nodes {
		if n.ID == relayID {
			t.Errorf("the crashed relay is still in the tree: %+v", n)
		}
	}
	// B still plays after a few more seconds: its frames come through A's new feed.
	waitPlaying(t, tabB, afterB.FramesDecoded+60, 30*time.Second)
	a2 := readRelayState(t, tabA)
	if a2.BytesRelayed <= before.BytesRelayed || a2.Children != 1 {
		t.Errorf("A's relay figures did not grow: before %+v after %+v", before, a2)
	}
	saveScreenshot(t, tabA, "watch-relay.png")
}

// TestBrowserRelayToggle turns relaying off in a tab that feeds another:
// the server takes the child away (here it has nowhere else to go, so it
// waits in the queue) while the tab itself keeps playing under the same id;
// turning relaying back on gives the child back, and it plays again.
func TestBrowserRelayToggle(t *testing.T) {
	browserTest(t)
	const stream = "toggle"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1, BrowserMaxCapacity: 1})
	startSource(t, srvURL, stream, 1)

	tabA := newBrowser(t)
	if err := chromedp.Do(tabA, chromedp.Navigate(srvURL+"/watch/"+stream)); err != nil {
		t.Fatal(err)
	}
	waitPlaying(t, tabA, 10, 45*time.Second)
	a := readRelayState(t, tabA)
	tabB := newTab(t, tabA)
	if err := chromedp.Do(tabB, chromedp.Navigate(srvURL+"/watch/"+stream+"?relay=0")); err != nil {
		t.Fatal(err)
	}
	waitPlaying(t, tabB, 10, 60*time.Second)
	if b := readRelayState(t, tabB); b.Parent != a.ID {
		t.Fatalf("browser B's parent is %q, want browser A %s", b.Parent, a.ID)
	}

	toggle := `(() => { document.getElementById('relay').click(); return true; })()`
	if _, err := evalJS[bool](tabA, toggle); err != nil {
		t.Fatal(err)
	}
	queued := func() bool {
		var tr treeResponse
		getJSON(t, srvURL+"/api/streams/"+stream+"/tree", &tr)
		for _, n := range tr.Nodes {
			if n.ID == a.ID && (n.Capacity != 0 || len(n.Children) != 0) {
				return false
			}
		}
		return true
	}
	waitFor(t, 15*time.Second, "A feeds nobody after relaying is turned off", queued)
	framesA := waitPlaying(t, tabA, 0, 5*time.Second).FramesDecoded
	waitPlaying(t, tabA, framesA+60, 30*time.Second)
	if a2 := readRelayState(t, tabA); a2.ID != a.ID || a2.Capacity != 0 {
		t.Errorf("A after turning relaying off: id %s capacity %v (was id %s); it should stay, with capacity 0", a2.ID, a2.Capacity, a.ID)
	}

	if _, err := evalJS[bool](tabA, toggle); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "B placed under A again", func() bool { return readRelayState(t, tabB).Parent == a.ID })
	framesB := waitPlaying(t, tabB, 0, 5*time.Second).FramesDecoded
	waitPlaying(t, tabB, framesB+60, 45*time.Second)
}
