package peer

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// slotPayloadSize bounds one queued payload: an Ethernet MTU, more than any
// RTP payload that arrived over UDP after its headers.
const slotPayloadSize = 1500

// Retransmission. A child's ring keeps the last retainSlots packets it sent
// intact (the producer never overwrites them), and NACKs are answered from
// there by the child's writer: no copy of every packet into a second buffer,
// as pion's NACK responder interceptor makes. A packet is resent at most once
// per resendInterval, however often it is asked for.
const (
	retainSlots    = 256 // about 0.85 s of a 2.5 Mbps stream
	resendInterval = 20 * time.Millisecond
	maxPendingNACK = 512
	// burstHold bounds how long after its burst a child keeps the GOP for
	// retransmissions: a held GOP cannot be reused at the next keyframe, so
	// children joining one after another would make the cache allocate.
	// A second lets a burst's last packets through three or more rounds of
	// NACK (one per 100 ms tick): 300 ms left one lost twice at 3 % loss.
	burstHold = time.Second
)

// Retransmission budget. A NACK costs the child a few bytes and the parent a
// whole packet, so without a bound a child that asks for its last 256
// packets every 20 ms pulls ~66× the stream from its parent. Each child's
// writer keeps a token bucket in bytes: every packet sent from the queue
// adds a quarter of its size (25 % of the bitrate that child is sent: 5 %
// loss costs ~5.3 % in repairs, so honest repair keeps a margin of four to
// one), a floor of 64 kbit/s adds the rest (a low-rate track, an audio
// track, a child whose video has not started yet), and the bucket holds at
// most 128 KiB: a 2 Mbps keyframe (~100 packets) lost at once is repaired
// in one go. What the bucket cannot pay for is refused and counted; the
// child's own NACK generator asks again while the packet is still wanted.
const (
	resendShare = 4       // 1/resendShare of the bytes sent to a child may be resent
	resendFloor = 8 << 10 // bytes per second added whatever the bitrate
	resendBurst = 128 << 10
	// resendOverhead is what a resent packet costs on top of its payload:
	// the RTP header.
	resendOverhead = 12
)

// slot is one queued packet: the header fields the child keeps (SSRC and
// payload type are the binding's; of the extensions only abs-capture-time
// is forwarded, under the id the child negotiated) and a copy of the payload.
type slot struct {
	seq     uint16
	ts      uint32
	marker  bool
	padding byte
	extLen  uint8
	ext     [maxExtLen]byte
	n       int
	resent  int64 // unix nanoseconds of the last retransmission; the writer's
	buf     [slotPayloadSize]byte
}

// childWriter is one child's bounded queue: a single-producer single-consumer
// ring of preallocated slots, filled by WriteRTP and drained by one writer
// goroutine that calls the binding's WriteStream.
type childWriter struct {
	ssrc   uint32
	pt     uint8
	extID  uint8 // abs-capture-time id the child negotiated; 0: not sent
	ws     webrtc.TrackLocalWriter
	out    *batchNet    // batches each pass's writes; nil: none
	direct *atomic.Bool // see downTrack

	slots  []slot
	retain uint64        // slots behind head kept for retransmission
	head   atomic.Uint64 // next slot to write out; owned by the writer
	tail   atomic.Uint64 // next slot to fill; owned by the producer

	// NACKed sequence numbers waiting for the writer.
	nackMu sync.Mutex
	nacks  []uint16

	// Owned by the writer: the burst it sent, kept (with its GOP reference)
	// for a while after, to answer NACKs.
	held      *burst
	heldUntil uint64    // or until retainSlots queued packets followed
	heldTill  time.Time // or until then, whichever comes first

	// Owned by whoever runs passes: the writer goroutine, or the shard.
	hdr     rtp.Header
	pending []uint16
	// budget is the retransmission token bucket in bytes (see resendShare),
	// refilled by the floor since budgetAt (unix nanoseconds).
	budget   int64
	budgetAt int64

	// shard, once set, runs this child's passes (shard.go). passMu orders
	// a shard's pass with the child leaving it; gone is set, under passMu,
	// when it has. demoted tells the writer goroutine the shard gave the
	// child back.
	shard   atomic.Pointer[shard]
	passMu  sync.Mutex
	gone    bool
	demoted chan struct{}

	notify   chan struct{} // buffered(1): "the tail moved", or a NACK came
	idle     atomic.Bool   // the writer found nothing to send and may sleep
	stopCh   chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	// waitKeyframe is owned by the producer (the WriteRTP goroutine) once
	// attach has published the child.
	waitKeyframe bool

	// burst, once set by the producer, is sent before the queue.
	burst     atomic.Pointer[burst]
	burstRate float64 // bytes per second
	keepTS    bool

	sent      atomic.Uint64
	resent    atomic.Uint64
	refused   atomic.Uint64 // NACKed packets not resent: over the budget
	dropped   atomic.Uint64
	writeErrs atomic.Uint64
}

// newChildWriter makes a child's ring: slots for queued packets plus
// retainSlots for the ones sent last.
func newChildWriter(ssrc uint32, pt uint8, ws webrtc.TrackLocalWriter, slots int) *childWriter {
	return &childWriter{
		ssrc: ssrc, pt: pt, ws: ws,
		slots:   make([]slot, slots+retainSlots),
		retain:  retainSlots,
		budget:  resendBurst,
		notify:  make(chan struct{}, 1),
		demoted: make(chan struct{}, 1),
		stopCh:  make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// push queues a packet, waking the writer if wake is set; it reports false
// when the queue is full.
func (c *childWriter) push(seq uint16, ts uint32, marker bool, pad byte, payload, ext []byte, wake bool) bool {
	t := c.tail.Load()
	if t-c.head.Load() >= uint64(len(c.slots))-c.retain {
		return false
	}
	s := &c.slots[t%uint64(len(c.slots))]
	s.seq, s.ts, s.marker, s.padding, s.resent = seq, ts, marker, pad, 0
	s.extLen = uint8(copy(s.ext[:], ext))
	s.n = copy(s.buf[:], payload)
	c.tail.Store(t + 1)
	// Wake the writer only if asked to and it is asleep (or about to be): a
	// busy writer looks at tail again before it sleeps. Both sides use
	// sequentially consistent atomics, so one of them sees the other's store.
	// A packet pushed without waking goes out with the next that wakes.
	if !wake {
		return true
	}
	if s := c.shard.Load(); s != nil {
		s.wakeIfIdle()
	} else if c.idle.Load() && c.idle.CompareAndSwap(true, false) {
		c.wake()
	}
	return true
}

// wake tells the writer, or the shard, there is something to send.
func (c *childWriter) wake() {
	if s := c.shard.Load(); s != nil {
		s.wake()
		return
	}
	select {
	case c.notify <- struct{}{}:
	default: // the writer has a wake-up pending already
	}
}

// queueNACK hands NACKed sequence numbers to the writer.
func (c *childWriter) queueNACK(pairs []rtcp.NackPair) {
	c.nackMu.Lock()
	for _, p := range pairs {
		p.Range(func(seq uint16) bool {
			if len(c.nacks) >= maxPendingNACK {
				return false
			}
			c.nacks = append(c.nacks, seq)
			return true
		})
	}
	c.nackMu.Unlock()
	c.wake()
}

// queued returns the number of packets waiting.
func (c *childWriter) queued() int { return int(c.tail.Load() - c.head.Load()) }

// run waits until start says the child is attached, sends the cached GOP,
// then drains the queue until stopped. It wakes once per frame, not once per
// packet: everything queued meanwhile is written in one pass. Once a pass
// shows that the child's packets go out through its own UDP sockets, the
// child is handed to one of the Forwarder's shards (shard.go) and this
// goroutine only waits: to be stopped, or to take the child back.
func (c *childWriter) run(f *Forwarder, start func() bool) {
	defer close(c.done)
	if !start() {
		return
	}
	defer func() {
		if b := c.burst.Swap(nil); b != nil {
			b.g.refs.Add(-1)
		}
		c.release()
	}()
	c.hdr = rtp.Header{Version: 2, PayloadType: c.pt, SSRC: c.ssrc, Extensions: make([]rtp.Extension, 0, 1)}
	for {
		if b := c.burst.Swap(nil); b != nil {
			c.release()
			c.held, c.heldUntil = b, c.head.Load()+c.retain
			if !c.sendBurst(&c.hdr, b, &c.pending) {
				return
			}
			c.heldTill = time.Now().Add(burstHold)
		}
		sent, through := c.pass()
		if sent > 0 && through && f.adopt(c) {
			select {
			case <-c.stopCh:
				f.disown(c)
				return
			case <-c.demoted:
				// The shard gave the child back; its passes are over.
			}
		}
		c.idle.Store(true)
		if c.tail.Load() != c.head.Load() {
			c.idle.Store(false)
			continue // pushed after the drain; push may not have woken us
		}
		select {
		case <-c.notify:
		case <-c.stopCh:
			return
		}
		c.idle.Store(false)
	}
}

// pass writes what is queued now, NACKed packets first, and lets go of the
// held burst once it is old. It runs on the child's goroutine or, once the
// child is adopted, on its shard's; never on both. It reports how many
// packets it wrote, and whether they went out through the connection's
// UDP sockets, in as few system calls as the batchNet could make of them:
// ICE's selected pair says the path is one of them, and the sockets queued
// at least as many datagrams as the pass wrote. (The count alone could be
// fooled by other children writing to a shared mux meanwhile.)
func (c *childWriter) pass() (sent int, through bool) {
	before := c.out.queuedTotal()
	c.out.begin()
	c.pending = c.resend(&c.hdr, c.pending)
	h, t := c.head.Load(), c.tail.Load()
	credit := 0
	for ; h != t; h++ {
		s := &c.slots[h%uint64(len(c.slots))]
		c.write(&c.hdr, s.seq, s.ts, s.marker, s.padding, s.ext[:s.extLen], s.buf[:s.n])
		c.head.Store(h + 1)
		credit += s.n
		sent++
	}
	c.budget += int64(credit / resendShare)
	c.out.flush()
	if c.held != nil && (h >= c.heldUntil || time.Now().After(c.heldTill)) {
		c.release()
	}
	through = c.out != nil && (c.direct == nil || c.direct.Load()) && c.out.queuedTotal()-before >= uint64(sent)
	return sent, through
}

// release lets go of the burst kept for retransmission.
func (c *childWriter) release() {
	if c.held != nil {
		c.held.g.refs.Add(-1)
		c.held = nil
	}
}

// resend answers the NACKs queued since the last call from the packets
// sent last: the retained slots behind head, and the burst while it is
// held, as far as the child's retransmission budget goes. Unknown or too
// old sequence numbers are ignored, as pion does. It returns buf for reuse.
func (c *childWriter) resend(hdr *rtp.Header, buf []uint16) []uint16 {
	c.nackMu.Lock()
	buf, c.nacks = c.nacks, buf[:0]
	c.nackMu.Unlock()
	if len(buf) == 0 {
		return buf
	}
	now := time.Now().UnixNano()
	c.refill(now)
	head := c.head.Load()
	lo := uint64(0)
	if head > c.retain {
		lo = head - c.retain
	}
	for k, seq := range buf {
		if c.budget <= 0 {
			// Spent: refuse the rest without looking them up, so that a
			// flood of NACKs costs the writer no more than counting them.
			c.refused.Add(uint64(len(buf) - k))
			break
		}
		if s := c.findSlot(seq, lo, head); s != nil {
			if now-s.resent < int64(resendInterval) {
				continue
			}
			s.resent = now
			c.write(hdr, s.seq, s.ts, s.marker, s.padding, s.ext[:s.extLen], s.buf[:s.n])
			c.budget -= int64(s.n + resendOverhead)
			c.resent.Add(1)
			continue
		}
		if b := c.held; b != nil {
			if i := b.find(seq); i >= 0 {
				e := &b.g.entries[i]
				c.write(hdr, e.seq, c.burstTS(b, e), e.marker, e.padding, e.ext[:e.extLen], b.g.arena[e.off:e.off+e.n])
				c.budget -= int64(e.n) + resendOverhead
				c.resent.Add(1)
			}
		}
	}
	return buf
}

// refill adds the floor's share of the time since the last refill to the
// retransmission budget and caps it at resendBurst. The credit of the
// packets sent meanwhile was added by pass; the cap applies to both.
func (c *childWriter) refill(now int64) {
	if c.budgetAt != 0 {
		// Capped at the time the floor takes to fill the bucket, so the
		// product cannot overflow.
		d := min(now-c.budgetAt, int64(time.Second)*resendBurst/resendFloor)
		c.budget += d * resendFloor / int64(time.Second)
	}
	c.budgetAt = now
	c.budget = min(c.budget, resendBurst)
}

// findSlot finds the sent slot with sequence number seq in [lo, head):
// where consecutive numbering puts it, else by a scan.
func (c *childWriter) findSlot(seq uint16, lo, head uint64) *slot {
	if head == lo {
		return nil
	}
	n := uint64(len(c.slots))
	last := &c.slots[(head-1)%n]
	if d := uint64(last.seq - seq); d < head-lo {
		if s := &c.slots[(head-1-d)%n]; s.seq == seq {
			return s
		}
	}
	for i := head; i > lo; i-- {
		if s := &c.slots[(i-1)%n]; s.seq == seq {
			return s
		}
	}
	return nil
}

// write sends one packet through the binding's WriteStream.
func (c *childWriter) write(hdr *rtp.Header, seq uint16, ts uint32, marker bool, pad byte, ext, payload []byte) {
	hdr.SequenceNumber, hdr.Timestamp, hdr.Marker = seq, ts, marker
	hdr.Padding, hdr.PaddingSize = pad != 0, pad
	hdr.Extension, hdr.ExtensionProfile, hdr.Extensions = false, 0, hdr.Extensions[:0]
	if c.extID != 0 && len(ext) > 0 {
		_ = hdr.SetExtension(c.extID, ext) // appends within capacity
	}
	if _, err := c.ws.WriteRTP(hdr, payload); err != nil {
		// Closed pipes mean the PeerConnection is going away; Unbind
		// stops this loop shortly. Count, do not log per packet.
		c.writeErrs.Add(1)
	} else {
		c.sent.Add(1)
	}
}

// sendBurst writes the cached GOP, paced, answering NACKs as it goes; it
// reports false if stopped.
func (c *childWriter) sendBurst(hdr *rtp.Header, b *burst, pending *[]uint16) bool {
	pc := pacer{rate: c.burstRate, start: time.Now()}
	c.out.begin()
	defer c.out.flush()
	for i := range b.upto {
		e := &b.g.entries[i]
		c.write(hdr, e.seq, c.burstTS(b, e), e.marker, e.padding, e.ext[:e.extLen], b.g.arena[e.off:e.off+e.n])
		if d := pc.delay(int(e.n)); d > 0 {
			// Never sleep in a pass: other writes to the socket wait for it.
			c.out.flush()
			time.Sleep(d)
			c.out.begin()
		}
		if i%32 == 31 {
			select {
			case <-c.stopCh:
				return false
			default:
			}
			*pending = c.resend(hdr, *pending)
		}
	}
	return true
}

// burstTS is the timestamp a burst's packet is sent with: its own, or moved
// up to 1 ms before the next frame (see ForwarderOptions).
func (c *childWriter) burstTS(b *burst, e *gopEntry) uint32 {
	const tick = 90 // 1 ms at 90 kHz, the clock of every video codec here
	if c.keepTS {
		return e.ts
	}
	return b.lastTS - uint32(b.lastFrame-e.frame)*tick
}

func (c *childWriter) stop() { c.stopOnce.Do(func() { close(c.stopCh) }) }

func (c *childWriter) stopped() bool {
	select {
	case <-c.stopCh:
		return true
	default:
		return false
	}
}

// isClosedErr reports errors that mean "the other end is gone", which end a
// read loop quietly.
func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe)
}
