package peer

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"canopy/mesh/media"
)

func TestVP8Keyframe(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"plain key", []byte{0x10, 0x00}, true},
		{"plain delta", []byte{0x10, 0x01}, false},
		{"not start", []byte{0x00, 0x00}, false},
		{"partition 1", []byte{0x11, 0x00}, false},
		{"7-bit picture id key", []byte{0x90, 0x80, 0x05, 0x00}, true},
		{"15-bit picture id key", []byte{0x90, 0x80, 0x85, 0x05, 0x00}, true},
		{"15-bit picture id delta", []byte{0x90, 0x80, 0x85, 0x05, 0x01}, false},
		{"tl0 and tid key", []byte{0x90, 0x70, 0x01, 0x02, 0x00}, true},
		{"truncated", []byte{0x90, 0x80}, false},
		{"empty", nil, false},
		{"helper key", vp8Payload(3, true, true, 20), true},
		{"helper delta", vp8Payload(3, false, true, 20), false},
	} {
		if got := media.IsVP8Keyframe(tc.p); got != tc.want {
			t.Errorf("%s: got %v want %v", tc.name, got, tc.want)
		}
	}
}

func TestH264Keyframe(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"IDR", []byte{0x65, 0x88}, true},
		{"SPS", []byte{0x67, 0x42}, true},
		{"non-IDR", []byte{0x41, 0x9a}, false},
		{"STAP-A with SPS", []byte{0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce}, true},
		{"STAP-A without", []byte{0x78, 0x00, 0x02, 0x41, 0x42}, false},
		{"FU-A IDR start", []byte{0x7c, 0x85, 0x00}, true},
		{"FU-A IDR middle", []byte{0x7c, 0x05, 0x00}, false},
		{"FU-A non-IDR start", []byte{0x7c, 0x81, 0x00}, false},
		{"truncated FU-A", []byte{0x7c}, false},
		{"empty", nil, false},
	} {
		if got := media.IsH264Keyframe(tc.p); got != tc.want {
			t.Errorf("%s: got %v want %v", tc.name, got, tc.want)
		}
	}
}

func TestCodecPreferences(t *testing.T) {
	for _, tc := range []struct {
		mime, fmtp string
		wantPT     uint8
	}{
		{"video/VP8", "", 96},
		{"video/H264", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", 106},
		{"video/h264", "packetization-mode=1;profile-level-id=42001f", 102},
		{"video/H264", "", 104}, // no fmtp: packetization mode 0
		{"audio/opus", "", 111},
	} {
		f := NewForwarder(vp8Track, nil)
		f.codec.MimeType, f.codec.SDPFmtpLine = tc.mime, tc.fmtp
		f.codec.ClockRate = 90000
		if tc.mime == "audio/opus" {
			f.codec.ClockRate, f.codec.Channels = 48000, 2
		}
		prefs, err := codecPreferences(f.codec)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.mime, tc.fmtp, err)
		}
		if uint8(prefs[0].PayloadType) != tc.wantPT {
			t.Errorf("%s %s: got pt %d want %d", tc.mime, tc.fmtp, prefs[0].PayloadType, tc.wantPT)
		}
	}
	if _, err := codecPreferences(f0().codec); err == nil {
		t.Error("VP9 accepted")
	}
}

func f0() *Forwarder {
	f := NewForwarder(vp8Track, nil)
	f.codec.MimeType = "video/VP9"
	return f
}

// TestSlowChildDoesNotStallOthers: a child whose writer never returns loses
// packets, the others get every one; the stuck child resumes at a keyframe
// and a keyframe request goes upstream.
func TestSlowChildDoesNotStallOthers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	fast := &discardWriter{}
	slow := &discardWriter{block: make(chan struct{}), keep: true}
	var unblock sync.Once
	defer unblock.Do(func() { close(slow.block) }) // before f.Close, which waits for the writers
	bindFake(t, f, "fast", 1, fast)
	bindFake(t, f, "slow", 2, slow)
	<-f.KeyframeRequests() // the bind asked for a keyframe
	f.lastKeyReq.Store(0)  // lift the throttle so the overflow's request shows

	const total = 2000
	p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 99}}
	write := func(i int) {
		p.SequenceNumber = uint16(i)
		p.Timestamp = uint32(i/10) * 3000
		p.Payload = vp8Payload(i, i%100 == 0, i%10 == 0, 100)
		if err := f.WriteRTP(p); err != nil {
			t.Fatal(err)
		}
		if i%64 == 63 { // let the fast child keep up: only the slow one may overflow
			waitFor(t, ctx, "fast child", func() bool { return fast.n.Load() == uint64(i+1) })
		}
	}
	for i := range total {
		write(i)
	}
	waitFor(t, ctx, "fast child to get every packet", func() bool { return fast.n.Load() == total })
	st := f.Stats()
	if st.Drops == 0 {
		t.Fatalf("no drops counted: %+v", st)
	}
	select {
	case <-f.KeyframeRequests():
	default:
		t.Fatal("overflow did not request a keyframe")
	}

	// Unstick the slow child, write more, and check it resumed at a keyframe.
	unblock.Do(func() { close(slow.block) })
	waitFor(t, ctx, "slow child to drain", func() bool { return slow.n.Load() >= videoQueueSlots })
	for i := total; i < total+300; i++ {
		write(i)
	}
	waitFor(t, ctx, "slow child to get the tail", func() bool {
		slow.mu.Lock()
		defer slow.mu.Unlock()
		return len(slow.headers) > 0 && slow.headers[len(slow.headers)-1].SequenceNumber == total+299
	})
	slow.mu.Lock()
	defer slow.mu.Unlock()
	prev := slow.headers[0].SequenceNumber
	resumed := false
	for _, h := range slow.headers[1:] {
		if h.SequenceNumber != prev+1 {
			if h.SequenceNumber%100 != 0 {
				t.Fatalf("slow child resumed at %d, not at a keyframe", h.SequenceNumber)
			}
			resumed = true
		}
		prev = h.SequenceNumber
	}
	if !resumed {
		t.Fatal("slow child saw no gap")
	}
}

// TestSSRCChangeKeepsSequenceContinuous: when the incoming SSRC changes, the
// children see one stream: consecutive sequence numbers, a small timestamp
// step, their own SSRC and payload type.
func TestSSRCChangeKeepsSequenceContinuous(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	w := &discardWriter{keep: true}
	bindFake(t, f, "child", 4242, w)

	p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 120}}
	send := func(ssrc uint32, seq uint16, ts uint32, i int) {
		p.SSRC, p.SequenceNumber, p.Timestamp = ssrc, seq, ts
		p.Payload = vp8Payload(i, i%10 == 0, true, 50)
		if err := f.WriteRTP(p); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		send(1111, 65530+uint16(i), 1000+uint32(i)*3000, i) // wraps through 0
	}
	for i := range 10 {
		send(2222, 30000+uint16(i), 7_000_000+uint32(i)*3000, 10+i)
	}
	waitFor(t, ctx, "20 packets", func() bool { return w.n.Load() == 20 })
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, h := range w.headers {
		if h.SSRC != 4242 || h.PayloadType != 96 {
			t.Fatalf("packet %d: ssrc %d pt %d, want the binding's 4242/96", i, h.SSRC, h.PayloadType)
		}
		if i == 0 {
			continue
		}
		prev := w.headers[i-1]
		if h.SequenceNumber != prev.SequenceNumber+1 {
			t.Fatalf("packet %d: seq %d after %d", i, h.SequenceNumber, prev.SequenceNumber)
		}
		if h.Timestamp-prev.Timestamp != 3000 {
			t.Fatalf("packet %d: timestamp step %d, want 3000", i, h.Timestamp-prev.Timestamp)
		}
	}
	if w.headers[0].SequenceNumber != 65530 {
		t.Fatalf("same-SSRC packets were not passed through: first seq %d", w.headers[0].SequenceNumber)
	}
}

func TestKeyframeRequestsThrottled(t *testing.T) {
	f := NewForwarder(vp8Track, testLogger())
	got := 0
	start := time.Now()
	for time.Since(start) < 700*time.Millisecond {
		f.requestKeyframe()
		select {
		case <-f.KeyframeRequests():
			got++
		default:
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	if limit := int(elapsed/keyframeInterval) + 1; got < 1 || got > limit {
		t.Fatalf("%d requests passed in %v, want 1..%d", got, elapsed, limit)
	}
	f.Close()
	f.Close()
	f.lastKeyReq.Store(0)
	f.requestKeyframe()
	select {
	case <-f.KeyframeRequests():
		t.Fatal("a keyframe request passed after Close")
	default:
	}
}

// TestForwarderZeroAllocs: WriteRTP, the queue and the writers allocate
// nothing per packet in steady state.
func TestForwarderZeroAllocs(t *testing.T) {
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	for i := range 10 {
		bindFake(t, f, "c"+string(rune('a'+i)), 1, &discardWriter{})
	}
	p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 5}, Payload: vp8Payload(0, true, true, 1100)}
	allocs := testing.AllocsPerRun(5000, func() {
		p.SequenceNumber++
		_ = f.WriteRTP(p)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per forwarded packet, want 0", allocs)
	}
}

func TestForwarderCopiesPayload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := NewForwarder(opusTrack, testLogger())
	defer f.Close()
	got := make(chan []byte, 10)
	bindFake(t, f, "c", 1, writerFunc(func(_ *rtp.Header, b []byte) { got <- append([]byte(nil), b...) }))
	buf := []byte("hello")
	_ = f.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2}, Payload: buf})
	copy(buf, "XXXXX") // the caller reuses its buffer at once
	select {
	case b := <-got:
		if !bytes.Equal(b, []byte("hello")) {
			t.Fatalf("child got %q", b)
		}
	case <-ctx.Done():
		t.Fatal("nothing written")
	}
}

type writerFunc func(*rtp.Header, []byte)

func (w writerFunc) WriteRTP(h *rtp.Header, b []byte) (int, error) { w(h, b); return len(b), nil }
func (w writerFunc) Write(b []byte) (int, error)                   { return len(b), nil }
