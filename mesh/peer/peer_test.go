package peer

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"github.com/pion/rtp"
	"github.com/pion/transport/v4/test"
)

// source writes n packets of one track into f, paced so that loopback UDP
// buffers never overflow, and returns the payloads sent.
func source(t *testing.T, f *Forwarder, ssrc uint32, n int) [][]byte {
	t.Helper()
	sent := make([][]byte, 0, n)
	p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: ssrc, PayloadType: 100}}
	buf := make([]byte, 1200)
	for i := range n {
		p.SequenceNumber = uint16(1000 + i)
		p.Timestamp = uint32(i / 5 * 3000)
		p.Marker = i%5 == 4
		if f.Track().Kind == "video" {
			copy(buf, vp8Payload(i, i%50 == 0, i%5 == 0, 1000+i%100))
			p.Payload = buf[:1000+i%100]
		} else {
			p.Payload = buf[:100+i%50]
			for j := range p.Payload {
				p.Payload[j] = byte(i + j)
			}
		}
		sent = append(sent, append([]byte(nil), p.Payload...))
		if err := f.WriteRTP(p); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			time.Sleep(time.Millisecond) // pacing, not an assertion
		}
	}
	return sent
}

func samePayloads(t *testing.T, who string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d packets, want %d", who, len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: packet %d differs or is out of order", who, i)
		}
	}
}

// TestFanOutThreeChildren: one forwarder per track, three children; every
// child receives the same payload bytes in order.
func TestFanOutThreeChildren(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newTestAPI(t)
	video, audio := NewForwarder(vp8Track, testLogger()), NewForwarder(opusTrack, testLogger())
	defer video.Close()
	defer audio.Close()

	recs := make([]*recorder, 3)
	for i := range recs {
		recs[i] = newRecorder()
		l := newLink(t, ctx, a, fmt.Sprintf("child%d", i), []*Forwarder{video, audio}, recs[i].sink)
		defer l.close()
	}
	wantVideo := source(t, video, 1, 300)
	wantAudio := source(t, audio, 2, 150)
	for i, r := range recs {
		waitFor(t, ctx, "all packets", func() bool { return r.count("video") >= 300 && r.count("audio") >= 150 })
		samePayloads(t, fmt.Sprintf("child%d video", i), r.get("video"), wantVideo)
		samePayloads(t, fmt.Sprintf("child%d audio", i), r.get("audio"), wantAudio)
	}
	if st := video.Stats(); st.PacketsOut != 900 || st.Drops != 0 || st.Children != 3 {
		t.Fatalf("video stats %+v", st)
	}
}

// TestRelayChain: source → relay → leaf; the relay's upstream sink feeds its
// own forwarder, and the leaf gets the source's payload bytes.
func TestRelayChain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newTestAPI(t)
	src := NewForwarder(vp8Track, testLogger())
	defer src.Close()
	relay := NewForwarder(vp8Track, testLogger())
	defer relay.Close()

	leaf := newRecorder()
	l2 := newLink(t, ctx, a, "leaf", []*Forwarder{relay}, leaf.sink)
	defer l2.close()
	l1 := newLink(t, ctx, a, "relay", []*Forwarder{src}, func(_ protocol.Track, p *rtp.Packet) {
		_ = relay.WriteRTP(p) // one reader goroutine per track: the Forwarder's one writer
	})
	defer l1.close()

	want := source(t, src, 7, 300)
	waitFor(t, ctx, "leaf packets", func() bool { return leaf.count("video") >= 300 })
	samePayloads(t, "leaf", leaf.get("video"), want)
}

// TestPLIReachesForwarder: a child's PLI arrives on KeyframeRequests.
func TestPLIReachesForwarder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newTestAPI(t)
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	rec := newRecorder()
	l := newLink(t, ctx, a, "child", []*Forwarder{f}, rec.sink)
	defer l.close()
	source(t, f, 1, 20)
	waitFor(t, ctx, "media", func() bool { return rec.count("video") > 0 })

	// Drain the bind's request, lift the throttle, then ask from the child.
	select {
	case <-f.KeyframeRequests():
	default:
	}
	f.lastKeyReq.Store(0)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		l.up.RequestKeyframe()
		select {
		case <-f.KeyframeRequests():
			return
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("PLI never reached the forwarder")
		}
	}
}

// TestCloseIdempotentNoLeaks: Close twice on everything, then no goroutine
// of ours or pion's is left.
func TestCloseIdempotentNoLeaks(t *testing.T) {
	defer test.CheckRoutines(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newTestAPI(t)
	f := NewForwarder(vp8Track, testLogger())
	rec := newRecorder()
	l := newLink(t, ctx, a, "child", []*Forwarder{f}, rec.sink)
	source(t, f, 1, 20)
	waitFor(t, ctx, "media", func() bool { return rec.count("video") > 0 })

	l.toUp.close()
	l.toDown.close()
	for range 2 {
		if err := l.down.Close(); err != nil {
			t.Fatal(err)
		}
		if err := l.up.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	select {
	case <-l.down.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if err := l.down.WaitConnected(ctx); err != nil {
		t.Fatalf("WaitConnected after a connection: %v", err)
	}
	if st := f.Stats(); st.Children != 0 {
		t.Fatalf("children left: %+v", st)
	}
}

// TestCloseBeforeAnswer: a Downstream closed before its child answered
// shuts down cleanly and WaitConnected reports ErrClosed.
func TestCloseBeforeAnswer(t *testing.T) {
	defer test.CheckRoutines(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := newTestAPI(t)
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	var offers int
	d, err := a.NewDownstream("child", []*Forwarder{f}, func(s protocol.Signal) {
		if s.Kind == protocol.SignalOffer {
			offers++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if offers != 1 {
		t.Fatalf("%d offers sent", offers)
	}
	if err := d.HandleSignal(protocol.Signal{Kind: protocol.SignalOffer, SDP: "x"}); err == nil {
		t.Fatal("an offer to a downstream was accepted")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitConnected(ctx); err != ErrClosed {
		t.Fatalf("WaitConnected = %v, want ErrClosed", err)
	}
}
