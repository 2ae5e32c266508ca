package impair

import (
	"fmt"
	"testing"
	"time"

	"canopy/mesh/protocol"
)

// TestLossAndDelayRepaired: 1 % and then 5 % random loss, with 50 ms of
// delay, on the hop from a Go relay to its viewer (netem on the viewer's
// link) are repaired hop by hop (the viewer NACKs, the relay resends from
// its own ring): the viewer's frames arrive complete, with no gap beyond a
// bound. Random loss on one path without a queue is not a full upload:
// the relay keeps its child.
func TestLossAndDelayRepaired(t *testing.T) {
	l := newLab(t, "loss")
	srvHost, rHost, vHost := l.add("srv"), l.add("r"), l.add("v")
	srv := startServer(t, srvHost, "-source-capacity", "1")
	startSource(t, srvHost, srv, 1)
	r := startPeer(t, rHost, "relay", srv.url, protocol.RoleRelay, 2)
	waitFor(t, 30*time.Second, "relay placed", func() bool { s := r.state(); return s.ID != "" && s.Parent != "" })
	hop := l.impairDownload(vHost)
	// The path has its delay from the start: the relay judges a queue by
	// round trips above the lowest it saw, and a delay that appeared mid-run
	// would read as one (with the loss, as a full upload).
	hop.set(0, 50*time.Millisecond)
	t.Logf("loss and delay by %s", hop.name())
	v := startPeer(t, vHost, "viewer", srv.url, protocol.RoleViewer, 0)
	waitPlaying(t, 60*time.Second, 2*fps, v)
	rID := r.state().ID
	if p := v.state().Parent; p != rID {
		t.Fatalf("viewer plays from %s, want the relay %s", p, rID)
	}
	const window = 15 * time.Second
	for _, p := range []float64{0.01, 0.05} {
		loss := fmt.Sprintf("%.0f %%", 100*p)
		hop.set(p, 50*time.Millisecond)
		// The qdisc is in place; let what was queued before it drain.
		waitPlaying(t, 30*time.Second, fps, v)
		v.worstGap()
		s0 := v.state()
		time.Sleep(window) // a measurement window, not a wait for a condition
		s := v.state()
		gap := v.worstGap()
		frames := s.Frames - s0.Frames
		want := uint64(fps * window.Seconds())
		t.Logf("%s loss, 50 ms delay: %d of %d frames complete (%.1f %%), largest frame gap %s; packets lost for good %d (a late repair lowers the count), in incomplete frames %d",
			loss, frames, want, 100*float64(frames)/float64(want), ms(gap), max(int64(s.Lost)-int64(s0.Lost), 0), s.Dropped-s0.Dropped)
		if float64(frames) < 0.97*float64(want) {
			t.Errorf("%s loss: %d of %d frames complete, want ≥ 97 %%", loss, frames, want)
		}
		if gap > maxGapMs {
			t.Errorf("%s loss: a frame gap of %s", loss, ms(gap))
		}
		if p := s.Parent; p != rID {
			t.Errorf("%s loss: the viewer moved to %s", loss, p)
		}
	}
	if lines := srv.grep("capacity from measured uplink"); len(lines) > 0 {
		t.Errorf("random loss on one path bounded the relay: %v", lines)
	}
}
