package peer

import (
	"sync/atomic"
	"time"
)

// Defaults of the GOP cache. 4 MiB hold a 10 s GOP of a 3 Mbps stream; a
// GOP that does not fit is not cached and new children wait for the next
// keyframe as they would without a cache.
const (
	defaultGOPBytes   = 4 << 20
	defaultGOPPackets = 8192
	// defaultBurstRate paces the cached GOP to a new child: fast enough that a
	// 10 s GOP of 2.5 Mbps is through in about half a second, slow enough not
	// to overflow a receiver's socket buffer at once.
	defaultBurstRate = 50_000_000 // bits per second
	// burstAllowance is sent before pacing starts, in one batch of writes.
	// It must fit the child's socket receive buffer, which nobody drains
	// while the batch lands: Linux's default (212992 B) holds 92 datagrams
	// of a 1200 B payload on loopback (each costs ~2.3 KB of truesize), so
	// 256 KiB (~215 packets) lost ~120 of every burst longer than that
	// (issue 12). 64 KiB is ~55 packets; the rest of a keyframe follows at
	// BurstRate, ~2 ms later for a 80 KB one.
	burstAllowance = 64 << 10
)

// gopEntry is one cached packet: the rewritten header fields, the frame it
// belongs to (to compress timestamps) and where its payload sits in the arena.
type gopEntry struct {
	seq     uint16
	ts      uint32
	marker  bool
	padding byte
	frame   int32
	off, n  int32
	extLen  uint8
	ext     [maxExtLen]byte
}

// gop is the packets since the last keyframe. Only the WriteRTP goroutine
// appends; a child bursting from it reads entries[:upto] it was handed,
// which the writer never touches again until refs drops to zero. Arena and
// entries are allocated once at their full size so their slice headers never
// change under a reader.
type gop struct {
	arena   []byte
	entries []gopEntry
	count   int   // entries used; writer-owned
	used    int   // arena bytes used; writer-owned
	frames  int32 // frames seen; writer-owned
	keyTS   uint32
	newest  uint32       // timestamp of the newest frame; writer-owned
	full    bool         // something did not fit: not usable until the next keyframe
	refs    atomic.Int32 // children still bursting from it
}

func newGOP(bytes, packets int) *gop {
	return &gop{arena: make([]byte, bytes), entries: make([]gopEntry, packets)}
}

func (g *gop) reset(keyTS uint32) {
	g.count, g.used, g.frames, g.keyTS, g.full = 0, 0, 0, keyTS, false
}

// add appends one packet; late packets (repaired by NACK after newer ones
// arrived) join the frame of their timestamp so compression keeps them there.
func (g *gop) add(seq uint16, ts uint32, marker bool, pad byte, payload, ext []byte) {
	if g.full {
		return
	}
	if g.count > 0 && int16(seq-g.entries[0].seq) < 0 {
		return // a late packet of the previous GOP: no use to a new child
	}
	if g.count == len(g.entries) || g.used+len(payload) > len(g.arena) {
		g.full = true
		return
	}
	frame := g.frames - 1
	switch {
	case g.count == 0 || int32(ts-g.newest) > 0:
		g.frames++
		g.newest = ts
		frame = g.frames - 1
	case ts != g.newest:
		frame = g.frameOf(ts)
	}
	e := &g.entries[g.count]
	e.seq, e.ts, e.marker, e.padding, e.frame = seq, ts, marker, pad, frame
	e.off, e.n = int32(g.used), int32(len(payload))
	e.extLen = uint8(copy(e.ext[:], ext))
	g.used += copy(g.arena[g.used:], payload)
	g.count++
}

// frameOf finds the frame of an older timestamp, looking back a bounded way.
func (g *gop) frameOf(ts uint32) int32 {
	for i := g.count - 1; i >= 0 && i >= g.count-512; i-- {
		if g.entries[i].ts == ts {
			return g.entries[i].frame
		}
	}
	return g.frames - 1
}

// burst is what a new child is handed: a GOP and how much of it to send
// before its own queue, which starts with the packet after entries[upto-1].
type burst struct {
	g    *gop
	upto int
	// The newest frame at hand-off keeps its timestamp; older frames are
	// moved up to it (see Forwarder options) so the child's jitter buffer
	// plays from the live edge instead of replaying the GOP in real time.
	lastFrame int32
	lastTS    uint32
}

// find returns the index of the burst's entry with sequence number seq, or
// -1: where consecutive numbering puts it, else by a scan.
func (b *burst) find(seq uint16) int {
	if b.upto == 0 {
		return -1
	}
	if i := int(seq - b.g.entries[0].seq); i < b.upto && b.g.entries[i].seq == seq {
		return i
	}
	for i := range b.upto {
		if b.g.entries[i].seq == seq {
			return i
		}
	}
	return -1
}

// gopCache is the Forwarder's current GOP plus a spare, so switching at a
// keyframe allocates nothing unless a child is still bursting from both.
type gopCache struct {
	bytes, packets int
	cur, spare     *gop
}

// keyframe starts a new GOP at a keyframe with timestamp ts.
func (c *gopCache) keyframe(ts uint32) {
	if c.cur != nil && c.cur.count > 0 && c.cur.keyTS == ts && !c.cur.full {
		return // another packet of the same keyframe (H264: SPS, then IDR slices)
	}
	next := c.cur
	if next == nil || next.refs.Load() != 0 {
		next = c.spare
		if next == nil || next.refs.Load() != 0 {
			next = newGOP(c.bytes, c.packets)
		}
		c.spare = c.cur
	}
	next.reset(ts)
	c.cur = next
}

// take hands the current GOP to a new child, or nil when there is none to
// start from.
func (c *gopCache) take() *burst {
	g := c.cur
	if g == nil || g.full || g.count == 0 {
		return nil
	}
	g.refs.Add(1)
	return &burst{g: g, upto: g.count, lastFrame: g.frames - 1, lastTS: g.newest}
}

// pacer spreads a burst over time at a fixed rate after an allowance.
type pacer struct {
	rate  float64 // bytes per second; 0 means unpaced
	start time.Time
	sent  int
}

// delay counts n more bytes sent and returns how long to wait before the
// next: zero within the allowance or when the wait would be too short to
// sleep for.
func (p *pacer) delay(n int) time.Duration {
	p.sent += n
	if p.rate == 0 || p.sent <= burstAllowance {
		return 0
	}
	due := p.start.Add(time.Duration(float64(p.sent-burstAllowance) / p.rate * float64(time.Second)))
	if d := time.Until(due); d > 200*time.Microsecond {
		return d
	}
	return 0
}
