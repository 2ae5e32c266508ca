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
	// GapsMillis[i] is the largest gap between two frames that ended in
	// second i of the watch (0: no frame then): where a gap happened, for
	// tests that compare before and after an event.
	GapsMillis     []float64 `json:"gapsMs,omitempty"`
	DelayP50Millis float64   `json:"delayP50Ms"` // source capture → complete frame here
	DelayP99Millis float64   `json:"delayP99Ms"`
	ParentChanges  int       `json:"parentChanges"`
	Seconds        float64   `json:"seconds"`
	Private        bool      `json:"private"` // watched in private mode (asked for, or the server's -privacy)
	// Signed frames (README "Signed frames"): frames whose source
	// signature checked, and frames refused (forged, replayed, unsigned on
	// a signed stream), which were not played. Verified is false when the
	// stream is not signed or a re-encoding hop above cannot carry it.
	FramesVerified uint64 `json:"framesVerified"`
	FramesRejected uint64 `json:"framesRejected"`
	Verified       bool   `json:"verified"`
}

func watch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	var c common
	c.register(fs, 0)
	frames := fs.Int("frames", 300, "exit 0 after this many complete video frames (0: run until interrupted)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up if the frames have not arrived by then (0: no limit)")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	record := fs.String("record", "", "write the video this viewer plays to this file (.ivf for VP8, .h264 for H264): verified frames, without their signatures")
	private := fs.Bool("private", false, "private mode: connect through the server's TURN relay only, so no other peer learns this host's address, and relay to nobody")
	progress := fs.Duration("progress", 0, "also print a JSON progress line (frames, the gap since the last frame) at this interval, for a driver that watches many viewers (client soak)")
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
	stopProgress := w.printProgress(stdout, *progress)
	defer stopProgress()
	if err := checkServer(c.server); err != nil {
		return err
	}
	// One watcher across sessions: frames count on when the node rejoins.
	var node *mesh.Node
	err = redial(ctx, stderr, c.stream, false, func(ctx context.Context, s *session) error {
		w.newSession()
		n, err := mesh.Dial(ctx, mesh.Config{
			Server: c.server, Stream: c.stream, Role: protocol.RoleViewer, Capacity: c.capacity,
			Token: c.token, LoopbackOnly: c.loopback, Logger: log, OnPacket: w.onPacket, OnFrame: w.onVerified,
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
		w.setNode(n)
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
	stopProgress() // the report is the last line
	r := w.report()
	r.Stream, r.Peer, r.Depth, r.Private = c.stream, node.ID(), node.Depth(), node.Private()
	r.Verified = node.Verifies()
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
	node      *mesh.Node       // the current session's, for its frame checks
	checked   mesh.FrameStats  // the sessions before it
	video     *media.Assembler // loss figures only: frames come verified from the node
	recorder  media.FrameRecorder
	first     time.Time
	lastFrame time.Time
	stall     time.Duration
	gaps      []float64 // GapsMillis
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
		asm, err := media.NewAssembler(codec, nil)
		if err != nil {
			w.fail(err)
			return
		}
		w.video = asm
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

// onVerified takes a frame the node checked (and stripped of its
// signature): only those count as played, and only those are recorded
// (the RTP a parent sends carries the signatures: README "Signed frames").
func (w *watcher) onVerified(t protocol.Track, f media.Frame) {
	if t.Kind != "video" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	if w.recordTo != "" {
		if w.recorder == nil {
			rec, err := media.NewFrameRecorder(w.recordTo, media.Codec{MimeType: t.MimeType, ClockRate: t.ClockRate, Fmtp: t.Fmtp})
			if err != nil {
				w.fail(err)
				return
			}
			w.recorder = rec
		}
		if err := w.recorder.WriteFrame(f); err != nil {
			w.fail(fmt.Errorf("record: %w", err))
			return
		}
	}
	w.onFrame(f)
}

// setNode records the session's node; the last one's frame counts carry on.
func (w *watcher) setNode(n *mesh.Node) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.node != nil {
		st := w.node.FrameStats()
		w.checked.Verified += st.Verified
		w.checked.Rejected += st.Rejected
	}
	w.node = n
}

// onFrame runs under w.mu.
func (w *watcher) onFrame(f media.Frame) {
	now := time.Now()
	if w.frames == 0 {
		if !f.Keyframe {
			return // undecodable until the first keyframe
		}
		w.first = now
	} else {
		gap := now.Sub(w.lastFrame)
		if gap > stallGap {
			w.stall += gap
		}
		w.noteGap(now, gap)
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

// maxGapSeconds bounds GapsMillis (an hour of a watch).
const maxGapSeconds = 3600

// noteGap keeps the largest gap of each second. Runs under w.mu.
func (w *watcher) noteGap(now time.Time, gap time.Duration) {
	i := int(now.Sub(w.start) / time.Second)
	if i >= maxGapSeconds {
		return
	}
	for len(w.gaps) <= i {
		w.gaps = append(w.gaps, 0)
	}
	w.gaps[i] = max(w.gaps[i], float64(gap.Microseconds())/1000)
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
		GapsMillis: append([]float64(nil), w.gaps...),
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
	r.FramesVerified, r.FramesRejected = w.checked.Verified, w.checked.Rejected
	if w.node != nil {
		st := w.node.FrameStats()
		r.FramesVerified += st.Verified
		r.FramesRejected += st.Rejected
	}
	if len(w.delays) > 0 {
		d := slices.Clone(w.delays)
		slices.Sort(d)
		r.DelayP50Millis = d[len(d)/2]
		r.DelayP99Millis = d[len(d)*99/100]
	}
	return r
}

// watchProgress is a line `watch -progress` prints while it runs: enough
// for a driver to tell a viewer that stopped receiving (SinceLastFrame)
// without waiting for its report, which a killed viewer never prints.
type watchProgress struct {
	Progress         bool    `json:"progress"`
	Peer             string  `json:"peer"`
	Parent           string  `json:"parent"`
	Frames           int     `json:"frames"`
	FirstFrameMillis float64 `json:"firstFrameMs"` // 0: none yet
	SinceLastMillis  float64 `json:"sinceLastFrameMs"`
	MaxGapMillis     float64 `json:"maxGapMs"` // the largest gap between two frames so far
	ParentChanges    int     `json:"parentChanges"`
	Seconds          float64 `json:"seconds"`
}

// printProgress prints a watchProgress line every interval until the
// returned function is called (idempotent); interval 0 prints nothing.
func (w *watcher) printProgress(out io.Writer, interval time.Duration) func() {
	if interval <= 0 {
		return func() {}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		enc := json.NewEncoder(out)
		for {
			select {
			case <-t.C:
				_ = enc.Encode(w.progress())
			case <-stop:
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(stop); <-done }) }
}

func (w *watcher) progress() watchProgress {
	r := w.report()
	w.mu.Lock()
	defer w.mu.Unlock()
	p := watchProgress{Progress: true, Frames: r.Frames, FirstFrameMillis: r.FirstFrameMillis,
		ParentChanges: r.ParentChanges, Seconds: r.Seconds}
	for _, g := range w.gaps {
		p.MaxGapMillis = max(p.MaxGapMillis, g)
	}
	if !w.lastFrame.IsZero() {
		p.SinceLastMillis = float64(time.Since(w.lastFrame).Microseconds()) / 1000
	}
	if w.node != nil {
		p.Peer, p.Parent = w.node.ID(), w.node.Parent()
	}
	return p
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
