package peer

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// TestNACKAnsweredFromRing: a child's NACKs are answered by its writer from
// the packets it sent, burst and queue alike, with the same header; a
// packet asked for twice at once is resent once; packets never sent or
// older than the retained window are not.
func TestNACKAnsweredFromRing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 7}}
	const pkts = 2
	for i := range 5 { // frames 0-4 cached; the child starts from them
		synthFrame(t, f, p, i, i == 0, pkts, 100)
	}
	w := &discardWriter{keep: true}
	d := bindFake(t, f, "c", 9, w)
	defer d.close()
	for i := 5; i < 10; i++ {
		synthFrame(t, f, p, i, false, pkts, 100)
	}
	waitFor(t, ctx, "burst and queue", func() bool { return w.n.Load() == 10*pkts })
	sent := func() []rtp.Header {
		w.mu.Lock()
		defer w.mu.Unlock()
		return slices.Clone(w.headers)
	}
	orig := sent()
	// 3 is in the burst, 15 in the queue (twice), 16-17 too; 40 was never sent.
	d.writer.queueNACK([]rtcp.NackPair{{PacketID: 3}, {PacketID: 15, LostPackets: 0b11}, {PacketID: 15}, {PacketID: 40}})
	waitFor(t, ctx, "retransmissions", func() bool { return w.n.Load() == 10*pkts+4 })
	got := sent()[10*pkts:]
	for i, seq := range []uint16{3, 15, 16, 17} {
		if got[i].SequenceNumber != seq || got[i].Timestamp != orig[seq].Timestamp || got[i].Marker != orig[seq].Marker || got[i].SSRC != 9 {
			t.Errorf("retransmission %d: %+v, want the header first sent for seq %d: %+v", i, got[i], seq, orig[seq])
		}
	}
	// A later NACK is answered after everything the first one caused, so
	// once it arrives nothing else can have been sent in between.
	d.writer.queueNACK([]rtcp.NackPair{{PacketID: 6}})
	waitFor(t, ctx, "the sentinel retransmission", func() bool { return w.n.Load() >= 10*pkts+5 })
	if all := sent(); len(all) != 10*pkts+5 || all[len(all)-1].SequenceNumber != 6 {
		t.Errorf("%d packets written, the last seq %d; want %d ending with 6: a duplicate or unknown NACK was answered",
			len(all), all[len(all)-1].SequenceNumber, 10*pkts+5)
	}
	if st := f.Stats(); st.Resent != 5 {
		t.Errorf("stats %+v, want 5 resent", st)
	}
}
