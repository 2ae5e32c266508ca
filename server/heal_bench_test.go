package main

import (
	"slices"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// BenchmarkOrphanStall kills the relay that feeds everyone (the source's
// only child) once per iteration and measures, for each viewer, the gap
// between its last frame before the kill and its first frame after it.
// Run with -benchtime=20x for 20 kills; it prints p50/p95/max of the gap.
func BenchmarkOrphanStall(b *testing.B) {
	_, url := startServer(b, tree.Config{SourceCapacity: 1})
	src := startSource(b, url, "stall", 1)
	join := func() *testViewer {
		r := startPeer(b, url, "stall", protocol.RoleRelay, 8, nil)
		waitFor(b, 10*time.Second, "relay placed", func() bool { return r.node.Parent() != "" })
		return r
	}
	relays := []*testViewer{join(), join()}
	viewers := startViewers(b, url, "stall", 4, 30, src)
	var gaps []float64
	b.ResetTimer()
	for b.Loop() {
		var top *testViewer
		for _, r := range relays {
			if r.node.Parent() == src.node.ID() {
				top = r
			}
		}
		if top == nil {
			b.Fatal("no relay under the source")
		}
		// Let everyone settle into steady playback before the next kill.
		for _, v := range viewers {
			at := time.Now()
			waitFor(b, 30*time.Second, "steady playback", func() bool { return v.lastFrameAt().After(at) })
		}
		last := make([]time.Time, len(viewers))
		for i, v := range viewers {
			last[i] = v.lastFrameAt()
		}
		killed := time.Now()
		top.node.Kill()
		for _, v := range viewers {
			waitFor(b, 30*time.Second, "viewer plays again", func() bool { return v.lastFrameAt().After(killed) })
		}
		for i, v := range viewers {
			// The first frame after the kill; lastFrameAt may already be later.
			gaps = append(gaps, float64(v.firstFrameAfter(killed).Sub(last[i]).Microseconds())/1000)
		}
		relays = slices.DeleteFunc(relays, func(r *testViewer) bool { return r == top })
		relays = append(relays, join())
	}
	b.StopTimer()
	b.Logf("stall per viewer per kill, ms: %.0f", gaps)
	slices.Sort(gaps)
	b.ReportMetric(gaps[len(gaps)/2], "p50-stall-ms")
	b.ReportMetric(gaps[len(gaps)*95/100], "p95-stall-ms")
	b.ReportMetric(gaps[len(gaps)-1], "max-stall-ms")
}
