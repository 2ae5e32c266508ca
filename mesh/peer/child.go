package peer

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// slotPayloadSize bounds one queued payload: an Ethernet MTU, more than any
// RTP payload that arrived over UDP after its headers.
const slotPayloadSize = 1500

// slot is one queued packet: the header fields the child keeps (SSRC and
// payload type are the binding's, extensions are not forwarded because their
// ids were negotiated on the upstream hop) and a copy of the payload.
type slot struct {
	seq     uint16
	ts      uint32
	marker  bool
	padding byte
	n       int
	buf     [slotPayloadSize]byte
}

// childWriter is one child's bounded queue: a single-producer single-consumer
// ring of preallocated slots, filled by WriteRTP and drained by one writer
// goroutine that calls the binding's WriteStream.
type childWriter struct {
	ssrc uint32
	pt   uint8
	ws   webrtc.TrackLocalWriter

	slots []slot
	head  atomic.Uint64 // next slot to write out; owned by the writer
	tail  atomic.Uint64 // next slot to fill; owned by the producer

	notify   chan struct{} // buffered(1): "the tail moved"
	stopCh   chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	waitKeyframe bool // owned by the producer (the WriteRTP goroutine)

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
func (c *childWriter) push(seq uint16, ts uint32, marker bool, pad byte, payload []byte) bool {
	t := c.tail.Load()
	if t-c.head.Load() >= uint64(len(c.slots)) {
		return false
	}
	s := &c.slots[t%uint64(len(c.slots))]
	s.seq, s.ts, s.marker, s.padding = seq, ts, marker, pad
	s.n = copy(s.buf[:], payload)
	c.tail.Store(t + 1)
	select {
	case c.notify <- struct{}{}:
	default: // the writer has a wake-up pending already
	}
	return true
}

// queued returns the number of packets waiting.
func (c *childWriter) queued() int { return int(c.tail.Load() - c.head.Load()) }

// run drains the queue until stopped. It wakes once per burst, not once per
// packet: everything queued meanwhile is written in one pass.
func (c *childWriter) run() {
	defer close(c.done)
	hdr := rtp.Header{Version: 2, PayloadType: c.pt, SSRC: c.ssrc}
	for {
		h, t := c.head.Load(), c.tail.Load()
		for ; h != t; h++ {
			s := &c.slots[h%uint64(len(c.slots))]
			hdr.SequenceNumber, hdr.Timestamp, hdr.Marker = s.seq, s.ts, s.marker
			hdr.Padding, hdr.PaddingSize = s.padding != 0, s.padding
			if _, err := c.ws.WriteRTP(&hdr, s.buf[:s.n]); err != nil {
				// Closed pipes mean the PeerConnection is going away; Unbind
				// stops this loop shortly. Count, do not log per packet.
				c.writeErrs.Add(1)
			} else {
				c.sent.Add(1)
			}
			c.head.Store(h + 1)
		}
		select {
		case <-c.notify:
		case <-c.stopCh:
			return
		}
	}
}

func (c *childWriter) stop() { c.stopOnce.Do(func() { close(c.stopCh) }) }

// isClosedErr reports errors that mean "the other end is gone", which end a
// read loop quietly.
func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe)
}

// downTrack is the webrtc.TrackLocal a Downstream adds for one Forwarder: one
// per child, so each Bind creates that child's queue and writer.
type downTrack struct {
	fwd *Forwarder

	mu     sync.Mutex
	writer *childWriter
	closed bool
}

var _ webrtc.TrackLocal = (*downTrack)(nil)

func newDownTrack(f *Forwarder) *downTrack { return &downTrack{fwd: f} }

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
	w := newChildWriter(uint32(ctx.SSRC()), uint8(codec.PayloadType), ctx.WriteStream(), d.fwd.slots)
	// A new video child has nothing to decode until a keyframe: skip the
	// deltas and ask for one so it starts fast.
	w.waitKeyframe = d.fwd.isKeyframe != nil
	if err := d.fwd.attach(w); err != nil {
		return webrtc.RTPCodecParameters{}, err
	}
	d.writer = w
	go w.run()
	if w.waitKeyframe {
		d.fwd.requestKeyframe()
	}
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
