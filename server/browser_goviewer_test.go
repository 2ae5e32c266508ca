package main

import (
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestGoViewersPlayUnderChromiumRelay: Go viewers placed below a
// pass-through Chromium relay play from it, byte for byte. The relay's
// senders are track-less, so Chromium makes their track ids up; a Go child
// took them as undeclared tracks, its packets reached no forwarder, it
// reported the relay stalled after 1.5 s and had it barred (the ~1.5 s
// stalls seen below Chromium relays). Each join's time to its first
// complete frame is logged (the test source ignores keyframe requests and
// makes one every 2 s; a new non-standby child waits for it).
func TestGoViewersPlayUnderChromiumRelay(t *testing.T) {
	browserTest(t)
	const stream = "govgop"
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1})
	src := startSource(t, srvURL, stream, 1)
	tab := openStandbyTab(t, srvURL, stream, "", "R")
	type relayStats struct {
		Burst    float64                              `json:"burst"`
		Children map[string]map[string]map[string]any `json:"children"`
	}
	burst := func() float64 {
		s, err := evalJS[relayStats](tab.ctx, `window.canopy.client.relay.stats()`)
		if err != nil {
			t.Fatal(err)
		}
		return s.Burst
	}
	var joins []float64
	for i := range 3 {
		before := burst()
		joined := time.Now()
		v := startPeer(t, srvURL, stream, protocol.RoleViewer, 0, src)
		waitFor(t, 60*time.Second, "the Go viewer plays", func() bool { f, _, _ := v.counts(); return f >= 30 })
		if p := v.node.Parent(); p != tab.id {
			t.Fatalf("viewer %d plays from %s, want the Chromium relay %s", i, p, tab.id)
		}
		first := v.firstFrameAfter(joined)
		joins = append(joins, float64(first.Sub(joined).Milliseconds()))
		t.Logf("viewer %d: join → first complete frame %d ms; the relay burst %.0f cached frames to it", i, first.Sub(joined).Milliseconds(), burst()-before)
		if _, mismatch, _ := v.counts(); mismatch > 0 {
			t.Errorf("viewer %d: %d frames differ from the source's", i, mismatch)
		}
		if i == 1 {
			_ = v.node.Close() // a slot for the third
		}
	}
	t.Logf("join → first complete frame, ms: %v; load %s", joins, loadAverage())
}
