package peer

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/webrtc/v4"
)

// newBatchSocket opens a batchNet with one loopback socket, as a
// Downstream's ICE agent would.
func newBatchSocket(t *testing.T) (*batchNet, *batchConn) {
	t.Helper()
	base, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	n := newBatchNet(base)
	c, err := n.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return n, c.(*batchConn)
}

// receiver is a loopback socket that collects the datagrams it gets.
type receiver struct {
	conn *net.UDPConn
	keep bool // keep copies of the datagrams, not only count them
	mu   sync.Mutex
	got  [][]byte
	n    atomic.Int64
}

func newReceiver(t *testing.T, keep bool) *receiver {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	r := &receiver{conn: c, keep: keep}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if r.keep {
				r.mu.Lock()
				r.got = append(r.got, append([]byte(nil), buf[:n]...))
				r.mu.Unlock()
			}
			r.n.Add(1)
		}
	}()
	t.Cleanup(func() { _ = c.Close(); <-done })
	return r
}

func (r *receiver) addr() netip.AddrPort { return r.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (r *receiver) datagrams() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.got...)
}

func datagram(i, size int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(i*31 + j)
	}
	return b
}

// TestBatchConnSendsRunsInOrder: in a pass, datagrams wait for flush; then
// they arrive intact and in order, each run of one size to one address in
// one system call when the kernel segments (GSO), one by one otherwise.
func TestBatchConnSendsRunsInOrder(t *testing.T) {
	for _, gso := range []bool{true, false} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			n, c := newBatchSocket(t)
			if gso && !c.gso {
				t.Skip("this kernel has no UDP_SEGMENT")
			}
			c.gso = gso
			a, b := newReceiver(t, true), newReceiver(t, true)
			// Runs with GSO: A 10×1000 + 400 (a shorter last segment joins),
			// A 3×1200, B 2×500, A 50.
			type send struct {
				to   *receiver
				size int
			}
			var plan []send
			for range 10 {
				plan = append(plan, send{a, 1000})
			}
			plan = append(plan, send{a, 400}, send{a, 1200}, send{a, 1200}, send{a, 1200}, send{b, 500}, send{b, 500}, send{a, 50})

			var wantA, wantB [][]byte
			n.begin()
			for i, p := range plan {
				d := datagram(i, p.size)
				if p.to == a {
					wantA = append(wantA, d)
				} else {
					wantB = append(wantB, d)
				}
				if k, err := c.WriteToAddrPort(d, p.to.addr()); err != nil || k != len(d) {
					t.Fatalf("write %d: %d, %v", i, k, err)
				}
			}
			if len(c.q) != len(plan) {
				t.Fatalf("%d datagrams queued in the pass, want %d", len(c.q), len(plan))
			}
			n.flush()
			if len(c.q) != 0 {
				t.Fatalf("%d datagrams left after flush", len(c.q))
			}
			waitFor(t, ctx, "datagrams", func() bool {
				return a.n.Load() == int64(len(wantA)) && b.n.Load() == int64(len(wantB))
			})
			for who, pair := range map[string][2][][]byte{"a": {a.datagrams(), wantA}, "b": {b.datagrams(), wantB}} {
				got, want := pair[0], pair[1]
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						t.Fatalf("%s: datagram %d: %d bytes, want %d (or reordered)", who, i, len(got[i]), len(want[i]))
					}
				}
			}
			packets, sends, errs := n.stats()
			wantSends := uint64(len(plan))
			if gso {
				wantSends = 4
			}
			if packets != uint64(len(plan)) || sends != wantSends || errs != 0 {
				t.Fatalf("stats: %d datagrams in %d sends (%d failed), want %d in %d", packets, sends, errs, len(plan), wantSends)
			}
		})
	}
}

// TestBatchConnPasses: outside a pass a write goes out at once; passes may
// overlap (a child's audio and video writers), each flush sends what is
// queued, and writes go straight out again after the last.
func TestBatchConnPasses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, c := newBatchSocket(t)
	r := newReceiver(t, true)
	write := func(i int) {
		t.Helper()
		if _, err := c.WriteToAddrPort(datagram(i, 300), r.addr()); err != nil {
			t.Fatal(err)
		}
	}
	write(0)
	if len(c.q) != 0 {
		t.Fatal("a write outside a pass was queued")
	}
	waitFor(t, ctx, "direct write", func() bool { return r.n.Load() == 1 })

	n.begin() // video's pass
	n.begin() // audio's pass
	write(1)
	n.flush() // audio done: sends what is queued, video's pass goes on
	if len(c.q) != 0 {
		t.Fatal("flush left datagrams queued")
	}
	write(2)
	if len(c.q) != 1 {
		t.Fatal("a write during the remaining pass was not queued")
	}
	n.flush()
	write(3)
	if len(c.q) != 0 {
		t.Fatal("a write after the last pass was queued")
	}
	waitFor(t, ctx, "all datagrams", func() bool { return r.n.Load() == 4 })
	for i, d := range r.datagrams() {
		if !bytes.Equal(d, datagram(i, 300)) {
			t.Fatalf("datagram %d differs or is out of order", i)
		}
	}
}

// sockWriter stands in for pion's write path: it marshals each packet and
// writes it to a batchConn, as pion's ICE candidate does, or (away set)
// somewhere that is not the child's socket, as over TCP TURN.
type sockWriter struct {
	conn *batchConn
	to   netip.AddrPort
	buf  [1600]byte
	away atomic.Bool
	n    atomic.Uint64
}

func (w *sockWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	w.n.Add(1)
	if w.away.Load() {
		return len(payload), nil
	}
	n, err := h.MarshalTo(w.buf[:])
	if err != nil {
		return 0, err
	}
	n += copy(w.buf[n:], payload)
	return w.conn.WriteToAddrPort(w.buf[:n], w.to)
}

func (w *sockWriter) Write(b []byte) (int, error) { return len(b), nil }

// bindSocket binds a child of f whose packets go through its own batchNet
// socket to r.
func bindSocket(t *testing.T, f *Forwarder, id string, r *receiver) (*downTrack, *sockWriter) {
	t.Helper()
	n, c := newBatchSocket(t)
	w := &sockWriter{conn: c, to: r.addr()}
	d := newDownTrack(f, n, nil, nil, nil)
	if _, err := d.Bind(&fakeContext{id: id, ssrc: 1, codecs: registeredCodecs, ws: w}); err != nil {
		t.Fatal(err)
	}
	return d, w
}

// Payloads writeFrames sends: a keyframe's first packet, another frame's
// first packet, any other packet.
var (
	keyStart   = vp8Payload(0, true, true, 900)
	frameStart = vp8Payload(1, false, true, 900)
	framePart  = vp8Payload(2, false, false, 900)
)

// writeFrames writes frames of 5 packets (the last with the marker bit)
// into f, from packet number first on; packet 0 starts a keyframe.
func writeFrames(f *Forwarder, first, frames int) {
	p := rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 9}}
	for i := first; i < first+frames*5; i++ {
		p.SequenceNumber, p.Timestamp, p.Marker = uint16(i), uint32(i/5*3000), i%5 == 4
		switch {
		case i == 0:
			p.Payload = keyStart
		case i%5 == 0:
			p.Payload = frameStart
		default:
			p.Payload = framePart
		}
		_ = f.WriteRTP(&p)
	}
}

// TestShardAdoptsChildrenOnTheirOwnSockets: children whose packets go out
// through their own sockets are written by a shard; a child written to
// elsewhere keeps its goroutine; a shard gives back a child whose packets
// stop going through its socket, and nobody loses a packet.
func TestShardAdoptsChildrenOnTheirOwnSockets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := NewForwarderWith(vp8Track, ForwarderOptions{GOPBytes: -1}, testLogger())
	defer f.Close()
	r1, r2 := newReceiver(t, true), newReceiver(t, false)
	d1, w1 := bindSocket(t, f, "a", r1)
	d2, w2 := bindSocket(t, f, "b", r2)
	other := &discardWriter{}
	d3 := bindFake(t, f, "c", 1, other)

	writeFrames(f, 0, 4)
	waitFor(t, ctx, "first frames", func() bool { return r1.n.Load() == 20 && r2.n.Load() == 20 && other.n.Load() == 20 })
	if d1.writer.shard.Load() == nil || d2.writer.shard.Load() == nil {
		t.Fatal("children on their own sockets were not adopted by a shard")
	}
	if d3.writer.shard.Load() != nil {
		t.Fatal("a child whose packets go elsewhere was adopted")
	}

	w2.away.Store(true) // b's path moves off its socket
	writeFrames(f, 20, 4)
	waitFor(t, ctx, "b given back", func() bool { return d2.writer.shard.Load() == nil })
	writeFrames(f, 40, 4)
	waitFor(t, ctx, "every packet", func() bool {
		return r1.n.Load() == 60 && w2.n.Load() == 60 && other.n.Load() == 60
	})
	if d1.writer.shard.Load() == nil {
		t.Fatal("a lost its shard")
	}
	got := r1.datagrams()
	for i, d := range got {
		var p rtp.Packet
		if err := p.Unmarshal(d); err != nil || p.SequenceNumber != uint16(i) {
			t.Fatalf("a: datagram %d: seq %d, %v", i, p.SequenceNumber, err)
		}
	}
	if st := f.Stats(); st.Drops != 0 || st.PacketsOut != 180 {
		t.Fatalf("stats %+v", st)
	}
	_ = w1
}

// TestBatchedPathZeroAllocs: a frame forwarded to ten children through
// shards, batches and GSO sends allocates nothing.
func TestBatchedPathZeroAllocs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := NewForwarderWith(vp8Track, ForwarderOptions{GOPBytes: -1}, testLogger())
	defer f.Close()
	r := newReceiver(t, false)
	var ds []*downTrack
	for i := range 10 {
		d, _ := bindSocket(t, f, fmt.Sprint(i), r)
		ds = append(ds, d)
	}
	writeFrames(f, 0, 2)
	waitFor(t, ctx, "adoption", func() bool {
		for _, d := range ds {
			if d.writer.shard.Load() == nil {
				return false
			}
		}
		return true
	})
	waitFor(t, ctx, "first frames", func() bool { return r.n.Load() == 100 })
	next, lost := 10, false
	allocs := testing.AllocsPerRun(200, func() {
		writeFrames(f, next, 1)
		next += 5
		// Wait for the frame to arrive everywhere, so that the receiver's
		// socket buffer does not overflow; a deadline, not a sleep.
		deadline := time.Now().Add(5 * time.Second)
		for r.n.Load() < int64(next*10) && !lost {
			lost = time.Now().After(deadline)
			runtime.Gosched()
		}
	})
	if lost {
		t.Fatalf("the receiver got %d datagrams of %d", r.n.Load(), next*10)
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per frame forwarded to 10 children, want 0", allocs)
	}
	if st := f.Stats(); st.PacketsOut != uint64(next*10) || st.Drops != 0 {
		t.Fatalf("stats %+v, want %d packets out", st, next*10)
	}
}

var _ webrtc.TrackLocalWriter = (*sockWriter)(nil)

// TestMuxedDownstreamsBatch: children served over one UDP port from
// NewUDPMuxFromPort get every packet in order, are written by shards, and
// their frames leave in fewer system calls than datagrams.
func TestMuxedDownstreamsBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mux, err := NewUDPMuxFromPort(0, ice.UDPMuxFromPortWithLoopback(),
		ice.UDPMuxFromPortWithInterfaceFilter(func(n string) bool { return n == "lo" }),
		ice.UDPMuxFromPortWithNetworks(ice.NetworkTypeUDP4))
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	parent, err := NewAPI(Config{LoopbackOnly: true, UDPMux: mux, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	child := newTestAPI(t)
	video := NewForwarder(vp8Track, testLogger())
	defer video.Close()
	var links []*link
	var recs []*recorder
	for i := range 3 {
		r := newRecorder()
		l := newLinkAPIs(t, ctx, parent, child, fmt.Sprint("child", i), []*Forwarder{video}, r.sink)
		defer l.close()
		links, recs = append(links, l), append(recs, r)
	}
	for f := range 60 { // frames of five equal packets, as a packetizer makes
		writeFrames(video, f*5, 1)
		time.Sleep(time.Millisecond) // pacing, not an assertion
	}
	for i, r := range recs {
		waitFor(t, ctx, "all packets", func() bool { return r.count("video") >= 300 })
		got := r.get("video")
		if len(got) != 300 {
			t.Fatalf("child%d: %d packets, want 300", i, len(got))
		}
		for j, p := range got {
			want := framePart
			switch {
			case j == 0:
				want = keyStart
			case j%5 == 0:
				want = frameStart
			}
			if !bytes.Equal(p, want) {
				t.Fatalf("child%d: packet %d differs or is out of order", i, j)
			}
		}
	}
	for i, l := range links {
		if l.down.tracks[0].writer.shard.Load() == nil {
			t.Fatalf("child%d is not written by a shard", i)
		}
	}
	st := links[0].down.SendStats()
	if st.Datagrams < 900 || st.Sends >= st.Datagrams || st.Errors != 0 {
		t.Fatalf("mux send stats %+v: want 900+ datagrams in fewer sends, no errors", st)
	}
}
