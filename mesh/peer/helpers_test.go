package peer

import (
	"context"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

var (
	vp8Track  = protocol.Track{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}
	opusTrack = protocol.Track{ID: "audio", Kind: "audio", MimeType: "audio/opus", ClockRate: 48000, Channels: 2}
)

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func newTestAPI(tb testing.TB) *API {
	tb.Helper()
	a, err := NewAPI(Config{LoopbackOnly: true, Logger: testLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(tb testing.TB, ctx context.Context, what string, cond func() bool) {
	tb.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			tb.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// pump delivers signals to a handler on its own goroutine, so that neither
// side's send re-enters the other synchronously.
type pump struct {
	ch   chan protocol.Signal
	stop chan struct{}
	wg   sync.WaitGroup
}

func newPump(tb testing.TB, handle func() func(protocol.Signal) error) *pump {
	p := &pump{ch: make(chan protocol.Signal, 256), stop: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			select {
			case s := <-p.ch:
				if err := handle()(s); err != nil {
					tb.Errorf("handle %s: %v", s.Kind, err)
				}
			case <-p.stop:
				return
			}
		}
	}()
	return p
}

func (p *pump) send(s protocol.Signal) {
	select {
	case p.ch <- s:
	case <-p.stop:
	}
}

func (p *pump) close() { close(p.stop); p.wg.Wait() }

// link is one parent→child pair wired through pumps.
type link struct {
	down     *Downstream
	up       *Upstream
	toUp     *pump
	toDown   *pump
	downDone atomic.Pointer[Downstream]
}

func (l *link) close() {
	l.toUp.close()
	l.toDown.close()
	_ = l.down.Close()
	_ = l.up.Close()
}

// newLink connects a Downstream carrying fwds to a new Upstream and waits
// until both are connected and every forwarder has bound the child.
func newLink(tb testing.TB, ctx context.Context, a *API, id string, fwds []*Forwarder, sink func(protocol.Track, *rtp.Packet)) *link {
	tb.Helper()
	return newLinkAPIs(tb, ctx, a, a, id, fwds, sink)
}

// newLinkAPIs is newLink with the parent's and the child's own APIs (each
// its own host on a vnet).
func newLinkAPIs(tb testing.TB, ctx context.Context, parent, child *API, id string, fwds []*Forwarder, sink func(protocol.Track, *rtp.Packet)) *link {
	tb.Helper()
	l := &link{}
	tracks := make([]protocol.Track, len(fwds))
	for i, f := range fwds {
		tracks[i] = f.Track()
	}
	l.toDown = newPump(tb, func() func(protocol.Signal) error {
		for l.downDone.Load() == nil {
			time.Sleep(time.Millisecond) // the answer can beat NewDownstream's return
		}
		return l.downDone.Load().HandleSignal
	})
	up, err := child.NewUpstream("parent", tracks, l.toDown.send, sink)
	if err != nil {
		tb.Fatal(err)
	}
	l.up = up
	l.toUp = newPump(tb, func() func(protocol.Signal) error { return up.HandleSignal })
	before := make([]int, len(fwds))
	for i, f := range fwds {
		before[i] = f.Stats().Children
	}
	down, err := parent.NewDownstream(id, fwds, l.toUp.send)
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
	for i, f := range fwds {
		waitFor(tb, ctx, "bind", func() bool { return f.Stats().Children > before[i] })
	}
	return l
}

// recorder collects what a sink received, per track.
type recorder struct {
	mu       sync.Mutex
	payloads map[string][][]byte
	seqs     map[string][]uint16
}

func newRecorder() *recorder {
	return &recorder{payloads: map[string][][]byte{}, seqs: map[string][]uint16{}}
}

func (r *recorder) sink(t protocol.Track, p *rtp.Packet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// A NACK-repaired packet may arrive twice; keep the first copy.
	for _, s := range r.seqs[t.ID] {
		if s == p.SequenceNumber {
			return
		}
	}
	r.payloads[t.ID] = append(r.payloads[t.ID], append([]byte(nil), p.Payload...))
	r.seqs[t.ID] = append(r.seqs[t.ID], p.SequenceNumber)
}

func (r *recorder) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.payloads[id])
}

// get returns the payloads of track id in sequence-number order, the order
// a receiver plays them in: a packet lost on loopback under load and
// repaired by NACK arrives after later ones (TestRelayChain failed on that
// in CI, "packet 92 differs or is out of order", every packet there).
func (r *recorder) get(id string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	seqs, payloads := r.seqs[id], r.payloads[id]
	order := make([]int, len(payloads))
	for i := range order {
		order[i] = i
	}
	if len(seqs) > 0 {
		first := seqs[0]
		// Distances from the first packet received, wrap-aware: runs here are
		// far shorter than 2^15 packets.
		sort.SliceStable(order, func(a, b int) bool { return int16(seqs[order[a]]-first) < int16(seqs[order[b]]-first) })
	}
	out := make([][]byte, len(order))
	for i, j := range order {
		out[i] = payloads[j]
	}
	return out
}

// vp8Payload builds a VP8 payload with a 2-byte descriptor (X=1, I=1 with a
// 7-bit picture id) and a body that identifies packet i. A frame's first
// packet starts with a frame tag that parses (a 4-byte first partition, and
// for a key frame the start code and 320x240), so receivers that judge
// decodability (media.FrameCheck) take the frames as real.
func vp8Payload(i int, key, start bool, size int) []byte {
	b := make([]byte, size)
	b[0] = 0x80 // X
	if start {
		b[0] |= 0x10
	}
	b[1] = 0x80 // I
	b[2] = byte(i) & 0x7F
	b[3] = 0x01 // P=1: interframe
	if key {
		b[3] = 0x00
	}
	body := 4
	if start {
		tag := uint32(b[3]) | 1<<4 | 4<<5 // show_frame, first partition of 4 bytes
		b[3], b[4], b[5] = byte(tag), byte(tag>>8), byte(tag>>16)
		body = 6
		if key {
			copy(b[6:], []byte{0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00})
			body = 13
		}
	}
	for j := body; j < size; j++ {
		b[j] = byte(i*7 + j)
	}
	return b
}

// fakeContext is a webrtc.TrackLocalContext for binding a forwarder track
// without a PeerConnection.
type fakeContext struct {
	id     string
	ssrc   webrtc.SSRC
	codecs []webrtc.RTPCodecParameters
	ws     webrtc.TrackLocalWriter
}

func (c *fakeContext) CodecParameters() []webrtc.RTPCodecParameters { return c.codecs }
func (c *fakeContext) HeaderExtensions() []webrtc.RTPHeaderExtensionParameter {
	return nil
}
func (c *fakeContext) SSRC() webrtc.SSRC                       { return c.ssrc }
func (c *fakeContext) SSRCRetransmission() webrtc.SSRC         { return 0 }
func (c *fakeContext) SSRCForwardErrorCorrection() webrtc.SSRC { return 0 }
func (c *fakeContext) WriteStream() webrtc.TrackLocalWriter    { return c.ws }
func (c *fakeContext) ID() string                              { return c.id }
func (c *fakeContext) RTCPReader() interceptor.RTCPReader      { return nil }

// discardWriter counts packets and remembers the last header; with block set
// it waits on it before each write (a stuck child).
type discardWriter struct {
	n       atomic.Uint64
	block   chan struct{}
	mu      sync.Mutex
	headers []rtp.Header
	keep    bool
}

func (w *discardWriter) WriteRTP(h *rtp.Header, _ []byte) (int, error) {
	if w.block != nil {
		<-w.block
	}
	if w.keep {
		w.mu.Lock()
		w.headers = append(w.headers, *h)
		w.mu.Unlock()
	}
	w.n.Add(1)
	return 0, nil
}

func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }

// bindFake binds a new child of f to w, as pion would after negotiation.
func bindFake(tb testing.TB, f *Forwarder, id string, ssrc webrtc.SSRC, w webrtc.TrackLocalWriter) *downTrack {
	tb.Helper()
	d := newDownTrack(f, nil, nil, nil, nil)
	ctx := &fakeContext{id: id, ssrc: ssrc, codecs: registeredCodecs, ws: w}
	if _, err := d.Bind(ctx); err != nil {
		tb.Fatal(err)
	}
	return d
}
