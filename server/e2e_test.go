package main

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestGoTreeEndToEnd runs a source, two levels of Go relays and four Go
// viewers through the server, and checks that every viewer receives
// complete frames byte-identical to what the source sent, while the source
// feeds no more peers than its capacity.
func TestGoTreeEndToEnd(t *testing.T) {
	lightTest(t)
	const sourceCap, relayCap = 2, 2
	_, url := startServer(t, tree.Config{SourceCapacity: sourceCap})
	src := startSource(t, url, "e2e", sourceCap)

	var relays []*testViewer
	for i := range 4 {
		r := startPeer(t, url, "e2e", protocol.RoleRelay, relayCap, nil)
		waitFor(t, 10*time.Second, "relay placed", func() bool { return r.node.Parent() != "" })
		relays = append(relays, r)
		t.Logf("relay %d %s at depth %d under %s", i, r.node.ID(), r.node.Depth(), r.node.Parent())
	}
	var viewers []*testViewer
	for range 4 {
		viewers = append(viewers, startPeer(t, url, "e2e", protocol.RoleViewer, 0, src))
	}

	const want = 90 // three seconds of video, across at least one keyframe
	for i, v := range viewers {
		waitFor(t, 45*time.Second, "viewer frames", func() bool { f, _, _ := v.counts(); return f >= want })
		frames, mismatch, audio := v.counts()
		t.Logf("viewer %d depth %d: %d frames, %d mismatched, %d audio packets", i, v.node.Depth(), frames, mismatch, audio)
		if mismatch != 0 {
			t.Errorf("viewer %d: %d of %d frames differ from what the source sent", i, mismatch, frames)
		}
		if audio == 0 {
			t.Errorf("viewer %d received no audio", i)
		}
	}

	if n := src.node.Children(); n > sourceCap {
		t.Errorf("source feeds %d peers, capacity %d", n, sourceCap)
	}
	maxRelayDepth := 0
	for _, r := range relays {
		maxRelayDepth = max(maxRelayDepth, r.node.Depth())
	}
	if maxRelayDepth < 2 {
		t.Errorf("relays reach depth %d; the test needs two levels of relays", maxRelayDepth)
	}
	deepest := 0
	for _, v := range viewers {
		deepest = max(deepest, v.node.Depth())
	}
	if deepest < 3 {
		t.Errorf("deepest viewer at depth %d; want one behind two relays", deepest)
	}

	// The API agrees with what the peers were told.
	var tr treeResponse
	getJSON(t, url+"/api/streams/e2e/tree", &tr)
	if len(tr.Nodes) != 9 || !tr.Live {
		t.Fatalf("tree has %d nodes (live %v), want 9 live", len(tr.Nodes), tr.Live)
	}
	for _, n := range tr.Nodes {
		if n.ID == src.node.ID() && len(n.Children) > sourceCap {
			t.Errorf("tree: source has %d children", len(n.Children))
		}
	}
	var streams []streamInfo
	getJSON(t, url+"/api/streams", &streams)
	if len(streams) != 1 || streams[0].ID != "e2e" || streams[0].Viewers != 8 || !streams[0].Live {
		t.Errorf("/api/streams = %+v", streams)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
