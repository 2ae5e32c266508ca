package main

import (
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"canopy/mesh"
	"canopy/mesh/framesig"
	"canopy/mesh/media"
	"canopy/mesh/media/demo"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// testLogger is quiet unless CANOPY_TEST_LOG=debug|info|warn.
func testLogger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(os.Getenv("CANOPY_TEST_LOG"))); err != nil || os.Getenv("CANOPY_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// startServer runs a Canopy server on a loopback port for the test.
func startServer(t testing.TB, policy tree.Config) (*Server, string) {
	t.Helper()
	s := NewServer(Config{Policy: policy, Logger: testLogger(), Hosted: peer.Config{LoopbackOnly: true}})
	return s, serve(t, s)
}

// serve runs s on a loopback port the way main does (Server.Serve: its
// timeouts and connection limits) and returns its URL.
func serve(t testing.TB, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = s.Close()
		<-done
	})
	return "http://" + ln.Addr().String()
}

// waitFor polls cond until it holds or the (generous) deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// frameHashes is a set of hashes of frames, safe for concurrent use.
type frameHashes struct {
	mu sync.Mutex
	m  map[[32]byte]bool
}

func (h *frameHashes) add(b []byte) {
	sum := sha256.Sum256(b)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = make(map[[32]byte]bool)
	}
	h.m[sum] = true
}

// has reports whether b is a frame the source sent. A viewer that does not
// verify sees the source's signature too (README "Signed frames"): an H264
// SEI its decoder skips, or a VP8/Opus trailer; the frame is the rest.
func (h *frameHashes) has(b []byte) bool {
	if h.hasExact(b) {
		return true
	}
	if s, err := framesig.Parse(framesig.FormatSEI, b); err == nil {
		return h.hasExact(s.Media)
	}
	if framesig.HasTrailer(b) {
		return h.hasExact(b[:len(b)-framesig.TrailerSize])
	}
	return false
}

func (h *frameHashes) hasExact(b []byte) bool {
	sum := sha256.Sum256(b)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[sum]
}

// testSource publishes the demo clip (VP8 + Opus) and remembers the hash of
// every video frame it sent.
type testSource struct {
	node   *mesh.Node
	sent   frameHashes
	cancel context.CancelFunc
	done   chan struct{}
}

func startSource(t testing.TB, server, stream string, capacity int) *testSource {
	t.Helper()
	video, audio, err := demo.Open()
	if err != nil {
		t.Fatal(err)
	}
	return startSourceOf(t, server, stream, capacity, video, audio, nil)
}

// startSourceOf publishes video and audio, looped, as a Go source, hashing
// every video frame it sends; a frame for which hold returns true is not
// sent (nil: every frame is).
func startSourceOf(t testing.TB, server, stream string, capacity int, video, audio media.FrameReader, hold func() bool) *testSource {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	node, err := mesh.Dial(ctx, mesh.Config{
		Server: server, Stream: stream, Role: protocol.RoleSource, Capacity: capacity,
		Tracks: mesh.TracksFor(video, audio), LoopbackOnly: true, Logger: testLogger(),
	})
	if err != nil {
		cancel()
		t.Fatalf("source: %v", err)
	}
	s := &testSource{node: node, cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	for _, tr := range []struct {
		id string
		r  media.FrameReader
	}{{"video", video}, {"audio", audio}} {
		pk, err := media.NewPacketizer(tr.r.Codec())
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			_ = media.Play(ctx, tr.r, pk, func(pkts []*rtp.Packet, f media.Frame) error {
				if hold != nil && hold() {
					return nil
				}
				if tr.id == "video" {
					s.sent.add(f.Data)
				}
				return node.WriteFrame(tr.id, pkts, time.Now())
			})
		})
	}
	go func() { wg.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	return s
}

func (s *testSource) stop() {
	s.cancel()
	<-s.done
	_ = s.node.Close()
}

// testViewer is a Go peer that assembles video frames and checks each
// against the source's hashes.
type testViewer struct {
	node *mesh.Node

	mu         sync.Mutex
	asm        *media.Assembler
	started    bool // a keyframe has arrived
	frames     int
	mismatch   int
	audio      int
	parentLog  []string
	hotLog     []bool   // per parent event: the link was up already (standby)
	standbyLog []string // standby parents, in order ("" none)
	offline    int
	src        *testSource
	prev       *testSource // the source before checkAgainst: its frames still in flight are genuine
	// Video sequence numbers seen since the last reset, to count gaps.
	seqFirst, seqMax uint16
	seqCount         int
	seqStarted       bool
	lastFrame        time.Time
	frameTimes       []time.Time // the last frames' arrival, oldest first
}

func startPeer(t testing.TB, server, stream string, role protocol.Role, capacity int, src *testSource) *testViewer {
	t.Helper()
	v := &testViewer{src: src}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	node, err := mesh.Dial(ctx, mesh.Config{
		Server: server, Stream: stream, Role: role, Capacity: capacity,
		LoopbackOnly: true, Logger: testLogger(), OnPacket: v.onPacket,
		OnEvent: func(e mesh.Event) {
			v.mu.Lock()
			defer v.mu.Unlock()
			switch e.Kind {
			case mesh.EventParent:
				v.parentLog = append(v.parentLog, e.Peer)
				v.hotLog = append(v.hotLog, e.Hot)
			case mesh.EventStandby:
				v.standbyLog = append(v.standbyLog, e.Standby)
			case mesh.EventOffline:
				// A returning source starts a new stream: new frames, new numbering.
				v.offline++
				v.asm, v.started, v.seqStarted = nil, false, false
			}
		},
	})
	if err != nil {
		t.Fatalf("%s: %v", role, err)
	}
	v.node = node
	t.Cleanup(func() { _ = node.Close() })
	return v
}

func (v *testViewer) onPacket(t protocol.Track, p *rtp.Packet) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if t.Kind == "audio" {
		v.audio++
		return
	}
	v.countSeq(p.SequenceNumber)
	if v.asm == nil {
		asm, err := media.NewAssembler(media.Codec{MimeType: t.MimeType, ClockRate: t.ClockRate}, v.onFrame)
		if err != nil {
			panic(err) // the test source only sends codecs the assembler knows
		}
		v.asm = asm
	}
	v.asm.Push(p)
}

// onFrame runs under v.mu.
func (v *testViewer) onFrame(f media.Frame) {
	if !v.started && !f.Keyframe {
		return
	}
	v.started = true
	v.frames++
	v.lastFrame = time.Now()
	if len(v.frameTimes) == 1024 {
		v.frameTimes = append(v.frameTimes[:0], v.frameTimes[512:]...)
	}
	v.frameTimes = append(v.frameTimes, v.lastFrame)
	if v.src != nil && !v.src.sent.has(f.Data) && (v.prev == nil || !v.prev.sent.has(f.Data)) {
		v.mismatch++
	}
}

func (v *testViewer) counts() (frames, mismatch, audio int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.frames, v.mismatch, v.audio
}

// countSeq tracks the video sequence numbers delivered (each once: the node
// deduplicates). Runs under v.mu.
func (v *testViewer) countSeq(seq uint16) {
	if !v.seqStarted {
		v.seqStarted, v.seqFirst, v.seqMax, v.seqCount = true, seq, seq, 1
		return
	}
	if int16(seq-v.seqMax) > 0 {
		v.seqMax = seq
	}
	v.seqCount++
}

// resetSeq starts counting gaps afresh.
func (v *testViewer) resetSeq() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.seqStarted = false
}

// seqGaps is how many video sequence numbers since resetSeq never arrived.
func (v *testViewer) seqGaps() (missing, received int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	span := int(uint16(v.seqMax-v.seqFirst)) + 1
	return span - v.seqCount, v.seqCount
}

func (v *testViewer) parents() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.parentLog...)
}

func (v *testViewer) offlineCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.offline
}

func (v *testViewer) lastFrameAt() time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.lastFrame
}

// checkAgainst makes later frames be checked against src, or the source
// before it (its last frames may still be on their way: a returning
// publisher sends the same clip from its start).
func (v *testViewer) checkAgainst(src *testSource) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.prev, v.src = v.src, src
}

// firstFrameAfter is when the first frame after t arrived (zero if none is
// remembered).
func (v *testViewer) firstFrameAfter(t time.Time) time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, ft := range v.frameTimes {
		if ft.After(t) {
			return ft
		}
	}
	return time.Time{}
}

// gapAround is the largest gap between two successive complete frames
// the viewer got from just before at to within d after it: an orphan's
// stall (frames in flight at a kill arrive after it, so "the first frame
// after the kill" can be one the dead parent sent).
func (v *testViewer) gapAround(at time.Time, d time.Duration) time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	var gap time.Duration
	for i := 1; i < len(v.frameTimes); i++ {
		prev, cur := v.frameTimes[i-1], v.frameTimes[i]
		if cur.Before(at) || prev.After(at.Add(d)) {
			continue
		}
		gap = max(gap, cur.Sub(prev))
	}
	return gap
}

// startViewers starts n Go viewers of stream and waits until each has
// played minFrames frames (checked against src when it is not nil).
func startViewers(t testing.TB, server, stream string, n, minFrames int, src *testSource) []*testViewer {
	t.Helper()
	viewers := make([]*testViewer, 0, n)
	for range n {
		viewers = append(viewers, startPeer(t, server, stream, protocol.RoleViewer, 0, src))
	}
	for _, v := range viewers {
		waitFor(t, 60*time.Second, "viewers play", func() bool { f, _, _ := v.counts(); return f >= minFrames })
	}
	return viewers
}
