package mesh

import (
	"math/rand/v2"
	"sync"

	"github.com/pion/rtp"
)

// seenWindow is how far behind the newest packet a late packet (a
// retransmission) is still accepted.
const seenWindow = 1024

// restartAfter is how many consecutive too-old packets mean the numbering
// restarted (a returning source picked new random sequence numbers) rather
// than a burst of stale ones.
const restartAfter = 64

// ingress merges what one track receives from up to two parents (the old
// one and the new one while the node changes parent) into one stream: each
// sequence number passes once, and every packet leaves with one SSRC. Every
// hop forwards the source's sequence numbers unchanged, so the union of two
// parents' packets is exactly the source's stream, and a change of parent
// loses nothing that either parent delivered.
type ingress struct {
	mu       sync.Mutex
	ssrc     uint32
	started  bool
	highest  uint16
	tooOld   int
	seen     [seenWindow / 64]uint64
	received uint64
	bytes    uint64
}

func newIngress() *ingress { return &ingress{ssrc: rand.Uint32()} }

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
		g.started, g.highest, g.tooOld = true, seq, 0
		g.seen = [seenWindow / 64]uint64{}
		g.mark(seq)
	case d > 0:
		if int(d) >= seenWindow {
			g.seen = [seenWindow / 64]uint64{}
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
	g.received++
	g.bytes += uint64(len(p.Payload))
	return true
}
