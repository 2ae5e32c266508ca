package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"canopy/mesh/tree"
)

// Hot standby in Firefox (static/js/standby.js, relay.js): a tab that
// relays by re-encoding holds a standby link as a child, and, as a standby
// parent, an idle link whose senders have no track until promoted.

// firefoxStandbyTrials is how many kills TestFirefoxStandbyGoRelayKilled
// makes (CANOPY_FSTANDBY, or 1), each in a fresh tree.
func firefoxStandbyTrials() int {
	n, err := strconv.Atoi(os.Getenv("CANOPY_FSTANDBY"))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// tabStandby reads a tab's standby state in either browser.
func tabStandby(t *testing.T, p tab, name string) standbyState {
	t.Helper()
	var s standbyState
	var err error
	for range 4 {
		if s, err = tabEval[standbyState](p, standbyStateJS); err == nil {
			return s
		}
	}
	t.Fatalf("read %s's standby state: %v", name, err)
	return s
}

// tabGap waits until p has presented minFrames frames after at (wall ms)
// and returns its gap around at (frameGapJS).
func tabGap(t *testing.T, p tab, name string, at, minFrames float64, timeout time.Duration) frameGap {
	t.Helper()
	var g frameGap
	var err error
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if g, err = tabEval[frameGap](p, fmt.Sprintf(frameGapJS, at)); err == nil && g.After >= minFrames {
			return g
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not play again within %s: %+v (%v)", name, timeout, g, err)
	return g
}

// TestFirefoxStandbyGoRelayKilled: Go source (one slot) → a `client relay`
// process → two Firefox viewers. Both hold a standby link that is up (one
// to the source, the other to the first Firefox, which holds an idle
// re-encoding link that sends nothing). SIGKILL of the relay: each orphan
// plays again, at least one over its standby link (both, unless the
// server's plan differed), within maxBrowserStall. CANOPY_FSTANDBY=n
// repeats it in fresh trees for the figures.
func TestFirefoxStandbyGoRelayKilled(t *testing.T) {
	firefoxStandbyKills(t, "fsgo", func(t *testing.T, srvURL, stream, srcID string) (string, func()) {
		relay, id := startGoRelayUnderSource(t, srvURL, stream, srcID)
		return id, func() {
			if err := relay.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestFirefoxStandbyBrowserRelayKilled: the same with a Chromium relay
// (passing frames through) in the Go relay's place, its browser SIGKILLed:
// the Firefox orphans of a browser relay.
func TestFirefoxStandbyBrowserRelayKilled(t *testing.T) {
	firefoxStandbyKills(t, "fschromium", func(t *testing.T, srvURL, stream, srcID string) (string, func()) {
		c := openStandbyTab(t, srvURL, stream, "", "C")
		if s := readStandby(t, c.ctx); s.Parent != srcID {
			t.Fatalf("the Chromium relay plays from %s, not the source %s", s.Parent, srcID)
		}
		return c.id, func() { c.kill(t) }
	})
}

// relayStarter starts the relay under the source srcID and returns its id
// and how to kill it.
type relayStarter func(t *testing.T, srvURL, stream, srcID string) (id string, kill func())

// firefoxStandbyKills runs the trials with the relay start makes and logs
// the figures.
func firefoxStandbyKills(t *testing.T, stream string, start relayStarter) {
	heavyBrowserTest(t)
	firefoxPath(t)
	var gaps, firsts, baseline []float64
	orphans, hot := 0, 0
	for trial := range firefoxStandbyTrials() {
		t.Run(fmt.Sprint("trial", trial), func(t *testing.T) {
			g, f, b, h := firefoxStandbyTrial(t, fmt.Sprintf("%s%d", stream, trial), start)
			gaps, firsts, baseline = append(gaps, g...), append(firsts, f...), append(baseline, b...)
			orphans += len(g)
			hot += h
		})
	}
	t.Logf("Firefox orphans %d, %d over their standby link; stall (largest presented-frame gap) p50 %.0f p95 %.0f max %.0f ms; kill → first frame p50 %.0f p95 %.0f ms; the same tabs' largest gap in the 7 s before, no switch: p50 %.0f p95 %.0f ms; load %s",
		orphans, hot, quantile(gaps, 0.5), quantile(gaps, 0.95), quantile(gaps, 1), quantile(firsts, 0.5), quantile(firsts, 0.95),
		quantile(baseline, 0.5), quantile(baseline, 0.95), loadAverage())
}

// firefoxStandbyTrial runs one tree and one kill; it returns the orphans'
// gaps, times to the first frame after the kill and their gaps before
// (ms), and how many switched over their standby link.
func firefoxStandbyTrial(t *testing.T, stream string, start relayStarter) (gaps, firsts, before []float64, hot int) {
	_, srvURL := startServer(t, tree.Config{SourceCapacity: 1})
	src := startSource(t, srvURL, stream, 1)
	relayID, kill := start(t, srvURL, stream, src.node.ID())
	tabs := map[string]*firefox{"F1": openFirefoxViewer(t, srvURL, stream, "", "F1"), "F2": openFirefoxViewer(t, srvURL, stream, "", "F2")}
	names := []string{"F1", "F2"}
	for _, name := range names {
		if _, err := tabEval[bool](tabs[name], frameClockJS); err != nil {
			t.Fatalf("%s: record frames: %v", name, err)
		}
	}
	states := map[string]standbyState{}
	ready := waitUntil(60*time.Second, func() bool {
		for _, name := range names {
			states[name] = tabStandby(t, tabs[name], name)
		}
		for _, s := range states {
			if s.Parent != relayID || !s.StandbyUp {
				return false
			}
		}
		return true
	})
	if !ready {
		t.Fatalf("both Firefox viewers under the relay %s, holding standby links that are up: %+v", relayID, states)
	}
	byID := map[string]string{}
	for _, name := range names {
		byID[states[name].ID] = name
	}
	// A Firefox that is the other's standby parent holds an idle link: up,
	// carrying nothing, and not a child.
	for _, name := range names {
		for _, o := range names {
			if states[o].Standby != states[name].ID {
				continue
			}
			idle, err := tabEval[struct {
				Links float64        `json:"links"`
				RTP   []senderReport `json:"rtp"`
			}](tabs[name], standbySendersJS)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s's idle link to %s: %+v", name, o, idle)
			if idle.Links == 0 {
				t.Errorf("%s holds no standby link for %s", name, o)
			}
			for _, r := range idle.RTP {
				if r.FramesSent != 0 || r.FramesEncoded != 0 || r.PacketsSent != 0 {
					t.Errorf("%s's standby link to %s carries media: %+v", name, o, r)
				}
			}
			if s := tabStandby(t, tabs[name], name); s.Children != 0 {
				t.Errorf("%s counts %v children; its standby link is not one", name, s.Children)
			}
		}
	}
	for _, name := range names {
		standby := states[name].Standby
		if n, ok := byID[standby]; ok {
			standby = n
		} else if standby == src.node.ID() {
			standby = "the source"
		}
		t.Logf("%s (%s): standby parent %s", name, states[name].ID, standby)
	}
	// Measure from a steady picture, as the Chromium trials do: a stall
	// then is the switch's, not a new link's ramp-up.
	steadyTab := func(p tab) bool {
		s, err := tabEval[struct {
			Gap float64 `json:"gap"`
			N   float64 `json:"n"`
		}](p, steadyJS)
		return err == nil && s.N >= 60 && s.Gap < 400
	}
	if !waitUntil(40*time.Second, func() bool { return steadyTab(tabs["F1"]) && steadyTab(tabs["F2"]) }) {
		t.Logf("the Firefox viewers do not play steadily; measuring anyway")
	}
	killed := time.Now()
	kill()
	at := wallMs(killed)
	for _, name := range names {
		g := tabGap(t, tabs[name], name, at, 60, 60*time.Second)
		s := tabStandby(t, tabs[name], name)
		t.Logf("orphan %s: gap %.0f ms (largest in the 7 s before: %.0f), first frame %.0f ms after the kill; parent %s (standby was %s), switches %v; load %s",
			name, g.Gap, g.Before, g.FirstAfter-at, s.Parent, states[name].Standby, s.Switches, loadAverage())
		if s.Parent == states[name].Standby && s.Switches >= 1 {
			hot++
		} else {
			t.Logf("orphan %s went to %s, not over its standby link to %s (the server's plan differed)", name, s.Parent, states[name].Standby)
		}
		if g.Gap > float64(maxBrowserStall.Milliseconds()) {
			t.Errorf("orphan %s stalled %.0f ms", name, g.Gap)
		}
		gaps, firsts, before = append(gaps, g.Gap), append(firsts, g.FirstAfter-at), append(before, g.Before)
	}
	if hot == 0 {
		t.Error("neither Firefox orphan played again over its standby link")
	}
	return gaps, firsts, before, hot
}
