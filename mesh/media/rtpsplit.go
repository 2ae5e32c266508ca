package media

import (
	"strings"

	"github.com/pion/rtp"
)

// maxIngestPayload is the largest payload an ingested packet may carry: the
// MTU less the 12-byte RTP header, what ffmpeg's -pkt_size 1200 and
// GStreamer's mtu=1200 produce and what the Packetizer makes.
const maxIngestPayload = MTU - 12

// splitter cuts oversized RTP payloads to maxIngestPayload without
// re-encoding: an H264 NAL unit into FU-A fragments (RFC 6184 §5.8), an FU-A
// fragment into smaller ones, a STAP-A into its NAL units, a VP8 partition
// into packets that repeat its payload descriptor with S=0 (RFC 7741 §4.4).
// Other payloads (Opus packets are far below the MTU) pass as they are.
type splitter struct {
	mime  string
	pkts  []rtp.Packet
	bufs  [][]byte
	out   []*rtp.Packet
	pay   [][]byte
	whole [1]*rtp.Packet
}

// packets returns p as one or more packets, all with p's header but for the
// marker bit, which only the last keeps; sequence numbers are the caller's
// to set. A late packet is never split: the numbers after it are taken.
func (s *splitter) packets(p *rtp.Packet, late bool) []*rtp.Packet {
	s.whole[0] = p
	if len(p.Payload) <= maxIngestPayload || late {
		return s.whole[:]
	}
	s.pay = s.pay[:0]
	switch {
	case strings.EqualFold(s.mime, H264.MimeType):
		s.splitH264(p.Payload)
	case strings.EqualFold(s.mime, VP8.MimeType):
		s.splitVP8(p.Payload)
	}
	if len(s.pay) < 2 {
		return s.whole[:]
	}
	for len(s.pkts) < len(s.pay) {
		s.pkts = append(s.pkts, rtp.Packet{})
	}
	s.out = s.out[:0]
	for i, b := range s.pay {
		q := &s.pkts[i]
		q.Header = p.Header
		q.Marker = p.Marker && i == len(s.pay)-1
		q.Payload = b
		s.out = append(s.out, q)
	}
	return s.out
}

// piece returns a reusable buffer for the i-th payload being built.
func (s *splitter) piece(n int) []byte {
	i := len(s.pay)
	for len(s.bufs) <= i {
		s.bufs = append(s.bufs, make([]byte, 0, maxIngestPayload))
	}
	b := s.bufs[i][:0]
	if cap(b) < n {
		b = make([]byte, 0, n)
		s.bufs[i] = b
	}
	return b
}

func (s *splitter) splitH264(p []byte) {
	switch p[0] & nalTypeMask {
	case nalStapA:
		for i := 1; i+2 <= len(p); {
			size := int(p[i])<<8 | int(p[i+1])
			i += 2
			if size == 0 || i+size > len(p) {
				s.pay = s.pay[:0] // malformed: pass the packet on whole
				return
			}
			s.nal(p[i : i+size])
			i += size
		}
	case nalFuA:
		if len(p) < 3 {
			return
		}
		s.fragments(p[0], p[1]&0x1f, p[1]&0x80 != 0, p[1]&0x40 != 0, p[2:])
	case 25, 26, 27, 29: // STAP-B, MTAP, FU-B: not in packetization-mode 1
	default:
		s.nal(p)
	}
}

// nal adds one NAL unit as a single-NAL packet or as FU-A fragments.
func (s *splitter) nal(n []byte) {
	if len(n) <= maxIngestPayload {
		s.pay = append(s.pay, append(s.piece(len(n)), n...))
		return
	}
	s.fragments(n[0]&0xe0|nalFuA, n[0]&nalTypeMask, true, true, n[1:])
}

// fragments adds FU-A fragments of data with the given FU indicator and NAL
// type; start and end say whether data begins and ends its NAL unit.
func (s *splitter) fragments(indicator, typ byte, start, end bool, data []byte) {
	const room = maxIngestPayload - 2
	for len(data) > 0 {
		n := min(len(data), room)
		hdr := typ
		if start {
			hdr |= 0x80
		}
		if end && n == len(data) {
			hdr |= 0x40
		}
		b := append(s.piece(n+2), indicator, hdr)
		s.pay = append(s.pay, append(b, data[:n]...))
		data, start = data[n:], false
	}
}

func (s *splitter) splitVP8(p []byte) {
	d, ok := vp8DescriptorLen(p)
	if !ok || d >= len(p) {
		return
	}
	desc, data := p[:d], p[d:]
	room := maxIngestPayload - d
	for first := true; len(data) > 0; first = false {
		n := min(len(data), room)
		b := append(s.piece(d+n), desc...)
		if !first {
			b[0] &^= 0x10 // S: only the first packet starts the partition
		}
		s.pay = append(s.pay, append(b, data[:n]...))
		data = data[n:]
	}
}

// vp8DescriptorLen returns the length of a VP8 payload descriptor (RFC 7741
// §4.2).
func vp8DescriptorLen(p []byte) (int, bool) {
	if len(p) < 1 {
		return 0, false
	}
	i := 1
	if p[0]&0x80 != 0 { // X
		if len(p) < 2 {
			return 0, false
		}
		ext := p[1]
		i = 2
		if ext&0x80 != 0 { // I: 7 or 15-bit picture ID
			if len(p) <= i {
				return 0, false
			}
			if p[i]&0x80 != 0 {
				i++
			}
			i++
		}
		if ext&0x40 != 0 { // L
			i++
		}
		if ext&0x30 != 0 { // T or K
			i++
		}
	}
	return i, i <= len(p)
}
