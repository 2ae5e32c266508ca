package peer

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"github.com/pion/rtp"
)

// TestStaleLinkSignalsDropped: a parent replaces its connection to a child
// (it closes the first and offers again, as a standby parent planned away
// and back does) while the child answers the first offer. That answer and
// the first connection's candidates reach the second connection, which
// drops them (another link), and the second connection's own answer, from
// a new upstream, connects it and carries media. Without link ids the
// first answer was applied to the second offer, ICE checked the closed
// connection's credentials, and the link never came up (TestRelayCrashRecovers
// once in eight runs).
func TestStaleLinkSignalsDropped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newTestAPI(t)
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()

	var mu sync.Mutex
	var toChild []protocol.Signal // what the parent sent, in order
	collect := func(s protocol.Signal) { mu.Lock(); toChild = append(toChild, s); mu.Unlock() }
	sent := func() []protocol.Signal {
		mu.Lock()
		defer mu.Unlock()
		return append([]protocol.Signal(nil), toChild...)
	}

	first, err := a.NewDownstream("child", []*Forwarder{f}, collect)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the first offer", func() bool { return len(sent()) > 0 })
	var stale []protocol.Signal // the child's signals for the first link
	var staleMu sync.Mutex
	up1, err := a.NewUpstream("parent", []protocol.Track{vp8Track}, func(s protocol.Signal) {
		staleMu.Lock()
		stale = append(stale, s)
		staleMu.Unlock()
	}, func(protocol.Track, *rtp.Packet) {})
	if err != nil {
		t.Fatal(err)
	}
	defer up1.Close()
	if err := up1.HandleSignal(sent()[0]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the first answer", func() bool {
		staleMu.Lock()
		defer staleMu.Unlock()
		return len(stale) > 0 && stale[0].Kind == protocol.SignalAnswer
	})
	_ = first.Close()

	// The second connection to the same child; the first answer comes now.
	mu.Lock()
	toChild = nil
	mu.Unlock()
	rec := newRecorder()
	var second *Downstream
	var secondMu sync.Mutex
	up2, err := a.NewUpstream("parent", []protocol.Track{vp8Track}, func(s protocol.Signal) {
		secondMu.Lock()
		d := second
		secondMu.Unlock()
		if err := d.HandleSignal(s); err != nil {
			t.Errorf("second link's own %s: %v", s.Kind, err)
		}
	}, rec.sink)
	if err != nil {
		t.Fatal(err)
	}
	defer up2.Close()
	toUp2 := newPump(t, func() func(protocol.Signal) error { return up2.HandleSignal })
	defer toUp2.close()
	secondMu.Lock()
	second, err = a.NewDownstream("child", []*Forwarder{f}, toUp2.send)
	secondMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	staleMu.Lock()
	old := append([]protocol.Signal(nil), stale...)
	staleMu.Unlock()
	for _, s := range old {
		if err := second.HandleSignal(s); !errors.Is(err, ErrOtherLink) {
			t.Fatalf("the first link's %s on the second connection: %v, want ErrOtherLink", s.Kind, err)
		}
	}
	if err := second.WaitConnected(ctx); err != nil {
		t.Fatalf("second connection: %v", err)
	}
	source(t, f, 1, 20)
	waitFor(t, ctx, "media on the second connection", func() bool { return rec.count("video") > 0 })

	// And the child's side: an offer of another link on an upstream that
	// applied one is a new connection's (the node replaces the upstream).
	third, err := a.NewDownstream("child2", []*Forwarder{f}, collect)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	waitFor(t, ctx, "the third offer", func() bool {
		for _, s := range sent() {
			if s.Kind == protocol.SignalOffer && s.Link == third.link.Load() {
				return true
			}
		}
		return false
	})
	var offer protocol.Signal
	for _, s := range sent() {
		if s.Kind == protocol.SignalOffer && s.Link == third.link.Load() {
			offer = s
		}
	}
	if !up2.Reoffered(offer) {
		t.Error("an offer of another link is not taken for a new connection's")
	}
	if err := up2.HandleSignal(offer); !errors.Is(err, ErrOtherLink) {
		t.Errorf("another link's offer on an upstream with one: %v, want ErrOtherLink", err)
	}
}
