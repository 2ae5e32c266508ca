package peer

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// slotPayloadSize bounds one queued payload: an Ethernet MTU, more than any
// RTP payload that arrived over UDP after its headers.
const slotPayloadSize = 1500

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
	buf     [slotPayloadSize]byte
}

// childWriter is one child's bounded queue: a single-producer single-consumer
// ring of preallocated slots, filled by WriteRTP and drained by one writer
// goroutine that calls the binding's WriteStream.
type childWriter struct {
	ssrc  uint32
	pt    uint8
	extID uint8 // abs-capture-time id the child negotiated; 0: not sent
	ws    webrtc.TrackLocalWriter

	slots []slot
	head  atomic.Uint64 // next slot to write out; owned by the writer
	tail  atomic.Uint64 // next slot to fill; owned by the producer

	notify   chan struct{} // buffered(1): "the tail moved"
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
	dropped   atomic.Uint64
	writeErrs atomic.Uint64
}

func newChildWriter(ssrc uint32, pt uint8, ws webrtc.TrackLocalWriter, slots int) *childWriter {
	return &childWriter{
		ssrc: ssrc, pt: pt, ws: ws,
		slots:  make([]slot, slots),
		notify: make(chan struct{}, 1),
		stopCh: make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// push queues a packet; it reports false when the queue is full.
func (c *childWriter) push(seq uint16, ts uint32, marker bool, pad byte, payload, ext []byte) bool {
	t := c.tail.Load()
	if t-c.head.Load() >= uint64(len(c.slots)) {
		return false
	}
	s := &c.slots[t%uint64(len(c.slots))]
	s.seq, s.ts, s.marker, s.padding = seq, ts, marker, pad
	s.extLen = uint8(copy(s.ext[:], ext))
	s.n = copy(s.buf[:], payload)
	c.tail.Store(t + 1)
	c.wake()
	return true
}

// wake tells the writer there is something to send.
func (c *childWriter) wake() {
	select {
	case c.notify <- struct{}{}:
	default: // the writer has a wake-up pending already
	}
}

// queued returns the number of packets waiting.
func (c *childWriter) queued() int { return int(c.tail.Load() - c.head.Load()) }

// run waits until start says the child is attached, then drains the queue
// until stopped. It wakes once per burst, not once per packet: everything
// queued meanwhile is written in one pass.
func (c *childWriter) run(start func() bool) {
	defer close(c.done)
	if !start() {
		return
	}
	defer func() {
		if b := c.burst.Swap(nil); b != nil {
			b.g.refs.Add(-1)
		}
	}()
	hdr := rtp.Header{Version: 2, PayloadType: c.pt, SSRC: c.ssrc, Extensions: make([]rtp.Extension, 0, 1)}
	for {
		if b := c.burst.Swap(nil); b != nil {
			ok := c.sendBurst(&hdr, b)
			b.g.refs.Add(-1)
			if !ok {
				return
			}
		}
		h, t := c.head.Load(), c.tail.Load()
		for ; h != t; h++ {
			s := &c.slots[h%uint64(len(c.slots))]
			c.write(&hdr, s.seq, s.ts, s.marker, s.padding, s.ext[:s.extLen], s.buf[:s.n])
			c.head.Store(h + 1)
		}
		select {
		case <-c.notify:
		case <-c.stopCh:
			return
		}
	}
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

// sendBurst writes the cached GOP, paced; it reports false if stopped.
func (c *childWriter) sendBurst(hdr *rtp.Header, b *burst) bool {
	const tick = 90 // 1 ms at 90 kHz, the clock of every video codec here
	pc := pacer{rate: c.burstRate, start: time.Now()}
	for i := range b.upto {
		e := &b.g.entries[i]
		ts := e.ts
		if !c.keepTS {
			ts = b.lastTS - uint32(b.lastFrame-e.frame)*tick
		}
		c.write(hdr, e.seq, ts, e.marker, e.padding, e.ext[:e.extLen], b.g.arena[e.off:e.off+e.n])
		pc.wait(int(e.n))
		if i%32 == 31 {
			select {
			case <-c.stopCh:
				return false
			default:
			}
		}
	}
	return true
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

// downTrack is the webrtc.TrackLocal a Downstream adds for one Forwarder: one
// per child, so each Bind creates that child's queue and writer.
type downTrack struct {
	fwd *Forwarder
	// ready is closed when the connection is up (nil: it is already). Until
	// then pion drops whatever is written (its SRTP writer returns 0, nil
	// before DTLS completes), so the child joins the Forwarder, and is handed
	// the cached GOP, only then. gone is closed if the connection ends first.
	ready, gone <-chan struct{}

	mu     sync.Mutex
	writer *childWriter
	closed bool
}

var _ webrtc.TrackLocal = (*downTrack)(nil)

func newDownTrack(f *Forwarder, ready, gone <-chan struct{}) *downTrack {
	return &downTrack{fwd: f, ready: ready, gone: gone}
}

// Bind records the negotiated SSRC, payload type and WriteStream and starts
// the child's writer.
func (d *downTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	codec := bestCodec(d.fwd.codec, ctx.CodecParameters())
	if codec == nil {
		return webrtc.RTPCodecParameters{}, ErrUnsupportedCodec
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return webrtc.RTPCodecParameters{}, ErrClosed
	}
	if d.writer != nil {
		return webrtc.RTPCodecParameters{}, ErrAlreadyBound
	}
	f := d.fwd
	if f.isClosed() {
		return webrtc.RTPCodecParameters{}, ErrClosed
	}
	w := newChildWriter(uint32(ctx.SSRC()), uint8(codec.PayloadType), ctx.WriteStream(), f.slots)
	w.extID = captureExtID(ctx.HeaderExtensions())
	w.burstRate, w.keepTS = float64(f.opts.BurstRate)/8, f.opts.KeepBurstTimestamps
	d.writer = w
	// pion binds when the answer is applied, before ICE and DTLS: ask for a
	// keyframe now if the cache cannot serve this child, so it is on its way
	// while the connection comes up.
	if f.isKeyframe != nil && !f.gopReady.Load() {
		f.requestKeyframe()
	}
	if d.ready == nil {
		if err := f.attach(w); err != nil {
			d.writer = nil
			return webrtc.RTPCodecParameters{}, err
		}
		go w.run(func() bool { return true })
		return *codec, nil
	}
	ready, gone := d.ready, d.gone
	go w.run(func() bool {
		select {
		case <-ready:
		case <-gone:
			return false
		case <-w.stopCh:
			return false
		}
		return f.attach(w) == nil
	})
	return *codec, nil
}

// Unbind detaches the child from the Forwarder and stops its writer; close
// waits for it.
func (d *downTrack) Unbind(webrtc.TrackLocalContext) error {
	d.mu.Lock()
	w := d.writer
	d.mu.Unlock()
	if w != nil {
		d.fwd.detach(w)
	}
	return nil
}

// close detaches for good and waits for the writer goroutine.
func (d *downTrack) close() {
	d.mu.Lock()
	d.closed = true
	w := d.writer
	d.mu.Unlock()
	if w != nil {
		d.fwd.detach(w)
		<-w.done
	}
}

// ID is the protocol track id, which the child maps back to protocol.Track.
func (d *downTrack) ID() string { return d.fwd.track.ID }

// RID is empty: Canopy does not simulcast.
func (d *downTrack) RID() string { return "" }

// StreamID groups a stream's tracks into one MediaStream.
func (d *downTrack) StreamID() string { return StreamID }

// Kind is the track's media kind.
func (d *downTrack) Kind() webrtc.RTPCodecType { return d.fwd.kind }
