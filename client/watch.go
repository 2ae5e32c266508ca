package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/pion/rtp"

	"canopy/mesh"
	"canopy/mesh/media"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// stallGap is how long without a new frame counts as a stall (a 30 fps
// stream has 33 ms between frames; a few lost frames are not a stall).
const stallGap = 250 * time.Millisecond

// watchReport is what watch prints, as a line or as JSON; its measures are
// the ones peers report to the server (protocol.Stats).
type watchReport struct {
	Stream           string  `json:"stream"`
	Peer             string  `json:"peer"`
	Depth            int     `json:"depth"`
	FirstFrameMillis float64 `json:"firstFrameMs"`
	Frames           int     `json:"frames"`
	Keyframes        int     `json:"keyframes"`
	AudioPackets     int     `json:"audioPackets"`
	Undecodable      uint64  `json:"undecodableFrames"` // complete frames that would not decode (not counted in frames)
	PacketsReceived  uint64  `json:"packetsReceived"`
	BytesReceived    uint64  `json:"bytesReceived"`
	BitrateKbps      float64 `json:"bitrateKbps"` // received, averaged over the watch
	PacketsLost      int     `json:"packetsLost"`
	PacketsRelayed   uint64  `json:"packetsRelayed"`
	BytesRelayed     uint64  `json:"bytesRelayed"`
	StallMillis      float64 `json:"stallMs"`
	DelayP50Millis   float64 `json:"delayP50Ms"` // source capture → complete frame here
	DelayP99Millis   float64 `json:"delayP99Ms"`
	ParentChanges    int     `json:"parentChanges"`
	Seconds          float64 `json:"seconds"`
	Private          bool    `json:"private"` // watched in private mode (asked for, or the server's -privacy)
}

func watch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	var c common
	c.register(fs, 0)
	frames := fs.Int("frames", 300, "exit 0 after this many complete video frames (0: run until interrupted)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up if the frames have not arrived by then (0: no limit)")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	record := fs.String("record", "", "write the video track to this file (.ivf for VP8, .h264 for H264)")
	private := fs.Bool("private", false, "private mode: connect through the server's TURN relay only, so no other peer learns this host's address, and relay to nobody")
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
	if err := checkServer(c.server); err != nil {
		return err
	}
	// One watcher across sessions: frames count on when the node rejoins.
	var node *mesh.Node
	err = redial(ctx, stderr, c.stream, false, func(ctx context.Context, s *session) error {
		w.newSession()
		n, err := mesh.Dial(ctx, mesh.Config{
			Server: c.server, Stream: c.stream, Role: protocol.RoleViewer, Capacity: c.capacity,
			Token: c.token, LoopbackOnly: c.loopback, Logger: log, OnPacket: w.onPacket,
			OnStats: w.addStats, Private: *private,
			OnEvent: func(e mesh.Event) {
				s.onEvent(e)
				if e.Kind == mesh.EventParent {
					w.parentChanged()
				}
			},
		})
		if err != nil {
			return err
		}
		s.joined()
		node = n
		select {
		case <-w.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-n.Done():
			_ = n.Close()
			return nodeEnd(n)
		}
	})
	if node != nil {
		defer node.Close()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		r := w.report()
		if r.Frames == 0 {
			return fmt.Errorf("stream %q did not play within %s", c.stream, *timeout)
		}
		return fmt.Errorf("only %d of %d frames within %s", r.Frames, *frames, *timeout)
	case errors.Is(err, context.Canceled):
		if node == nil {
			return nil // interrupted before joining
		}
	case err != nil:
		var se *mesh.ServerError
		if errors.As(err, &se) && se.Code == protocol.CodeNotFound {
			return fmt.Errorf("stream %q does not exist on %s", c.stream, c.server)
		}
		return err
	}
	if err := w.failure(); err != nil {
		return err
	}
	r := w.report()
	r.Stream, r.Peer, r.Depth, r.Private = c.stream, node.ID(), node.Depth(), node.Private()
	var s protocol.Stats
	node.CollectStats(&s)
	r.PacketsReceived, r.BytesReceived = s.PacketsReceived, s.BytesReceived
	r.PacketsRelayed, r.BytesRelayed = s.PacketsRelayed, s.BytesRelayed
	if r.Seconds > 0 {
		r.BitrateKbps = float64(r.BytesReceived) * 8 / 1000 / r.Seconds
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	mode := ""
	if r.Private {
		mode = " (private mode: through TURN only)"
	}
	_, err = fmt.Fprintf(stdout, "stream %s%s: first frame %.0f ms, depth %d, %d frames (%d keyframes), %d audio packets, "+
		"%d packets lost, delay p50 %.1f ms p99 %.1f ms, stalled %.0f ms\n",
		r.Stream, mode, r.FirstFrameMillis, r.Depth, r.Frames, r.Keyframes, r.AudioPackets, r.PacketsLost,
		r.DelayP50Millis, r.DelayP99Millis, r.StallMillis)
	return err
}

// watcher assembles the video track into frames and measures what arrives.
type watcher struct {
	want     int
	recordTo string
	start    time.Time

	mu        sync.Mutex
	video     *media.Assembler
	recorder  media.Recorder
	first     time.Time
	lastFrame time.Time
	stall     time.Duration
	frames    int
	keyframes int
	audio     int
	parents   int
	delays    []float64 // ms from capture to a frame's last packet here
	err       error     // why watching cannot go on
	doneOnce  sync.Once
	done      chan struct{}
}

func newWatcher(want int, recordTo string) *watcher {
	return &watcher{want: want, recordTo: recordTo, start: time.Now(), done: make(chan struct{})}
}

// fail ends the watch with err; it runs under w.mu.
func (w *watcher) fail(err error) {
	if w.err == nil {
		w.err = err
	}
	w.doneOnce.Do(func() { close(w.done) })
}

func (w *watcher) onPacket(t protocol.Track, p *rtp.Packet) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	if t.Kind == "audio" {
		w.audio++
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
		if w.recordTo != "" && w.recorder == nil {
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
	// A frame is complete when its last (marker) packet arrives. Frames in
	// the first second may come from a relay's GOP cache, burst long after
	// capture, so they say nothing about this viewer's delay.
	// A stamp from the future (a skewed clock or a lying parent) says
	// nothing either: the sample is dropped, the frame still counts.
	if ct, ok := peer.CaptureTime(p); ok && p.Marker && !w.first.IsZero() && time.Since(w.first) > time.Second {
		if d := time.Since(ct); d >= 0 && len(w.delays) < 1<<16 {
			w.delays = append(w.delays, float64(d.Microseconds())/1000)
		}
	}
	w.video.Push(p)
}

// onFrame runs under w.mu (from Push).
func (w *watcher) onFrame(f media.Frame) {
	now := time.Now()
	if w.frames == 0 {
		if !f.Keyframe {
			return // undecodable until the first keyframe
		}
		w.first = now
	} else if gap := now.Sub(w.lastFrame); gap > stallGap {
		w.stall += gap
	}
	w.lastFrame = now
	w.frames++
	if f.Keyframe {
		w.keyframes++
	}
	if w.want > 0 && w.frames >= w.want {
		w.doneOnce.Do(func() { close(w.done) })
	}
}

// newSession forgets the video numbering: a new node receives the
// source's own, unrelated to what the last node passed on.
func (w *watcher) newSession() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.video = nil
}

func (w *watcher) parentChanged() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.parents++
}

// addStats adds the watcher's measures to the node's stats reports.
func (w *watcher) addStats(s *protocol.Stats) {
	r := w.report()
	s.FramesDecoded = uint64(r.Frames)
	s.FirstFrameMs = r.FirstFrameMillis
	s.StallMs = r.StallMillis
	s.DelayMs = r.DelayP50Millis
	s.PacketsLost = uint64(r.PacketsLost)
}

func (w *watcher) report() watchReport {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := watchReport{
		Frames: w.frames, Keyframes: w.keyframes, AudioPackets: w.audio,
		StallMillis: float64(w.stall.Microseconds()) / 1000, Seconds: time.Since(w.start).Seconds(),
	}
	if w.parents > 0 {
		r.ParentChanges = w.parents - 1 // the first parent is not a change
	}
	if !w.first.IsZero() {
		r.FirstFrameMillis = float64(w.first.Sub(w.start).Microseconds()) / 1000
	}
	if w.video != nil {
		st := w.video.Stats()
		r.PacketsLost, r.Undecodable = int(st.Lost), st.Undecodable
	}
	if len(w.delays) > 0 {
		d := slices.Clone(w.delays)
		slices.Sort(d)
		r.DelayP50Millis = d[len(d)/2]
		r.DelayP99Millis = d[len(d)*99/100]
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
