package peer

import (
	"context"
	"testing"
	"time"

	"canopy/mesh/protocol"
)

// newStandbyLink is newLink with a standby Downstream: it waits until both
// sides are connected, not for the Forwarders to bind the child.
func newStandbyLink(tb testing.TB, ctx context.Context, a *API, id string, fwds []*Forwarder, r *recorder) *link {
	tb.Helper()
	l := &link{}
	tracks := make([]protocol.Track, len(fwds))
	for i, f := range fwds {
		tracks[i] = f.Track()
	}
	l.toDown = newPump(tb, func() func(protocol.Signal) error {
		for l.downDone.Load() == nil {
			time.Sleep(time.Millisecond)
		}
		return l.downDone.Load().HandleSignal
	})
	up, err := a.NewUpstream("parent", tracks, l.toDown.send, r.sink)
	if err != nil {
		tb.Fatal(err)
	}
	l.up = up
	l.toUp = newPump(tb, func() func(protocol.Signal) error { return up.HandleSignal })
	down, err := a.NewStandbyDownstream(id, fwds, l.toUp.send)
	if err != nil {
		tb.Fatal(err)
	}
	l.down = down
	l.downDone.Store(down)
	if err := down.WaitConnected(ctx); err != nil {
		tb.Fatalf("downstream %s: %v", id, err)
	}
	if err := up.WaitConnected(ctx); err != nil {
		tb.Fatalf("upstream %s: %v", id, err)
	}
	return l
}

// TestStandbyLinkCarriesNothingUntilPromoted: a standby link connects (ICE
// and DTLS) but the Forwarder neither feeds the child nor asks for a
// keyframe for it; once promoted, the child gets the cached GOP at once,
// then the live packets, without any new negotiation.
func TestStandbyLinkCarriesNothingUntilPromoted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newTestAPI(t)
	video := NewForwarder(vp8Track, testLogger())
	defer video.Close()
	r := newRecorder()
	l := newStandbyLink(t, ctx, a, "standby", []*Forwarder{video}, r)
	defer l.close()
	if !l.down.Standby() {
		t.Fatal("a standby link reports it is not one")
	}
	select {
	case <-video.KeyframeRequests():
		t.Fatal("a standby link asked for a keyframe")
	default:
	}
	// 120 packets: keyframes at 0, 50 and 100, so the cache holds 100-119.
	source(t, video, 5, 120)
	time.Sleep(200 * time.Millisecond) // what would have arrived by now, had it been sent
	if n := r.count("video"); n != 0 {
		t.Fatalf("a standby link delivered %d packets before promotion", n)
	}
	if st := video.Stats(); st.Children != 0 || st.PacketsOut != 0 {
		t.Fatalf("a standby child counts as a child: %+v", st)
	}

	promoted := time.Now()
	l.down.Promote()
	l.down.Promote() // idempotent
	waitFor(t, ctx, "the cached GOP", func() bool { return r.count("video") >= 20 })
	t.Logf("GOP of 20 packets delivered %v after the promote", time.Since(promoted).Round(time.Millisecond))
	if l.down.Standby() {
		t.Error("a promoted link still reports standby")
	}
	got := r.get("video")
	if got[0][0]&0x10 == 0 || got[0][3]&0x01 != 0 {
		t.Errorf("the first packet after promotion is not the start of a key frame: % x", got[0][:4])
	}
	if st := video.Stats(); st.Children != 1 || st.Bursts != 1 {
		t.Fatalf("after promotion: %+v, want one child and one GOP burst", st)
	}
}

// TestOrdinaryDownstreamIsNoStandby: Promote on an ordinary link is a no-op.
func TestOrdinaryDownstreamIsNoStandby(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newTestAPI(t)
	video := NewForwarder(vp8Track, testLogger())
	defer video.Close()
	l := newLink(t, ctx, a, "child", []*Forwarder{video}, newRecorder().sink)
	defer l.close()
	if l.down.Standby() {
		t.Fatal("an ordinary link reports standby")
	}
	l.down.Promote()
}
