package media

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
)

const (
	// collectWait is how long a frame with a hole waits for the missing
	// packet (a NACK repair from a WHIP publisher takes one round trip,
	// tens of ms) before it is given up: frames after it wait too, since
	// frames leave in order.
	collectWait = 200 * time.Millisecond
	// collectMax bounds the packets held: a second of 5 Mbit/s video.
	collectMax = 512
)

// Collected is one frame a FrameCollector rebuilt.
type Collected struct {
	Data      []byte // the frame as a decoder takes it (no RTP payload descriptor)
	Timestamp uint32
	First     *rtp.Packet // the frame's first packet (its header extensions)
}

// FrameCollector rebuilds the frames of one live RTP stream in sequence
// order, each as soon as its last packet is in, for a source that signs each
// frame before sending it on (unlike Assembler, it does not wait for the
// next frame's first packet: no frame of added latency). A frame with a
// hole waits up to collectWait for the packet, then is dropped. It is not
// safe for concurrent use.
type FrameCollector struct {
	codec   Codec
	audio   bool
	newDep  func() rtp.Depacketizer
	pending map[uint16]*rtp.Packet
	next    uint16
	started bool
	holeAt  time.Time
	dropped uint64
	// After a hole is given up the packets behind it may be the rest of
	// the broken frame, and an H264 slice is a partition head like a
	// frame's first NAL: until a frame that is surely new, nothing goes
	// out. broken is the timestamp of the broken frame, when its head was
	// in (brokenKnown); without it the next frame whole is given up too.
	resync      bool
	broken      uint32
	brokenKnown bool
}

// NewFrameCollector makes a collector for VP8, H264 or Opus.
func NewFrameCollector(c Codec) (*FrameCollector, error) {
	f := &FrameCollector{codec: c, pending: make(map[uint16]*rtp.Packet)}
	switch strings.ToLower(c.MimeType) {
	case strings.ToLower(VP8.MimeType):
		f.newDep = func() rtp.Depacketizer { return &codecs.VP8Packet{} }
	case strings.ToLower(H264.MimeType):
		f.newDep = func() rtp.Depacketizer { return &codecs.H264Packet{} }
	case strings.ToLower(Opus.MimeType):
		f.newDep, f.audio = func() rtp.Depacketizer { return &codecs.OpusPacket{} }, true
	default:
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedCodec, c.MimeType)
	}
	return f, nil
}

// Dropped counts packets given up: late, in frames with holes, or of frames
// whose start was lost.
func (f *FrameCollector) Dropped() uint64 { return f.dropped }

// Push takes one packet (copied) and returns the frames it completes, in order.
func (f *FrameCollector) Push(p *rtp.Packet, now time.Time) []Collected {
	if !f.started {
		f.started, f.next = true, p.SequenceNumber
	}
	if int16(p.SequenceNumber-f.next) < 0 || f.pending[p.SequenceNumber] != nil {
		f.dropped++ // too late (its frame left or was given up), or a duplicate
		return nil
	}
	f.pending[p.SequenceNumber] = p.Clone()
	var out []Collected
	for {
		fr, ok := f.take()
		if ok {
			if fr.Data != nil {
				out = append(out, fr)
			}
			continue
		}
		if len(f.pending) == 0 {
			f.holeAt = time.Time{}
			return out
		}
		// f.next is missing and later packets wait behind it.
		if f.holeAt.IsZero() {
			f.holeAt = now
		}
		if now.Sub(f.holeAt) < collectWait && len(f.pending) < collectMax {
			return out
		}
		f.skip()
	}
}

// take emits the frame starting at f.next if all its packets are in. A
// frame that does not start with a frame's first packet (its start was
// lost) is consumed and dropped (ok with nil Data).
func (f *FrameCollector) take() (Collected, bool) {
	end, n := f.next, 0
	for {
		p := f.pending[end]
		if p == nil {
			return Collected{}, false
		}
		n++
		if f.audio || p.Marker {
			break
		}
		if n > collectMax {
			return Collected{}, false
		}
		end++
	}
	first := f.pending[f.next]
	dep := f.newDep()
	head := dep.IsPartitionHead(first.Payload)
	if f.resync {
		// Past this frame's marker the next packet starts a frame.
		f.resync = false
		if !f.brokenKnown || first.Timestamp == f.broken {
			head = false
		}
	}
	var data []byte
	for s := f.next; ; s++ {
		p := f.pending[s]
		delete(f.pending, s)
		if head {
			b, err := dep.Unmarshal(p.Payload)
			if err != nil {
				head = false
			}
			data = append(data, b...)
		}
		if s == end {
			break
		}
	}
	f.next = end + 1
	f.holeAt = time.Time{}
	if !head || len(data) == 0 {
		f.dropped += uint64(n)
		return Collected{}, true
	}
	return Collected{Data: data, Timestamp: first.Timestamp, First: first}, true
}

// skip gives up the first missing packet at or after f.next: the packets
// before it (the head of a broken frame) are dropped, and the next frame
// taken starts at the oldest packet after it; take drops that too if it is
// not a frame start, or may be the broken frame's tail (resync).
func (f *FrameCollector) skip() {
	f.resync, f.brokenKnown = !f.audio, false
	for p := f.pending[f.next]; p != nil; p = f.pending[f.next] {
		f.broken, f.brokenKnown = p.Timestamp, true
		delete(f.pending, f.next)
		f.next++
		f.dropped++
	}
	oldest, found := f.next, false
	for s := range f.pending {
		if !found || int16(s-oldest) < 0 {
			oldest, found = s, true
		}
	}
	f.next, f.holeAt = oldest, time.Time{}
}

// Repacketizer packetizes frames for one RTP stream with timestamps the
// caller gives (a live source's own), a sequence numbering of its own and
// a fixed SSRC, the last packet of each frame marked. For VP8 a frame's
// last 75 bytes stay in its marker packet (see tailPayloader).
type Repacketizer struct {
	codec Codec
	pay   rtp.Payloader
	ssrc  uint32
	seq   uint16
}

// NewRepacketizer makes a repacketizer for VP8, H264 or Opus.
func NewRepacketizer(c Codec, ssrc uint32) (*Repacketizer, error) {
	p, err := NewPacketizer(c)
	if err != nil {
		return nil, err
	}
	return &Repacketizer{codec: c, pay: payloaderOf(p), ssrc: ssrc, seq: uint16(rand.Uint32())}, nil
}

// Packetize splits one frame into packets stamped with ts.
func (r *Repacketizer) Packetize(frame []byte, ts uint32) []*rtp.Packet {
	payloads := r.pay.Payload(MTU-12, frame)
	out := make([]*rtp.Packet, len(payloads))
	for i, pl := range payloads {
		out[i] = &rtp.Packet{
			Header: rtp.Header{
				Version: 2, PayloadType: r.codec.PayloadType, SequenceNumber: r.seq,
				Timestamp: ts, SSRC: r.ssrc, Marker: i == len(payloads)-1,
			},
			Payload: pl,
		}
		r.seq++
	}
	return out
}
