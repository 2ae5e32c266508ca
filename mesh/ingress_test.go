package mesh

import (
	"testing"

	"github.com/pion/rtp"
)

func TestIngressMergesTwoParents(t *testing.T) {
	g := newIngress(90000)
	var out []uint16
	push := func(seq uint16, ssrc uint32) {
		p := &rtp.Packet{Header: rtp.Header{SequenceNumber: seq, SSRC: ssrc}}
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.admit(p) {
			if p.SSRC != g.ssrc {
				t.Fatalf("ssrc %x passed, want %x", p.SSRC, g.ssrc)
			}
			out = append(out, seq)
		}
	}
	// Old parent delivers 65530..65535, 0, 1; the new one overlaps from 65534
	// (its relay's GOP burst) and then continues alone, with one packet lost
	// by the old parent (65533) arriving only from the new one.
	for _, s := range []uint16{65530, 65531, 65532, 65534, 65535, 0, 1} {
		push(s, 1)
	}
	for _, s := range []uint16{65533, 65534, 65535, 0, 1, 2, 3} {
		push(s, 2)
	}
	want := []uint16{65530, 65531, 65532, 65534, 65535, 0, 1, 65533, 2, 3}
	if len(out) != len(want) {
		t.Fatalf("passed %v, want %v", out, want)
	}
	for i := range want {
		if out[i] != want[i] {
			t.Fatalf("passed %v, want %v", out, want)
		}
	}
}

func TestIngressRestartedNumbering(t *testing.T) {
	g := newIngress(90000)
	admit := func(seq uint16) bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.admit(&rtp.Packet{Header: rtp.Header{SequenceNumber: seq}})
	}
	for s := uint16(30000); s < 30100; s++ {
		admit(s)
	}
	// A returning source starts 20000 behind: stale at first, then taken as
	// a new stream instead of being dropped forever.
	passed := 0
	for s := uint16(10000); s < 10200; s++ {
		if admit(s) {
			passed++
		}
	}
	if passed < 200-restartAfter || passed == 200 {
		t.Fatalf("passed %d of 200 restarted packets", passed)
	}
	// What passed on continues the old numbering.
	g.mu.Lock()
	out := uint16(g.outSeq)
	g.mu.Unlock()
	if want := uint16(30099 + passed); out != want {
		t.Fatalf("after the restart the newest sequence passed on is %d, want %d (continuous)", out, want)
	}
	g.reset()
	p := &rtp.Packet{Header: rtp.Header{SequenceNumber: 5}}
	g.mu.Lock()
	ok := g.admit(p)
	g.mu.Unlock()
	if !ok || p.SequenceNumber != out+1 {
		t.Fatalf("after reset: admitted %v as %d, want a new stream continuing at %d", ok, p.SequenceNumber, out+1)
	}
}

func BenchmarkIngress(b *testing.B) {
	g := newIngress(90000)
	p := &rtp.Packet{Payload: make([]byte, 1000)}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.SequenceNumber = uint16(i)
		g.mu.Lock()
		g.admit(p)
		g.mu.Unlock()
	}
}

// TestIngressAdmitsLateRepair: a retransmission that arrives thousands of
// packets after newer ones, as the repair of a GOP burst does, passes once.
func TestIngressAdmitsLateRepair(t *testing.T) {
	g := newIngress(90000)
	admit := func(seq uint16) bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.admit(&rtp.Packet{Header: rtp.Header{SequenceNumber: seq}})
	}
	for s := range uint16(3500) {
		if s != 100 && !admit(s) {
			t.Fatalf("new packet %d refused", s)
		}
	}
	if !admit(100) {
		t.Fatal("the repair of packet 100, 3400 packets late, was refused")
	}
	if admit(100) || admit(3000) {
		t.Fatal("a duplicate passed")
	}
}
