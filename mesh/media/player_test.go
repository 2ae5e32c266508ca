package media

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// fakeReader yields frames of fixed durations, numbered in Data[0].
type fakeReader struct {
	durs []time.Duration
	n    int
}

func (r *fakeReader) Codec() Codec { return Opus }

func (r *fakeReader) ReadFrame() (Frame, error) {
	d := r.durs[r.n%len(r.durs)]
	f := Frame{Data: []byte{byte(r.n), 0xfc}, Duration: d, Keyframe: true}
	r.n++
	return f, nil
}

func TestPlayPaces(t *testing.T) {
	durs := []time.Duration{20 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond}
	const frames = 12
	p, err := NewPacketizer(Opus)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var (
		at  []time.Time
		got []Frame
	)
	err = Play(ctx, &fakeReader{durs: durs}, p, func(pkts []*rtp.Packet, f Frame) error {
		at = append(at, time.Now())
		got = append(got, f)
		if len(pkts) != 1 {
			t.Errorf("frame %d: %d packets", len(got)-1, len(pkts))
		}
		if len(got) == frames {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Play: %v, want context.Canceled", err)
	}
	if len(got) != frames {
		t.Fatalf("%d frames delivered, want %d", len(got), frames)
	}
	// Never early: frame n is due start + the durations before it. Timers do
	// not fire early on the monotonic clock; the slack covers the time between
	// Play's start and the first out call. No upper bound: a slow machine
	// delivers late, and that is not a failure.
	var due time.Duration
	for i := range got {
		if el := at[i].Sub(at[0]); el < due-2*time.Millisecond {
			t.Errorf("frame %d delivered at +%v, before its time +%v", i, el, due)
		}
		if int(got[i].Data[0]) != i {
			t.Errorf("frame %d out of order: %d", i, got[i].Data[0])
		}
		due += got[i].Duration
	}
	t.Logf("%d frames, %v of media in %v", frames, due-got[frames-1].Duration, at[frames-1].Sub(at[0]))
}

func TestPlayStops(t *testing.T) {
	p, err := NewPacketizer(Opus)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	n := 0
	err = Play(context.Background(), &fakeReader{durs: []time.Duration{time.Millisecond}}, p,
		func([]*rtp.Packet, Frame) error {
			if n++; n == 3 {
				return boom
			}
			return nil
		})
	if !errors.Is(err, boom) || n != 3 {
		t.Fatalf("Play: %v after %d frames, want boom after 3", err, n)
	}

	// Cancelled while waiting for a long frame: returns promptly.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Play(ctx, &fakeReader{durs: []time.Duration{time.Hour}}, p,
			func([]*rtp.Packet, Frame) error { cancel(); return nil })
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Play: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Play did not return after cancel")
	}

	// Reader errors come back as they are.
	bad := &errReader{err: ErrTruncated}
	if err := Play(context.Background(), bad, p, func([]*rtp.Packet, Frame) error { return nil }); !errors.Is(err, ErrTruncated) {
		t.Fatalf("Play: %v, want ErrTruncated", err)
	}
}

type errReader struct{ err error }

func (r *errReader) Codec() Codec              { return VP8 }
func (r *errReader) ReadFrame() (Frame, error) { return Frame{}, r.err }
