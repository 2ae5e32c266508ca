package mesh

import (
	"math/rand/v2"
	"sync"

	"github.com/pion/rtp"
)

// seenWindow is how far behind the newest packet a late packet (a
// retransmission) is still accepted: as far as the peer package's SRTP
// replay window and NACK log reach (4096). A GOP burst to a new child runs
// at ~5200 packets/s, so a repair arrives 500-1000 packets after newer
// ones; 1024 dropped the second round of repair of a burst (issue 12).
const seenWindow = 4096

// restartAfter is how many consecutive too-old packets mean the numbering
// restarted (a returning source picked new random sequence numbers) rather
// than a burst of stale ones.
const restartAfter = 64

// ingress merges what one track receives from up to two parents (the old
// one and the new one while the node changes parent) into one stream: each
// sequence number passes once, and every packet leaves with one SSRC. Every
// hop forwards its parent's sequence numbers unchanged, so the union of two
// parents' packets is exactly the source's stream, and a change of parent
// loses nothing that either parent delivered.
//
// When the numbering restarts (a new source), the ingress shifts sequence
// numbers and timestamps so that what it passes on continues where it left
// off: children's SRTP contexts and jitter buffers see one stream.
type ingress struct {
	mu       sync.Mutex
	ssrc     uint32
	tsStep   uint32 // one frame's worth of timestamp, for the shift at a restart
	started  bool
	highest  uint16 // newest incoming sequence number
	tooOld   int
	seen     [seenWindow / 64]uint64
	received uint64
	bytes    uint64

	// Shift applied to incoming numbers, and the newest numbers passed on.
	seqShift      uint16
	tsShift       uint32
	outSeq, outTS uint32
	haveOut       bool
}

func newIngress(clockRate uint32) *ingress {
	step := clockRate / 50 // 20 ms: an audio packet, or under a video frame
	if step == 0 {
		step = 1
	}
	return &ingress{ssrc: rand.Uint32(), tsStep: step}
}

func (g *ingress) mark(seq uint16)        { g.seen[(seq%seenWindow)/64] |= 1 << (seq % 64) }
func (g *ingress) unmark(seq uint16)      { g.seen[(seq%seenWindow)/64] &^= 1 << (seq % 64) }
func (g *ingress) marked(seq uint16) bool { return g.seen[(seq%seenWindow)/64]&(1<<(seq%64)) != 0 }

// reset forgets the numbering: the next packet starts a new stream.
func (g *ingress) reset() {
	g.mu.Lock()
	g.started = false
	g.mu.Unlock()
}

// admit reports whether p is new, and if so rewrites its SSRC; it must be
// called with g.mu held.
func (g *ingress) admit(p *rtp.Packet) bool {
	seq := p.SequenceNumber
	switch d := int16(seq - g.highest); {
	case !g.started:
		g.restart(p)
	case d > 0:
		if int(d) >= seenWindow {
			g.restart(p) // a jump this far is a new numbering, not loss
			break
		} else {
			for s := g.highest + 1; s != seq; s++ {
				g.unmark(s) // skipped: may still arrive as a retransmission
			}
		}
		g.highest, g.tooOld = seq, 0
		g.mark(seq)
	case -int(d) >= seenWindow:
		g.tooOld++
		if g.tooOld < restartAfter {
			return false
		}
		g.started = false
		return g.admit(p)
	case g.marked(seq):
		return false // already passed on, from this parent or the other
	default:
		g.mark(seq)
	}
	p.SSRC = g.ssrc
	p.SequenceNumber += g.seqShift
	p.Timestamp += g.tsShift
	if !g.haveOut || int16(p.SequenceNumber-uint16(g.outSeq)) > 0 {
		g.haveOut, g.outSeq, g.outTS = true, uint32(p.SequenceNumber), p.Timestamp
	}
	g.received++
	g.bytes += uint64(len(p.Payload))
	return true
}

// restart takes p as the first packet of a new numbering.
func (g *ingress) restart(p *rtp.Packet) {
	g.started, g.highest, g.tooOld = true, p.SequenceNumber, 0
	g.seen = [seenWindow / 64]uint64{}
	g.mark(p.SequenceNumber)
	if g.haveOut {
		g.seqShift = uint16(g.outSeq) + 1 - p.SequenceNumber
		g.tsShift = g.outTS + g.tsStep - p.Timestamp
	}
}
