package peer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"github.com/pion/rtp"
	"github.com/pion/transport/v5/vnet"
)

// lossyNet is a vnet router that drops a share of every packet it carries,
// RTCP and handshakes included, with one host per tree node.
type lossyNet struct {
	router  *vnet.Router
	dropped atomic.Uint64
	passed  atomic.Uint64
}

func newLossyNet(tb testing.TB, loss float64) *lossyNet {
	tb.Helper()
	r, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "10.0.0.0/24", LoggerFactory: slogFactory{logger: testLogger()}})
	if err != nil {
		tb.Fatal(err)
	}
	n := &lossyNet{router: r}
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	r.AddChunkFilter(func(vnet.Chunk) bool {
		mu.Lock()
		drop := rng.Float64() < loss
		mu.Unlock()
		if drop {
			n.dropped.Add(1)
		} else {
			n.passed.Add(1)
		}
		return !drop
	})
	return n
}

// host adds a host and returns an API whose PeerConnections use it.
func (n *lossyNet) host(tb testing.TB, ip string) *API {
	tb.Helper()
	nw, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
	if err != nil {
		tb.Fatal(err)
	}
	if err := n.router.AddNet(nw); err != nil {
		tb.Fatal(err)
	}
	a, err := NewAPI(Config{Net: nw, Logger: testLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// seqSet records which sequence numbers a sink received.
type seqSet struct {
	mu   sync.Mutex
	seen map[uint16]bool
}

func (s *seqSet) sink(_ protocol.Track, p *rtp.Packet) {
	s.mu.Lock()
	s.seen[p.SequenceNumber] = true
	s.mu.Unlock()
}

// TestLossRepairedHopByHop: 5 % random loss on every hop of a depth-3 chain
// (source → relay → relay → leaf); NACKs answered at each hop from its own
// send buffer get ≥ 99.5 % of the frames to the leaf complete.
func TestLossRepairedHopByHop(t *testing.T) {
	if testing.Short() {
		t.Skip("15 s of media over a lossy vnet")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ln := newLossyNet(t, 0.05)
	if err := ln.router.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.router.Stop() }()
	apis := make([]*API, 4)
	for i := range apis {
		apis[i] = ln.host(t, fmt.Sprintf("10.0.0.%d", i+10))
	}
	fwds := []*Forwarder{NewForwarder(vp8Track, testLogger()), NewForwarder(vp8Track, testLogger()), NewForwarder(vp8Track, testLogger())}
	for _, f := range fwds {
		defer f.Close()
	}
	leaf := &seqSet{seen: map[uint16]bool{}}
	// Build the chain leaf first, so the relays are attached before media
	// flows and every hop sees the whole stream.
	var links []*link
	defer func() {
		for _, l := range links {
			l.close()
		}
	}()
	links = append(links, newLinkAPIs(t, ctx, apis[2], apis[3], "leaf", fwds[2:3], leaf.sink))
	for i := 1; i >= 0; i-- {
		next := fwds[i+1]
		links = append(links, newLinkAPIs(t, ctx, apis[i], apis[i+1], fmt.Sprint("relay", i+1), fwds[i:i+1],
			func(_ protocol.Track, p *rtp.Packet) { _ = next.WriteRTP(p) }))
	}

	const pkts, frames = 5, 450 // 15 s at 30 fps
	p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 5, PayloadType: 96}}
	tick := time.NewTicker(time.Second / 30)
	// Half a second more than is counted: a receiver detects a loss only
	// when a later packet arrives, so the stream's last packets could never
	// be repaired.
	for i := range frames + 15 {
		synthFrame(t, fwds[0], p, i, i%30 == 0, pkts, 1000)
		<-tick.C
	}
	tick.Stop()
	// The leaf may have started at the first keyframe; count from its first frame.
	var missing []int
	complete := func() (int, int) {
		leaf.mu.Lock()
		defer leaf.mu.Unlock()
		first := -1
		n := 0
		missing = missing[:0]
		for i := range frames {
			ok := true
			for j := range pkts {
				ok = ok && leaf.seen[uint16(i*pkts+j)]
			}
			if !ok && first >= 0 {
				missing = append(missing, i)
			}
			if ok {
				n++
				if first < 0 {
					first = i
				}
			}
		}
		return n, frames - max(first, 0)
	}
	// Give the last repairs time to arrive; stop as soon as all are in.
	deadline := time.Now().Add(5 * time.Second)
	for n, want := complete(); n < want && time.Now().Before(deadline); n, want = complete() {
		time.Sleep(50 * time.Millisecond)
	}
	n, want := complete()
	t.Logf("leaf: %d/%d frames complete (%.2f %%); vnet dropped %d of %d packets",
		n, want, 100*float64(n)/float64(want), ln.dropped.Load(), ln.dropped.Load()+ln.passed.Load())
	if want < frames*9/10 {
		t.Fatalf("the leaf started late: %d of %d frames expected", want, frames)
	}
	if float64(n) < 0.995*float64(want) {
		t.Fatalf("only %d of %d frames complete; incomplete: %v", n, want, missing)
	}
}
