package impair

import (
	"testing"
	"time"

	"canopy/mesh/protocol"
)

// The demo clip: 640x360 VP8 at 30 fps, ~500 kbit/s of video and ~35 of
// audio; ~600 kbit/s a child on the wire with RTP, SRTP, UDP and IP.
const fps = 30

// maxGapMs bounds a frame gap where the tests expect smooth play: a
// receiver waits up to 500 ms for a missing packet before it gives a
// frame up (mesh/media), and the measured gaps were 0.2–0.6 s; a stall a
// viewer would notice is well beyond. A safety net on a loaded machine,
// not a measurement.
const maxGapMs = 1500

// TestCappedRelayShedsChildren: a Go relay whose upload is capped (tbf,
// 1 Mbit/s) below what its three viewers need (~1.8 Mbit/s) is bounded by
// the server to what its children's receiver reports show got through,
// and sheds viewers to another relay (make before break) until what is
// left fits; every viewer keeps playing. Before the cap, every viewer
// plays from the relay; the test reports each viewer's largest frame gap
// while the relay was over its upload, and after.
func TestCappedRelaySheds(t *testing.T) {
	l := newLab(t, "shed")
	srvHost, rHost, qHost, vHost := l.add("srv"), l.add("r"), l.add("q"), l.add("v")
	srv := startServer(t, srvHost, "-source-capacity", "2")
	startSource(t, srvHost, srv, 2)
	r := startPeer(t, rHost, "relay-r", srv.url, protocol.RoleRelay, 4)
	waitFor(t, 30*time.Second, "relay r placed", func() bool { s := r.state(); return s.ID != "" && s.Parent != "" })
	q := startPeer(t, qHost, "relay-q", srv.url, protocol.RoleRelay, 4)
	waitFor(t, 30*time.Second, "relay q placed", func() bool { s := q.state(); return s.ID != "" && s.Parent != "" })
	rID := r.state().ID
	var viewers []*proc
	for i := range 3 {
		v := startPeer(t, vHost, "viewer"+string(rune('1'+i)), srv.url, protocol.RoleViewer, 0)
		viewers = append(viewers, v)
		waitPlaying(t, 60*time.Second, fps, v)
		if i == 0 {
			// r earns its full capacity once a child plays from it.
			waitFor(t, 30*time.Second, "r proven", func() bool { return srv.tree(t)[rID].Trust == "proven" })
		}
	}
	for _, v := range viewers {
		if p := v.state().Parent; p != rID {
			t.Fatalf("%s plays from %s, want relay r %s (setup)", v.name, p, rID)
		}
	}
	waitPlaying(t, 30*time.Second, 3*fps, viewers...)
	for _, v := range viewers {
		v.worstGap()
	}

	capped := time.Now()
	l.shapeUpload(rHost, "tbf", "rate", "1mbit", "burst", "16kb", "latency", "150ms")
	t.Log("relay r's upload capped at 1 Mbit/s (tbf, 150 ms queue)")
	// What is left of r must fit: one viewer (~0.6 Mbit/s), two do not.
	var shedAt time.Duration
	waitFor(t, 90*time.Second, "r sheds down to one child", func() bool {
		tr := srv.tree(t)
		if n, ok := tr[rID]; ok && len(n.Children) <= 1 {
			shedAt = time.Since(capped)
			return true
		}
		return false
	})
	during := make([]float64, len(viewers))
	for i, v := range viewers {
		during[i] = v.worstGap()
	}
	// Every viewer keeps playing, from wherever it is now.
	const window = 10 * time.Second
	f0 := make([]uint64, len(viewers))
	for i, v := range viewers {
		f0[i] = v.state().Frames
	}
	time.Sleep(window) // a measurement window, not a wait for a condition
	tr := srv.tree(t)
	for i, v := range viewers {
		s := v.state()
		after := v.worstGap()
		played := s.Frames - f0[i]
		t.Logf("%s: parent %s; largest frame gap while r was over its upload %s, after %s; %d frames in %v",
			v.name, who(s.Parent, rID), ms(during[i]), ms(after), played, window)
		if played < uint64(fps*window.Seconds()*0.9) {
			t.Errorf("%s played %d frames in %v, want ≥ 90 %% of %d", v.name, played, window, int(fps*window.Seconds()))
		}
		if after > maxGapMs {
			t.Errorf("%s: a frame gap of %s after r shed", v.name, ms(after))
		}
	}
	t.Logf("r shed to %d child(ren) %v after the cap; usable %d of %d declared",
		len(tr[rID].Children), shedAt.Round(100*time.Millisecond), tr[rID].Usable, tr[rID].Capacity)
	for _, line := range srv.grep("capacity from measured uplink") {
		t.Logf("server: %s", line)
	}
}

func who(parent, r string) string {
	if parent == r {
		return "r"
	}
	return parent
}
