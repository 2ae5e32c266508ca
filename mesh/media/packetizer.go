package media

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
)

// MTU is the RTP packet size limit: small enough to pass a TURN/VPN hop without
// IP fragmentation, as browsers do.
const MTU = 1200

// Packetizer turns frames into RTP packets of one stream (one SSRC). Sequence
// numbers and timestamps only ever move forward by what the frames say, so a
// looping reader yields one continuous stream. It is not safe for concurrent use.
type Packetizer struct {
	codec Codec
	ssrc  uint32
	pay   rtp.Payloader
	rtp   rtp.Packetizer
	// rem carries the sub-tick remainder (in ns×clock) from frame to frame
	// (error diffusion), so the RTP clock tracks the sum of frame durations
	// exactly instead of losing a fraction of a tick per frame. Starting it at
	// half a tick rounds to nearest: 33333333 ns frames (1/30 s truncated to
	// ns) step 3000 ticks, with one 2999 every ~16 000 frames for the lost ns.
	rem uint64
}

// NewPacketizer makes a packetizer for VP8, H264 or Opus with a random SSRC, sequence start and timestamp start.
func NewPacketizer(c Codec) (*Packetizer, error) {
	var payloader rtp.Payloader
	switch strings.ToLower(c.MimeType) {
	case strings.ToLower(VP8.MimeType):
		payloader = &tailPayloader{Payloader: &codecs.VP8Payloader{EnablePictureID: true}, header: vp8DescriptorSize}
	case strings.ToLower(H264.MimeType):
		payloader = &codecs.H264Payloader{}
	case strings.ToLower(Opus.MimeType):
		payloader = &codecs.OpusPayloader{}
	default:
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedCodec, c.MimeType)
	}
	if c.ClockRate == 0 {
		return nil, fmt.Errorf("media: %s with clock rate 0", c.MimeType)
	}
	ssrc := rand.Uint32()
	return &Packetizer{
		codec: c,
		ssrc:  ssrc,
		rem:   uint64(time.Second) / 2,
		pay:   payloader,
		rtp:   rtp.NewPacketizer(MTU, c.PayloadType, ssrc, payloader, rtp.NewRandomSequencer(), c.ClockRate),
	}, nil
}

// SSRC returns the stream's synchronization source.
func (p *Packetizer) SSRC() uint32 { return p.ssrc }

// Codec returns the codec the packets carry.
func (p *Packetizer) Codec() Codec { return p.codec }

// Packetize splits a frame into packets stamped with the frame's media time
// (moved on by its Gap first) and advances the clock by its duration; an
// empty frame yields no packets but still advances time.
func (p *Packetizer) Packetize(f Frame) []*rtp.Packet {
	if f.Gap > 0 {
		p.rtp.SkipSamples(p.ticks(f.Gap))
	}
	return p.rtp.Packetize(f.Data, p.ticks(f.Duration))
}

func (p *Packetizer) ticks(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	// Readers never make frames over 10 s; the clamp keeps d×clock far from
	// overflowing uint64 (57 h at 90 kHz) for hand-made ones.
	d = min(d, time.Hour)
	n := uint64(d)*uint64(p.codec.ClockRate) + p.rem
	p.rem = n % uint64(time.Second)
	return uint32(n / uint64(time.Second))
}

// vp8DescriptorSize is the payload descriptor pion's VP8 payloader writes
// with EnablePictureID: 1 byte, the X byte, a 15-bit picture id.
const vp8DescriptorSize = 4

// keepTail is how many bytes of a frame's end stay together in its last
// (marker) packet: a frame signature's trailer (framesig.TrailerSize) and
// one byte of media, so a server node can strip the trailer from one packet
// without assembling the frame, and leave no packet without media.
const keepTail = 75 + 1

// tailPayloader moves bytes from a frame's second-to-last packet into its
// last when the last holds fewer than keepTail media bytes: pion splits a
// frame into full packets and a remainder that may be a few bytes.
type tailPayloader struct {
	rtp.Payloader
	header int // payload descriptor bytes at the start of every packet
}

func (t *tailPayloader) Payload(mtu uint16, payload []byte) [][]byte {
	out := t.Payloader.Payload(mtu, payload)
	if len(out) < 2 {
		return out
	}
	last, prev := out[len(out)-1], out[len(out)-2]
	short := keepTail - (len(last) - t.header)
	if short <= 0 || len(prev)-t.header <= short {
		return out
	}
	moved := make([]byte, 0, len(last)+short)
	moved = append(moved, last[:t.header]...)
	moved = append(moved, prev[len(prev)-short:]...)
	moved = append(moved, last[t.header:]...)
	out[len(out)-2], out[len(out)-1] = prev[:len(prev)-short], moved
	return out
}

// payloaderOf returns the codec payloader a Packetizer uses (VP8 keeping
// its tail in the marker packet).
func payloaderOf(p *Packetizer) rtp.Payloader { return p.pay }
