package peer

import (
	"context"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// TestLinkStatsFromReports: reception reports give a link's expected and
// lost packets since its first report (TotalLost is 24-bit and may go down
// as late packets arrive) and its round trip from LSR and DLSR.
func TestLinkStatsFromReports(t *testing.T) {
	var s rrState
	now := time.Now()
	sent := now.Add(-300 * time.Millisecond) // our sender report went out 300 ms ago
	rr := func(high, lost uint32, held time.Duration) *rtcp.ReceiverReport {
		return &rtcp.ReceiverReport{Reports: []rtcp.ReceptionReport{
			{SSRC: 9, LastSequenceNumber: 1 << 20, TotalLost: 77}, // another track's: ignored
			{SSRC: 7, LastSequenceNumber: high, TotalLost: lost, LastSenderReport: compactNTP(sent), Delay: uint32(held.Seconds() * 65536)},
		}}
	}
	s.onReport(rr(1000, 5, 100*time.Millisecond), 7, now)
	s.onReport(rr(1200, 25, 220*time.Millisecond), 7, now)
	s.onReport(rr(1100, 90, 0), 7, now) // out of order: counted, figures kept
	var st LinkStats
	s.add(&st)
	if st.Reports != 3 || st.Expected != 200 || st.Lost != 20 {
		t.Fatalf("reports %d expected %d lost %d; want 3, 200, 20", st.Reports, st.Expected, st.Lost)
	}
	// Round trips: 300-100 = 200 ms, then 300-220 = 80 ms, then 300 ms (held 0).
	near := func(d, want time.Duration) bool { return d > want-2*time.Millisecond && d < want+2*time.Millisecond }
	if !near(st.RTT, 300*time.Millisecond) || !near(st.MinRTT, 80*time.Millisecond) {
		t.Fatalf("rtt %v min %v; want 300 ms, 80 ms", st.RTT, st.MinRTT)
	}
	// Late packets lower TotalLost below the first report's: no loss, not a wrap.
	s.onReport(rr(1300, 2, 0), 7, now)
	st = LinkStats{}
	s.add(&st)
	if st.Expected != 300 || st.Lost != 0 {
		t.Fatalf("after repairs: expected %d lost %d; want 300, 0", st.Expected, st.Lost)
	}
}

// TestLinkStatsOverALink: a real child's receiver reports reach the
// Downstream: packets expected and a round trip on loopback.
func TestLinkStatsOverALink(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newTestAPI(t)
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	rec := newRecorder()
	l := newLink(t, ctx, a, "child", []*Forwarder{f}, rec.sink)
	defer l.close()
	p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 5, PayloadType: 96}}
	tick := time.NewTicker(time.Second / 30)
	defer tick.Stop()
	i := 0
	waitFor(t, ctx, "receiver reports with a round trip", func() bool {
		synthFrame(t, f, p, i, i%30 == 0, 3, 500)
		i++
		<-tick.C
		st := l.down.Link()
		return st.Reports >= 2 && st.Expected > 0 && st.RTT > 0
	})
	st := l.down.Link()
	t.Logf("after %d frames: %+v", i, st)
	if st.RTT > time.Second || st.MinRTT > st.RTT {
		t.Fatalf("implausible round trip on loopback: %+v", st)
	}
}
