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
// between its last frame before the kill and its first frame after it, and
// the time from the kill to that first frame, and counts the viewers that
// switched over a hot standby link (README "Standby parents"). Here the
// heir is the other relay, which joined below the killed one and has not
// proven itself (trust): it has one usable slot, so one orphan holds a
// standby link to it and the others are placed once it plays; see
// BenchmarkOrphanStallHot for a tree where every orphan has one. Run with
// -benchtime=20x for 20 kills; it prints p50/p95/max of both.
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
	var gaps, afterKill []float64
	hot, switched := 0, 0
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
		events := make([][2]int, len(viewers))
		for i, v := range viewers {
			last[i] = v.lastFrameAt()
			events[i] = v.eventCounts()
		}
		killed := time.Now()
		top.node.Kill()
		for _, v := range viewers {
			waitFor(b, 30*time.Second, "viewer plays again", func() bool { return v.lastFrameAt().After(killed) })
		}
		for i, v := range viewers {
			// The first frame after the kill; lastFrameAt may already be later.
			first := v.firstFrameAfter(killed)
			gaps = append(gaps, float64(first.Sub(last[i]).Microseconds())/1000)
			afterKill = append(afterKill, float64(first.Sub(killed).Microseconds())/1000)
			if parents, isHot, _ := v.eventsSince(events[i]); len(parents) > 0 {
				switched++
				if isHot[len(isHot)-1] {
					hot++
				}
			}
		}
		relays = slices.DeleteFunc(relays, func(r *testViewer) bool { return r == top })
		relays = append(relays, join())
	}
	b.StopTimer()
	b.Logf("stall per viewer per kill, ms: %.0f", gaps)
	b.Logf("kill → next complete frame per viewer per kill, ms: %.0f", afterKill)
	b.Logf("%d viewers changed parent, %d of them over their hot standby link", switched, hot)
	slices.Sort(gaps)
	slices.Sort(afterKill)
	b.ReportMetric(gaps[len(gaps)/2], "p50-stall-ms")
	b.ReportMetric(gaps[len(gaps)*95/100], "p95-stall-ms")
	b.ReportMetric(gaps[len(gaps)-1], "max-stall-ms")
	b.ReportMetric(afterKill[len(afterKill)/2], "p50-kill-to-frame-ms")
	b.ReportMetric(afterKill[len(afterKill)*95/100], "p95-kill-to-frame-ms")
	b.ReportMetric(afterKill[len(afterKill)-1], "max-kill-to-frame-ms")
	b.ReportMetric(float64(hot), "hot-switches")
}
