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
		payloader = &codecs.VP8Payloader{EnablePictureID: true}
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
