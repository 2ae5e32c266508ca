package media

import (
	"math/rand/v2"
	"time"

	"github.com/pion/rtp"
)

// Windows of an RTPIngest, in input sequence numbers.
const (
	// ingestWindow is how far behind the newest packet a late (reordered)
	// packet is still passed on, and how far back duplicates are caught.
	// An encoder on the same host or LAN reorders by a few packets at most.
	ingestWindow = 1024
	// ingestLate bounds the search for the numbering a late packet falls
	// under when oversized packets were split around it.
	ingestLate = 64
	// ingestJump is a forward jump in sequence numbers that means the
	// sender restarted with a new numbering rather than lost packets:
	// 2048 packets are seconds of video.
	ingestJump = 2048
	// ingestStale is how many consecutive packets from far behind mean a
	// restart too (the new numbering happens to start below the old).
	ingestStale = 64
	// ingestSwitch is how long the current sender must have been silent
	// before another SSRC takes over: a restarted encoder takes longer to
	// come back, and a second sender on the port by mistake is ignored
	// instead of interleaving two streams.
	ingestSwitch = 500 * time.Millisecond
)

// RTPIngest turns the RTP stream an encoder sends (ffmpeg -f rtp, a
// GStreamer udpsink, a WHIP publisher's track) into one track of a source:
// one SSRC and the track's payload type, sequence numbers and timestamps
// that stay continuous when the sender restarts (a new SSRC or a new
// numbering is shifted to continue where the old one stopped, its clock by
// the wall time between them, as a node does for a returning source; another
// SSRC takes over only once the current one has been silent 500 ms), no
// duplicates, and no packet over MTU: an oversized H264 or VP8 packet is
// split (FU-A fragments, VP8 partitions) and the numbers after it move up.
//
// Packets pass in the order they arrive, loss and reordering included: the
// tree forwards RTP as it is, each receiver's jitter buffer reorders, and
// the forwarder's GOP cache finds keyframes in the payloads. Loss before the
// ingest cannot be repaired: an encoder speaking plain RTP answers no NACK
// (nor keyframe request). It is not safe for concurrent use.
type RTPIngest struct {
	codec Codec
	ssrc  uint32

	started bool
	inSSRC  uint32
	lastIn  time.Time // arrival of the current sender's last packet
	highest uint16    // newest input sequence number
	stale   int
	seen    [ingestWindow / 64]uint64
	// after[s%ingestWindow] is the shift in effect after input packet s
	// (its own shift plus the packets its split added): what a late packet
	// just after s is numbered with.
	after [ingestWindow]uint16

	seqShift uint16 // output = input + seqShift for the newest packets
	tsShift  uint32
	haveOut  bool
	outSeq   uint16 // newest output sequence number
	outTS    uint32
	outAt    time.Time // arrival of the packet that carried outTS

	split splitter
}

// NewRTPIngest makes an ingest for a track of codec c with a random SSRC.
func NewRTPIngest(c Codec) *RTPIngest {
	return &RTPIngest{codec: c, ssrc: rand.Uint32(), split: splitter{mime: c.MimeType}}
}

// SSRC returns the synchronization source every packet leaves with.
func (g *RTPIngest) SSRC() uint32 { return g.ssrc }

// Codec returns the track's codec.
func (g *RTPIngest) Codec() Codec { return g.codec }

// Push takes one received packet, which arrived at now, and returns what to
// send for it: nothing (a duplicate, or too late), the packet itself
// rewritten, or the pieces of an oversized one. p is modified; the result
// is valid until the next Push.
func (g *RTPIngest) Push(p *rtp.Packet, now time.Time) []*rtp.Packet {
	seq := p.SequenceNumber
	if g.started && p.SSRC != g.inSSRC && now.Sub(g.lastIn) < ingestSwitch {
		return nil
	}
	g.lastIn = now
	var shift uint16
	switch d := int16(seq - g.highest); {
	case !g.started || p.SSRC != g.inSSRC || int(d) >= ingestJump:
		g.restart(p, now)
		shift = g.seqShift
		g.highest = seq
	case d > 0:
		for s := g.highest + 1; s != seq; s++ {
			g.unmark(s) // skipped: may still arrive, late
		}
		g.highest, g.stale = seq, 0
		shift = g.seqShift
	case -int(d) >= ingestWindow:
		if g.stale++; g.stale < ingestStale {
			return nil
		}
		g.started = false
		return g.Push(p, now)
	case g.marked(seq):
		return nil
	default:
		var ok bool
		if shift, ok = g.lateShift(seq); !ok {
			return nil
		}
	}
	g.mark(seq)

	p.SSRC, p.PayloadType = g.ssrc, g.codec.PayloadType
	p.Timestamp += g.tsShift
	late := seq != g.highest
	pieces := g.split.packets(p, late)
	for i, q := range pieces {
		q.SequenceNumber = seq + shift + uint16(i)
	}
	next := shift + uint16(len(pieces)-1)
	g.after[seq%ingestWindow] = next
	if !late {
		g.seqShift = next
		last := pieces[len(pieces)-1]
		if !g.haveOut || int32(last.Timestamp-g.outTS) >= 0 {
			g.outTS, g.outAt = last.Timestamp, now
		}
		g.haveOut, g.outSeq = true, last.SequenceNumber
	}
	return pieces
}

// lateShift finds the numbering of a late packet: that of the nearest
// earlier packet seen. Without one close by the packet is dropped; it is
// too late to be of use to anyone.
func (g *RTPIngest) lateShift(seq uint16) (uint16, bool) {
	for k := uint16(1); k <= ingestLate; k++ {
		if s := seq - k; g.marked(s) {
			return g.after[s%ingestWindow], true
		}
	}
	return 0, false
}

// restart takes p as the first packet of a new numbering, continuing the
// output where it stopped.
func (g *RTPIngest) restart(p *rtp.Packet, now time.Time) {
	g.started, g.inSSRC, g.stale = true, p.SSRC, 0
	g.seen = [ingestWindow / 64]uint64{}
	if !g.haveOut {
		// The sender's own numbers are random already (RFC 3550 §5.1).
		g.seqShift, g.tsShift = 0, 0
		return
	}
	ticks := uint32(max(now.Sub(g.outAt), time.Millisecond).Seconds() * float64(g.codec.ClockRate))
	g.seqShift = g.outSeq + 1 - p.SequenceNumber
	g.tsShift = g.outTS + max(ticks, 1) - p.Timestamp
}

func (g *RTPIngest) mark(seq uint16)   { g.seen[(seq%ingestWindow)/64] |= 1 << (seq % 64) }
func (g *RTPIngest) unmark(seq uint16) { g.seen[(seq%ingestWindow)/64] &^= 1 << (seq % 64) }
func (g *RTPIngest) marked(seq uint16) bool {
	return g.seen[(seq%ingestWindow)/64]&(1<<(seq%64)) != 0
}
