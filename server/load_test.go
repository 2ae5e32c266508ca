package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"canopy/mesh/load"
	"canopy/mesh/tree"
)

// TestLoadHarnessShort runs the load harness's short mode against a real
// server with its default limits: 300 signaling-level peers (relays among
// them) from 253 loopback addresses, churned hard while two real pion
// viewers play. Every simulated peer must get a parent and keep one, the
// real viewers must get complete frames throughout and never sit below a
// simulated peer, and the figures the harness prints must be there and
// sane. No assertion is about time.
func TestLoadHarnessShort(t *testing.T) {
	_, url := startServer(t, tree.Config{SourceCapacity: 4})
	debug := httptest.NewServer(debugMux())
	t.Cleanup(debug.Close)
	startSource(t, url, "load", 4) // stopped by its cleanup

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := load.Run(ctx, load.Config{
		Servers: []string{url}, Debug: []string{debug.URL}, Stream: "load",
		Viewers: 300, Rate: 300, RelayShare: 0.2, RelayCapacity: 8,
		// 300 %/min: ~45 departures in 3 s, a fifth of them relays.
		Churn: 3, Duration: 3 * time.Second,
		Media: 2, MediaFrames: 30, StatsEvery: time.Second,
		LoopbackOnly: true, Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Print(&out)
	t.Logf("\n%s", out.String())

	if rep.Placed != 300 || rep.Unplaced != 0 {
		t.Errorf("placed %d of 300, %d without a parent at the end", rep.Placed, rep.Unplaced)
	}
	for _, e := range rep.Errors {
		if e.Code != "full" { // a joiner queued for a moment while a relay above it moves
			t.Errorf("error %s ×%d: %s", e.Code, e.Count, e.Last)
		}
	}
	if !rep.MediaOK() {
		t.Errorf("media viewers: %+v (under simulated parents: %v)", rep.Media, rep.MediaUnderSimulated)
	}
	if rep.Churned == 0 || rep.Reparent.Count == 0 {
		t.Errorf("churn: %d left, %d re-parent samples", rep.Churned, rep.Reparent.Count)
	}
	if rep.Answers == 0 || rep.AnswerShapes == 0 {
		t.Errorf("no answers from simulated children (%d) or none made by pion (%d shapes)", rep.Answers, rep.AnswerShapes)
	}

	text := out.String()
	figure := func(pattern string) float64 {
		t.Helper()
		m := regexp.MustCompile(pattern).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("report has no %q", pattern)
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatalf("%q: %v", pattern, err)
		}
		return v
	}
	if v := figure(`placed in [0-9.]+ s: ([0-9.]+) joins/s`); v <= 0 {
		t.Errorf("joins/s %v", v)
	}
	p50, p99 := figure(`join → parent: p50 ([0-9.]+) ms`), figure(`join → parent: p50 [0-9.]+ ms, p99 ([0-9.]+) ms`)
	if p50 <= 0 || p99 < p50 {
		t.Errorf("join → parent p50 %v p99 %v", p50, p99)
	}
	if v := figure(`re-parent under 300%/min churn \(\d+ left in 3s\): p50 [0-9.]+ ms, p99 ([0-9.]+) ms`); v <= 0 {
		t.Errorf("re-parent p99 %v", v)
	}
	// The harness runs in this process, so the server's figures include
	// its own 300 connections' client side: sane, not the server's alone.
	if kb := figure(`([0-9.]+) KB/conn heap\+stacks \(after GC\)`); kb <= 0 || kb > 1000 {
		t.Errorf("memory per connection %v KB", kb)
	}
	if v := figure(`CPU ([0-9.]+) cores joining`); v <= 0 {
		t.Errorf("CPU while joining %v", v)
	}
	if !strings.Contains(text, "errors: ") || strings.Count(text, "complete frames") != 2 {
		t.Errorf("report misses its errors or media lines")
	}
}
