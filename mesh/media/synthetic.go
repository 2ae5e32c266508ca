package media

import "github.com/pion/rtp"

// SyntheticVP8 writes a synthetic VP8 stream for benchmarks: 30 frames per
// second of Packets packets of len(Payload) bytes, a keyframe every 30
// frames. Its payload descriptors are valid (start bit, picture id, key
// bit), its contents are not a picture.
type SyntheticVP8 struct {
	Packet  rtp.Packet // header fields set by the caller (SSRC, payload type); numbering is SyntheticVP8's
	Payload []byte     // at least 4 bytes, reused for every packet
	Packets int        // packets per frame
}

// WriteFrame writes frame i, one packet at a time, through write; each
// packet's header extensions are cleared before write is called.
func (s *SyntheticVP8) WriteFrame(i int, write func(*rtp.Packet) error) error {
	p, b := &s.Packet, s.Payload
	for j := range s.Packets {
		b[0] = 0x80 // X
		if j == 0 {
			b[0] |= 0x10 // S: a frame's first packet
		}
		b[1], b[2] = 0x80, byte(i)&0x7F // I, picture id
		b[3] = 1                        // interframe
		if i%30 == 0 {
			b[3] = 0 // keyframe
		}
		p.SequenceNumber++
		p.Timestamp = uint32(i) * 3000
		p.Marker = j == s.Packets-1
		p.Payload = b
		p.Extensions, p.Extension = p.Extensions[:0], false
		if err := write(p); err != nil {
			return err
		}
	}
	return nil
}
