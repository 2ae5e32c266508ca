package soak

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// Sample is the servers' state at one moment, in the cluster's order.
type Sample struct {
	What       string    `json:"what"`
	At         float64   `json:"atS"` // seconds since the soak started
	Goroutines []int     `json:"goroutines"`
	RSSMB      []float64 `json:"rssMB"`
	Tree       int       `json:"tree"`  // nodes in the soak stream's tree, the source included
	Peers      int       `json:"peers"` // live media peers
	Load       string    `json:"load"`
}

// Report is what a soak measured and the bounds it broke (Violations;
// none: it passed).
type Report struct {
	Config map[string]string `json:"config"`
	Dir    string            `json:"dir,omitempty"` // logs, kept when it failed

	Joins   int `json:"joins"`
	Leaves  int `json:"leaves"`
	Crashes int `json:"crashes"`

	// Per viewer (every peer that played): its largest gap between two
	// frames, and for those that never got a frame again, the time since.
	StallP50Ms   float64 `json:"stallP50Ms"`
	StallP95Ms   float64 `json:"stallP95Ms"`
	StallMaxMs   float64 `json:"stallMaxMs"`
	StallMaxPeer string  `json:"stallMaxPeer"`
	// Stalls over 1 s: how many viewers had one.
	ViewersStalled1s int     `json:"viewersStalledOver1s"`
	FirstFrameP50Ms  float64 `json:"firstFrameP50Ms"`
	FirstFrameP95Ms  float64 `json:"firstFrameP95Ms"`
	Frames           int     `json:"frames"`
	FramesExpected   int     `json:"framesExpected"` // FPS × each viewer's time after its first frame
	FramesRatioMin   float64 `json:"framesRatioMin"` // the worst viewer's (those watching ≥ 10 s)
	ReParents        int     `json:"reParents"`      // parent changes, summed over the viewers

	SettleSeconds float64 `json:"settleS"`
	WithoutParent int     `json:"withoutParent"` // at the end of the settle
	Ghosts        int     `json:"ghosts"`        // places of peers that went, still in the tree then
	Missing       int     `json:"missing"`       // live peers not in the tree then

	IdleBefore Sample   `json:"idleBefore"`
	RampEnd    Sample   `json:"rampEnd"`
	ChurnEnd   Sample   `json:"churnEnd"`
	IdleAfter  Sample   `json:"idleAfter"`
	Samples    []Sample `json:"samples"`

	Sim        string   `json:"sim,omitempty"` // client load's last line
	LoadStart  string   `json:"loadStart"`
	LoadEnd    string   `json:"loadEnd"`
	Violations []string `json:"violations"`
}

func reportConfig(c Config) map[string]string {
	return map[string]string{
		"servers": fmt.Sprint(c.Servers), "peers": fmt.Sprint(c.Peers), "duration": c.Duration.String(),
		"churn": fmt.Sprintf("%.0f%%/min", 100*c.Churn), "crashShare": fmt.Sprint(c.CrashShare),
		"relayShare": fmt.Sprint(c.RelayShare), "relayCapacity": fmt.Sprint(c.RelayCapacity),
		"sim": fmt.Sprint(c.Sim), "maxStall": c.MaxStall.String(), "seed": fmt.Sprint(c.Seed),
	}
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// figures fills the report from every peer's figures and checks the
// bounds measured at the end: stalls, goroutines, memory.
func (r *run) figures(rep *Report) {
	r.mu.Lock()
	peers := append([]*peer(nil), r.peers...)
	rep.Joins, rep.Leaves, rep.Crashes = r.joins, r.leaves, r.crashes
	r.mu.Unlock()
	var stalls, firsts []float64
	rep.FramesRatioMin = 1
	for _, p := range peers {
		f := p.figures()
		if f.FirstFrameMs == 0 {
			continue
		}
		firsts = append(firsts, f.FirstFrameMs)
		stall := f.MaxGapMs
		p.mu.Lock()
		fate := p.fate
		p.mu.Unlock()
		if fate != "crashed" && p.final == nil {
			stall = max(stall, f.SinceLastMs) // it never printed a report: its last gap still ran
		}
		stalls = append(stalls, stall)
		if stall > rep.StallMaxMs {
			rep.StallMaxMs, rep.StallMaxPeer = stall, f.Peer
		}
		if stall > 1000 {
			rep.ViewersStalled1s++
		}
		watched := f.Seconds - f.FirstFrameMs/1000
		expected := int(watched * r.cfg.FPS)
		rep.Frames += f.Frames
		rep.FramesExpected += expected
		if watched >= 10 && expected > 0 {
			rep.FramesRatioMin = min(rep.FramesRatioMin, float64(f.Frames)/float64(expected))
		}
		rep.ReParents += f.ParentChanges
	}
	rep.StallP50Ms, rep.StallP95Ms = round1(quantile(stalls, 0.5)), round1(quantile(stalls, 0.95))
	rep.StallMaxMs = round1(rep.StallMaxMs)
	rep.FirstFrameP50Ms, rep.FirstFrameP95Ms = round1(quantile(firsts, 0.5)), round1(quantile(firsts, 0.95))
	rep.FramesRatioMin = math.Round(rep.FramesRatioMin*1000) / 1000
	if rep.StallMaxMs > float64(r.cfg.MaxStall.Milliseconds()) {
		r.violate("a viewer (%s) went %.1f s without a frame (bound %s)", rep.StallMaxPeer, rep.StallMaxMs/1000, r.cfg.MaxStall)
	}
	for i := range rep.IdleBefore.Goroutines {
		if i >= len(rep.IdleAfter.Goroutines) {
			break
		}
		b, a := rep.IdleBefore.Goroutines[i], rep.IdleAfter.Goroutines[i]
		if a > b+r.cfg.MaxGoGrowth {
			r.violate("s%d: %d goroutines idle after the soak, %d before (bound +%d)", i+1, a, b, r.cfg.MaxGoGrowth)
		}
	}
	for i := range rep.RampEnd.RSSMB {
		if i >= len(rep.ChurnEnd.RSSMB) {
			break
		}
		b, a := rep.RampEnd.RSSMB[i], rep.ChurnEnd.RSSMB[i]
		if b > 0 && a > b*r.cfg.MaxRSSRatio {
			r.violate("s%d: RSS %.1f MB at the end of the churn, %.1f MB at the end of the ramp (bound ×%.2f)", i+1, a, b, r.cfg.MaxRSSRatio)
		}
	}
	r.mu.Lock()
	rep.Violations = append([]string(nil), r.violations...)
	r.mu.Unlock()
}

// Print writes the report for a reader.
func (rep *Report) Print(w io.Writer) {
	c := rep.Config
	fmt.Fprintf(w, "churn soak: %s servers, %s real peers (%s forwarding, %s children), %s at %s, %s of departures crashes, %s simulated viewers; seed %s\n",
		c["servers"], c["peers"], c["relayShare"], c["relayCapacity"], c["duration"], c["churn"], c["crashShare"], c["sim"], c["seed"])
	fmt.Fprintf(w, "peers: %d joins, %d graceful leaves, %d crashes (SIGKILL)\n", rep.Joins, rep.Leaves, rep.Crashes)
	fmt.Fprintf(w, "viewers' largest gap without a frame: p50 %.0f ms, p95 %.0f ms, max %.0f ms (%s); %d viewers had one over 1 s\n",
		rep.StallP50Ms, rep.StallP95Ms, rep.StallMaxMs, rep.StallMaxPeer, rep.ViewersStalled1s)
	ratio := 0.0
	if rep.FramesExpected > 0 {
		ratio = float64(rep.Frames) / float64(rep.FramesExpected)
	}
	fmt.Fprintf(w, "frames: %d received of %d expected (%.3f; worst viewer %.3f); first frame p50 %.0f ms, p95 %.0f ms; %d re-parents\n",
		rep.Frames, rep.FramesExpected, ratio, rep.FramesRatioMin, rep.FirstFrameP50Ms, rep.FirstFrameP95Ms, rep.ReParents)
	fmt.Fprintf(w, "after the churn: settled in %.1f s; %d without a parent, %d places of peers gone, %d live peers missing\n",
		rep.SettleSeconds, rep.WithoutParent, rep.Ghosts, rep.Missing)
	for _, s := range []Sample{rep.IdleBefore, rep.RampEnd, rep.ChurnEnd, rep.IdleAfter} {
		fmt.Fprintf(w, "  %-12s t=%6.1fs peers %3d tree %3d goroutines %v RSS MB %v load %s\n", s.What, s.At, s.Peers, s.Tree, s.Goroutines, s.RSSMB, s.Load)
	}
	var gmax []int
	var rmax []float64
	for _, s := range rep.Samples {
		for i, g := range s.Goroutines {
			if i >= len(gmax) {
				gmax, rmax = append(gmax, 0), append(rmax, 0)
			}
			gmax[i], rmax[i] = max(gmax[i], g), max(rmax[i], s.RSSMB[i])
		}
	}
	fmt.Fprintf(w, "  largest over %d samples: goroutines %v, RSS MB %v\n", len(rep.Samples), gmax, rmax)
	if rep.Sim != "" {
		fmt.Fprintf(w, "simulated audience: %s\n", rep.Sim)
	}
	fmt.Fprintf(w, "load average: %s at the start, %s at the end\n", rep.LoadStart, rep.LoadEnd)
	if len(rep.Violations) == 0 {
		fmt.Fprintln(w, "PASS")
		return
	}
	fmt.Fprintf(w, "FAIL: %d violations\n  %s\n", len(rep.Violations), strings.Join(rep.Violations, "\n  "))
	if rep.Dir != "" {
		fmt.Fprintf(w, "logs in %s\n", rep.Dir)
	}
}
