package main

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// dashboardView is what the dashboard page shows, read from its DOM.
type dashboardView struct {
	Nodes  []string          `json:"nodes"`  // data-id of every SVG node, sorted
	States map[string]string `json:"states"` // id → state-* class
	Edges  int               `json:"edges"`
	Labels []string          `json:"labels"` // edge labels
	Peers  string            `json:"peers"`  // the Peers figure
	Status string            `json:"status"`
	Verify map[string]string `json:"verify"` // id → its signed-frames label
}

const dashboardJS = `(() => {
  const nodes = [...document.querySelectorAll('#tree g.node')];
  const states = {};
  const verify = {};
  for (const g of nodes) {
    const c = [...g.classList].find((c) => c.startsWith('state-'));
    states[g.dataset.id] = c ? c.slice(6) : '';
    verify[g.dataset.id] = g.querySelector('.verify')?.textContent ?? '';
  }
  return {
    nodes: nodes.map((g) => g.dataset.id).sort(),
    states,
    verify,
    edges: document.querySelectorAll('#tree g.edge').length,
    labels: [...document.querySelectorAll('#tree .edge-label')].map((t) => t.textContent).filter(Boolean),
    peers: document.getElementById('f-peers').textContent,
    status: document.getElementById('status').textContent,
  };
})()`

func readDashboard(ctx context.Context) (dashboardView, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[dashboardView](dashboardJS))
}

// waitDashboard polls the page until cond holds.
func waitDashboard(t *testing.T, ctx context.Context, what string, cond func(dashboardView) bool) dashboardView {
	t.Helper()
	var last dashboardView
	var lastErr error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		v, err := readDashboard(ctx)
		if err == nil && cond(v) {
			return v
		}
		last, lastErr = v, err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("dashboard: timed out waiting for %s; last %+v (err %v)", what, last, lastErr)
	return last
}

// TestDashboardDrawsTheTree opens /stats/<stream> in headless Chromium over
// a stream of signaling-only peers that report stats: one SVG node per peer,
// coloured by health, edges labelled with bitrate and loss; a viewer leaves
// and the drawing follows. It saves a screenshot for people to look at.
func TestDashboardDrawsTheTree(t *testing.T) {
	browserTest(t)
	// The relay below crashes on signaling alone (its peers have no media to
	// go silent): a short resume grace ends its suspension (suspend.go).
	_, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2}, Resume: ResumeConfig{Grace: 100 * time.Millisecond}})
	const stream = "dash"
	src := dialSig(t, url, stream, protocol.RoleSource, protocol.KindGo, 2)
	relays := []*sigPeer{
		dialSig(t, url, stream, protocol.RoleRelay, protocol.KindGo, 3),
		dialSig(t, url, stream, protocol.RoleRelay, protocol.KindGo, 3),
	}
	for _, r := range relays {
		r.waitFor(10*time.Second, "relay placed", func(m *protocol.Message) bool { return m.Type == protocol.TypeParent })
	}
	var viewers []*sigPeer
	for range 6 {
		v := dialSig(t, url, stream, protocol.RoleViewer, protocol.KindBrowser, 0)
		v.waitFor(10*time.Second, "viewer placed", func(m *protocol.Message) bool { return m.Type == protocol.TypeParent })
		v.live(v.parent()) // it plays: its relay has proven it forwards (trust.go)
		viewers = append(viewers, v)
	}

	// Everyone plays: realistic reports, one lossy viewer.
	src.stats(protocol.Stats{BytesRelayed: 4_800_000, PacketsRelayed: 4400, RelayBitrateKbps: 4800, Children: 2})
	for i, r := range relays {
		r.stats(protocol.Stats{BytesReceived: 2_400_000, PacketsReceived: 2200, PacketsLost: uint64(2 * i),
			BytesRelayed: 7_200_000, RelayBitrateKbps: 7200, BitrateKbps: 2400, FirstFrameMs: 420 + 60*float64(i), Children: 3})
		r.live(src.id)
	}
	for i, v := range viewers {
		lost := uint64(i % 2)
		if i == 4 {
			lost = 70 // about 3%
		}
		v.stats(protocol.Stats{BytesReceived: 2_300_000, PacketsReceived: 2200, PacketsLost: lost, BitrateKbps: 2350 - 40*float64(i),
			FramesDecoded: 300, JitterMs: 4 + float64(i), FirstFrameMs: 610 + 85*float64(i), StallMs: 400 * float64(i%3)})
	}

	// The second relay crashes: its slot under the source goes to one of
	// its viewers, which recovers; the other two wait in the queue.
	relays[1].close()
	var moved *sigPeer
	waitFor(t, 10*time.Second, "an orphan moved up", func() bool {
		for _, v := range viewers {
			if v.parent() == src.id {
				moved = v
				return true
			}
		}
		return false
	})
	moved.live(src.id)

	var api statsResponse
	waitFor(t, 10*time.Second, "the recovery in the API", func() bool {
		getJSON(t, url+"/api/streams/"+stream+"/stats", &api)
		return len(api.Figures.Recoveries) == 1
	})
	want := make([]string, 0, len(api.Nodes))
	for _, n := range api.Nodes {
		want = append(want, n.ID)
	}
	slices.Sort(want)
	if len(want) != 8 {
		t.Fatalf("API lists %d nodes, want 8 (source, relay, six viewers)", len(want))
	}

	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"/stats/"+stream)); err != nil {
		t.Fatal(err)
	}
	v := waitDashboard(t, ctx, "one node per peer", func(v dashboardView) bool { return slices.Equal(v.Nodes, want) })
	if v.States[src.id] != stateSource || v.States[moved.id] != stateLive || v.States[relays[0].id] != stateLive {
		t.Errorf("states %v: want source %s, live relay and moved viewer", v.States, src.id)
	}
	queued := 0
	for _, s := range v.States {
		if s == stateQueued {
			queued++
		}
	}
	if queued != 2 {
		t.Errorf("%d queued nodes drawn, want the crashed relay's 2 other viewers", queued)
	}
	if v.Edges != 5 || len(v.Labels) == 0 || v.Peers != "7" || v.Status != "live" {
		t.Errorf("dashboard %+v: want 5 labelled edges, 7 peers, live", v)
	}

	// A viewer under the remaining relay leaves; a queued one takes its
	// slot, and the page follows without a reload.
	var leaver *sigPeer
	for _, vw := range viewers {
		if vw.parent() == relays[0].id {
			leaver = vw
			break
		}
	}
	if leaver == nil {
		t.Fatal("no viewer under the remaining relay")
	}
	leaver.close()
	v = waitDashboard(t, ctx, "the leaver gone", func(v dashboardView) bool {
		_, there := v.States[leaver.id]
		return len(v.Nodes) == 7 && !there
	})
	t.Logf("after the leave: %d nodes, states %v, edge labels %q", len(v.Nodes), v.States, v.Labels)
	if v.Peers != "6" {
		t.Errorf("peers figure %q after a leave, want 6", v.Peers)
	}
	saveScreenshot(t, ctx, fmt.Sprintf("dashboard-%s.png", stream))
}
