package media

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"
)

const (
	// How many packets the assembler waits for a missing one before it gives
	// the frame up. Video must outwait a NACK repair inside a relay's GOP
	// burst, which runs at ~5200 packets/s: the repair comes 500-1000
	// packets later, and 256 gave up on the frame first (issue 12); at a
	// live rate maxDelay ends the wait sooner. Audio packets are whole frames.
	videoMaxLate = 4096
	audioMaxLate = 32
	// maxDelay bounds the wait in time too, so a low-rate stream with a hole
	// does not stall for hundreds of packets' worth of seconds.
	maxDelay = 500 * time.Millisecond
)

// AssemblerStats counts what an Assembler has seen.
type AssemblerStats struct {
	Packets uint64 // packets pushed, including duplicates
	Frames  uint64 // complete, decodable frames delivered
	// Undecodable counts complete frames not delivered: they do not parse,
	// or came before the first key frame (see Decoder).
	Undecodable uint64
	Lost        uint64 // packets never received: expected (from sequence numbers) minus received
	Dropped     uint64 // packets discarded because their frame could not be completed in time
}

// Assembler rebuilds the frames of one RTP track (one SSRC) with pion's
// samplebuilder, reordering within a window and dropping frames with holes
// and frames that would not decode (see Decoder).
// Push and Flush must be called from one goroutine; Stats may be read from any.
type Assembler struct {
	codec   Codec
	sb      *samplebuilder.SampleBuilder
	dec     *Decoder
	onFrame func(Frame)

	started  bool
	base     uint32 // first sequence number seen
	highest  uint32 // highest sequence number seen, extended with wrap-arounds
	haveTS   bool
	lastTS   uint32 // RTP timestamp of the last frame delivered
	received atomic.Uint64
	frames   atomic.Uint64
	undec    atomic.Uint64
	lost     atomic.Uint64
	dropped  atomic.Uint64
}

// NewAssembler makes an assembler for codec c that calls onFrame with each complete frame, in order.
func NewAssembler(c Codec, onFrame func(Frame)) (*Assembler, error) {
	var (
		depack  rtp.Depacketizer
		maxLate uint16 = videoMaxLate
	)
	switch strings.ToLower(c.MimeType) {
	case strings.ToLower(VP8.MimeType):
		depack = &codecs.VP8Packet{}
	case strings.ToLower(H264.MimeType):
		depack = &codecs.H264Packet{}
	case strings.ToLower(Opus.MimeType):
		depack, maxLate = &codecs.OpusPacket{}, audioMaxLate
	default:
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedCodec, c.MimeType)
	}
	if c.ClockRate == 0 {
		return nil, fmt.Errorf("media: %s with clock rate 0", c.MimeType)
	}
	return &Assembler{
		codec:   c,
		dec:     NewDecoder(c.MimeType),
		onFrame: onFrame,
		sb:      samplebuilder.New(maxLate, depack, c.ClockRate, samplebuilder.WithMaxTimeDelay(maxDelay)),
	}, nil
}

// Push adds one packet and delivers any frames it completes. The packet is
// copied, because the samplebuilder keeps packets until their frame is done
// and callers usually reuse their read buffer.
func (a *Assembler) Push(pkt *rtp.Packet) {
	a.count(pkt.SequenceNumber)
	c := pkt.Clone()
	a.sb.Push(c)
	a.drain()
}

// Flush delivers what is still buffered: the samplebuilder holds the latest
// frame until a packet of the next one arrives, so call this at end of stream.
func (a *Assembler) Flush() {
	a.sb.Flush()
	a.drain()
}

// Stats returns the counters so far.
func (a *Assembler) Stats() AssemblerStats {
	return AssemblerStats{
		Packets:     a.received.Load(),
		Frames:      a.frames.Load(),
		Undecodable: a.undec.Load(),
		Lost:        a.lost.Load(),
		Dropped:     a.dropped.Load(),
	}
}

func (a *Assembler) drain() {
	for s := a.sb.Pop(); s != nil; s = a.sb.Pop() {
		a.dropped.Add(uint64(s.PrevDroppedPackets))
		// samplebuilder (pion/webrtc v4.2.26) releases consumed packets
		// lazily, and Flush can rebuild the tail of a frame it already
		// returned into a second, partial sample (H264 slices are each a
		// partition head). A frame is one timestamp, so anything not newer
		// than the last delivered frame is such a leftover.
		if a.haveTS && int32(s.PacketTimestamp-a.lastTS) <= 0 {
			continue
		}
		a.haveTS, a.lastTS = true, s.PacketTimestamp
		if !a.dec.Decodable(s.Data) {
			// Noise from a hostile parent, or what a decoder could not
			// start with: not a frame anyone saw.
			a.undec.Add(1)
			continue
		}
		a.frames.Add(1)
		if a.onFrame != nil {
			a.onFrame(Frame{Data: s.Data, Duration: s.Duration, Keyframe: frameIsKeyframe(a.codec.MimeType, s.Data), Timestamp: s.PacketTimestamp})
		}
	}
}

// count keeps RFC 3550 §A.3 loss accounting: expected = extended highest −
// base + 1, lost = expected − received. A late packet filling a hole lowers
// the count again; duplicates can hide loss, as in RTCP receiver reports.
func (a *Assembler) count(seq uint16) {
	n := a.received.Add(1)
	if !a.started {
		a.started = true
		a.base, a.highest = uint32(seq), uint32(seq)
		return
	}
	if d := int16(seq - uint16(a.highest)); d > 0 {
		a.highest += uint32(d)
	}
	expected := uint64(a.highest-a.base) + 1
	if expected > n {
		a.lost.Store(expected - n)
	} else {
		a.lost.Store(0)
	}
}
