package main

import (
	"slices"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// BenchmarkOrphanStallHot is BenchmarkOrphanStall on a tree where every
// orphan can have a hot standby: two relays side by side under the source
// (capacity 2), four viewers. Each iteration kills the relay that feeds
// the most viewers, once each viewer below it holds a standby link, and
// measures, per orphan, the time from the kill to its next complete frame
// and the gap between its last frame before and its first after; it
// counts the orphans that switched over their standby link (no
// negotiation). A new relay joins after each kill. Run with
// -benchtime=20x -v for 20 kills.
func BenchmarkOrphanStallHot(b *testing.B) {
	_, url := startServer(b, tree.Config{SourceCapacity: 2})
	src := startSource(b, url, "hot", 2)
	join := func() *testViewer {
		r := startPeer(b, url, "hot", protocol.RoleRelay, 8, nil)
		waitFor(b, 10*time.Second, "relay placed", func() bool { return r.node.Parent() != "" })
		return r
	}
	relays := []*testViewer{join(), join()}
	viewers := startViewers(b, url, "hot", 4, 30, src)
	var gaps, afterKill []float64
	orphans, hot, unready := 0, 0, 0
	b.ResetTimer()
	for b.Loop() {
		var top *testViewer
		var below []*testViewer
		for _, r := range relays {
			var kids []*testViewer
			for _, v := range viewers {
				if v.node.Parent() == r.node.ID() {
					kids = append(kids, v)
				}
			}
			if r.node.Parent() == src.node.ID() && len(kids) > len(below) {
				top, below = r, kids
			}
		}
		if top == nil {
			b.Fatal("no relay under the source feeds a viewer")
		}
		for _, v := range viewers {
			at := time.Now()
			waitFor(b, 30*time.Second, "steady playback", func() bool { return v.lastFrameAt().After(at) })
		}
		for _, v := range below {
			if !waitUntil(10*time.Second, func() bool { return v.node.Standby() != "" }) {
				unready++ // measured anyway: it recovers the negotiated way
			}
		}
		last := make([]time.Time, len(below))
		events := make([][2]int, len(below))
		standby := make([]string, len(below))
		for i, v := range below {
			last[i], events[i], standby[i] = v.lastFrameAt(), v.eventCounts(), v.node.Standby()
		}
		killed := time.Now()
		top.node.Kill()
		for _, v := range viewers {
			waitFor(b, 30*time.Second, "viewer plays again", func() bool { return v.lastFrameAt().After(killed) })
		}
		for i, v := range below {
			first := v.firstFrameAfter(killed)
			gaps = append(gaps, float64(first.Sub(last[i]).Microseconds())/1000)
			afterKill = append(afterKill, float64(first.Sub(killed).Microseconds())/1000)
			orphans++
			if parents, isHot, _ := v.eventsSince(events[i]); len(parents) > 0 && isHot[0] && parents[0] == standby[i] {
				hot++
			}
		}
		relays = slices.DeleteFunc(relays, func(r *testViewer) bool { return r == top })
		relays = append(relays, join())
	}
	b.StopTimer()
	b.Logf("kill → next complete frame per orphan, ms: %.0f", afterKill)
	b.Logf("gap per orphan, ms: %.0f", gaps)
	b.Logf("%d orphans, %d switched over their hot standby link, %d had none planned in time", orphans, hot, unready)
	slices.Sort(gaps)
	slices.Sort(afterKill)
	b.ReportMetric(afterKill[len(afterKill)/2], "p50-kill-to-frame-ms")
	b.ReportMetric(afterKill[len(afterKill)*95/100], "p95-kill-to-frame-ms")
	b.ReportMetric(afterKill[len(afterKill)-1], "max-kill-to-frame-ms")
	b.ReportMetric(gaps[len(gaps)/2], "p50-stall-ms")
	b.ReportMetric(gaps[len(gaps)*95/100], "p95-stall-ms")
	b.ReportMetric(gaps[len(gaps)-1], "max-stall-ms")
	b.ReportMetric(float64(hot)/float64(orphans), "hot-fraction")
}

// waitUntil polls cond until it holds (true) or timeout passes (false).
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
