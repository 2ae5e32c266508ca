package soak

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// fakePeer is a peer with figures and no process.
func fakePeer(fate string, f progress, final bool) *peer {
	p := &peer{fate: fate, last: f}
	if final {
		p.final = &f
	}
	return p
}

// TestFiguresBreakBounds: the end-of-run checks report exactly the bounds
// broken: a long gap, goroutines left behind, RSS grown; a run within
// them passes, and a killed peer's last progress still counts.
func TestFiguresBreakBounds(t *testing.T) {
	cfg := Defaults
	cfg.fill()
	base := func() (*run, *Report) {
		r := &run{cfg: cfg, started: time.Now()}
		rep := &Report{
			IdleBefore: Sample{Goroutines: []int{60, 60}}, IdleAfter: Sample{Goroutines: []int{61, 59}},
			RampEnd: Sample{RSSMB: []float64{40, 40}}, ChurnEnd: Sample{RSSMB: []float64{45, 41}},
		}
		r.peers = []*peer{
			fakePeer("stopped", progress{Peer: "a", Frames: 900, FirstFrameMs: 50, MaxGapMs: 300, Seconds: 30}, true),
			fakePeer("crashed", progress{Peer: "b", Frames: 290, FirstFrameMs: 50, MaxGapMs: 700, SinceLastMs: 20, Seconds: 10}, false),
			fakePeer("left", progress{Peer: "c", FirstFrameMs: 0}, true), // never played: not a viewer's figure
		}
		return r, rep
	}
	r, rep := base()
	r.figures(rep)
	if len(rep.Violations) != 0 {
		t.Fatalf("within bounds, got violations %v", rep.Violations)
	}
	if rep.StallMaxMs != 700 || rep.StallMaxPeer != "b" || rep.Frames != 1190 {
		t.Errorf("figures: max stall %v (%s), frames %d; want 700 (b), 1190", rep.StallMaxMs, rep.StallMaxPeer, rep.Frames)
	}

	for name, c := range map[string]struct {
		mutate func(*run, *Report)
		want   string
	}{
		"stall": {func(r *run, _ *Report) { r.peers[0].final.MaxGapMs = 12000 }, "without a frame"},
		// A peer that never printed its report (hung) has its last gap running.
		"running gap": {func(r *run, _ *Report) {
			r.peers[0].final = nil
			r.peers[0].last.SinceLastMs = 11000
		}, "without a frame"},
		"goroutines": {func(_ *run, rep *Report) { rep.IdleAfter.Goroutines[1] = 200 }, "s2: 200 goroutines"},
		"rss":        {func(_ *run, rep *Report) { rep.ChurnEnd.RSSMB[0] = 70 }, "s1: RSS 70.0 MB"},
	} {
		r, rep := base()
		c.mutate(r, rep)
		r.figures(rep)
		if len(rep.Violations) != 1 || !strings.Contains(rep.Violations[0], c.want) {
			t.Errorf("%s: violations %q, want one with %q", name, rep.Violations, c.want)
		}
	}
}

// TestTreeFaults: places without a parent, places of peers gone, and live
// peers missing from the tree are each counted.
func TestTreeFaults(t *testing.T) {
	r := &run{live: []*peer{
		fakePeer("", progress{Peer: "a"}, false),
		fakePeer("", progress{Peer: "b"}, false),
		fakePeer("", progress{Peer: "c"}, false),
	}}
	nodes := []TreeNode{
		{ID: "src", Role: "source"},
		{ID: "a", Parent: "src", Role: "viewer"},
		{ID: "b", Role: "viewer"},                 // no parent
		{ID: "gone", Parent: "a", Role: "viewer"}, // a crashed peer's place
	}
	noParent, ghosts, missing := r.treeFaults(nodes)
	if noParent != 1 || ghosts != 1 || missing != 1 {
		t.Errorf("faults: %d without a parent, %d ghosts, %d missing; want 1 each", noParent, ghosts, missing)
	}
	if r.settled(nodes) {
		t.Error("settled with faults")
	}
}

// TestDeparturesFollowTheCrashShare: any run of departures holds within
// one of its share of crashes, whatever the random start, so a short soak
// has both kinds.
func TestDeparturesFollowTheCrashShare(t *testing.T) {
	for _, share := range []float64{0.5, 0.25, 0.9} {
		for seed := range uint64(50) {
			r := &run{cfg: Config{CrashShare: share}, rng: rand.New(rand.NewPCG(seed, 1))}
			r.owed = r.rng.Float64()
			crashes := 0
			for n := 1; n <= 40; n++ {
				if r.nextCrashes() {
					crashes++
				}
				if want := float64(n) * share; math.Abs(float64(crashes)-want) > 1 {
					t.Fatalf("share %v, seed %d: %d crashes of %d departures", share, seed, crashes, n)
				}
				if n >= 4 && share == 0.5 && (crashes == 0 || crashes == n) {
					t.Fatalf("share 0.5, seed %d: %d crashes of %d departures, want both kinds", seed, crashes, n)
				}
			}
		}
	}
}
