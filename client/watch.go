package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/pion/rtp"

	"canopy/mesh"
	"canopy/mesh/media"
	"canopy/mesh/protocol"
)

// watchReport is what watch prints, as a line or as JSON.
type watchReport struct {
	Stream           string  `json:"stream"`
	Peer             string  `json:"peer"`
	Depth            int     `json:"depth"`
	FirstFrameMillis float64 `json:"firstFrameMs"`
	Frames           int     `json:"frames"`
	Keyframes        int     `json:"keyframes"`
	AudioPackets     int     `json:"audioPackets"`
	PacketsLost      int     `json:"packetsLost"`
	Seconds          float64 `json:"seconds"`
}

func watch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	var c common
	c.register(fs, 0)
	frames := fs.Int("frames", 300, "exit 0 after this many complete video frames (0: run until interrupted)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up if the frames have not arrived by then (0: no limit)")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	record := fs.String("record", "", "write the video track to this file (.ivf for VP8, .h264 for H264)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, *timeout)
	defer cancel()

	w := newWatcher(*frames, *record)
	defer w.close()
	start := time.Now()
	node, err := mesh.Dial(ctx, mesh.Config{
		Server: c.server, Stream: c.stream, Role: protocol.RoleViewer, Capacity: c.capacity,
		Token: c.token, LoopbackOnly: c.loopback, Logger: log, OnPacket: w.onPacket,
	})
	if err != nil {
		var se *mesh.ServerError
		if errors.As(err, &se) && se.Code == protocol.CodeNotFound {
			return fmt.Errorf("stream %q does not exist on %s", c.stream, c.server)
		}
		return err
	}
	defer node.Close()

	select {
	case <-w.done:
	case <-node.Done():
		return fmt.Errorf("lost the server: %w", node.Err())
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			r := w.report(start)
			if r.Frames == 0 {
				return fmt.Errorf("stream %q did not play within %s", c.stream, *timeout)
			}
			return fmt.Errorf("only %d of %d frames within %s", r.Frames, *frames, *timeout)
		}
	}
	if err := w.failure(); err != nil {
		return err
	}
	r := w.report(start)
	r.Stream, r.Peer, r.Depth = c.stream, node.ID(), node.Depth()
	if *asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	_, err = fmt.Fprintf(stdout, "stream %s: first frame %.0f ms, depth %d, %d frames (%d keyframes), %d audio packets, %d packets lost\n",
		r.Stream, r.FirstFrameMillis, r.Depth, r.Frames, r.Keyframes, r.AudioPackets, r.PacketsLost)
	return err
}

// watcher assembles the video track into frames and counts what arrives.
type watcher struct {
	want     int
	recordTo string

	mu        sync.Mutex
	video     *media.Assembler
	recorder  media.Recorder
	first     time.Time
	frames    int
	keyframes int
	audio     int
	err       error // why watching cannot go on
	doneOnce  sync.Once
	done      chan struct{}
}

// fail ends the watch with err; it runs under w.mu.
func (w *watcher) fail(err error) {
	if w.err == nil {
		w.err = err
	}
	w.doneOnce.Do(func() { close(w.done) })
}

func newWatcher(want int, recordTo string) *watcher {
	return &watcher{want: want, recordTo: recordTo, done: make(chan struct{})}
}

func (w *watcher) onPacket(t protocol.Track, p *rtp.Packet) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t.Kind == "audio" {
		w.audio++
		return
	}
	if w.err != nil {
		return
	}
	if w.video == nil {
		codec := media.Codec{MimeType: t.MimeType, ClockRate: t.ClockRate, Fmtp: t.Fmtp}
		asm, err := media.NewAssembler(codec, w.onFrame)
		if err != nil {
			w.fail(err)
			return
		}
		w.video = asm
		if w.recordTo != "" {
			rec, err := media.NewRecorder(w.recordTo, codec)
			if err != nil {
				w.fail(err)
				return
			}
			w.recorder = rec
		}
	}
	if w.recorder != nil {
		if err := w.recorder.WriteRTP(p); err != nil {
			w.fail(fmt.Errorf("record: %w", err))
			return
		}
	}
	w.video.Push(p)
}

// onFrame runs under w.mu (from Push).
func (w *watcher) onFrame(f media.Frame) {
	if w.frames == 0 {
		if !f.Keyframe {
			return // undecodable until the first keyframe
		}
		w.first = time.Now()
	}
	w.frames++
	if f.Keyframe {
		w.keyframes++
	}
	if w.want > 0 && w.frames >= w.want {
		w.doneOnce.Do(func() { close(w.done) })
	}
}

func (w *watcher) report(start time.Time) watchReport {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := watchReport{Frames: w.frames, Keyframes: w.keyframes, AudioPackets: w.audio, Seconds: time.Since(start).Seconds()}
	if !w.first.IsZero() {
		r.FirstFrameMillis = float64(w.first.Sub(start).Microseconds()) / 1000
	}
	if w.video != nil {
		r.PacketsLost = int(w.video.Stats().Lost)
	}
	return r
}

func (w *watcher) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *watcher) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.recorder != nil {
		_ = w.recorder.Close()
	}
}
