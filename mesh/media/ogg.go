package media

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

const (
	oggPageHeaderLen = 27
	oggContinued     = 0x01 // header_type: first packet continues from the previous page
)

// oggReader yields the Opus packets of an Ogg file. It parses pages itself
// because pion's oggreader concatenates a page's segments, losing the packet
// boundaries when a page carries several packets (ffmpeg packs ~1 s per page).
type oggReader struct {
	rs      io.ReadSeeker
	br      *bufio.Reader
	serial  uint32 // the logical stream we play; others (chained, multiplexed) are skipped
	packets [][]byte
	partial []byte // a packet that continues on the next page
	headers int    // header packets (OpusHead, OpusTags) still to skip in this pass
	loop    looper
	hdr     [oggPageHeaderLen]byte
	lacing  [255]byte
}

// NewOggReader reads the Opus packets of an Ogg file, looping at the end; each packet's duration comes from its TOC byte.
func NewOggReader(rs io.ReadSeeker) (FrameReader, error) {
	r := &oggReader{rs: rs, br: bufio.NewReaderSize(rs, 32<<10)}
	if err := r.rewind(); err != nil {
		return nil, err
	}
	// Read the identification header now so a non-Opus file fails at open.
	if err := r.fill(); err != nil {
		return nil, err
	}
	r.loop = looper{next: r.next, rewind: r.rewind}
	return r, nil
}

func (r *oggReader) Codec() Codec { return Opus }

func (r *oggReader) ReadFrame() (Frame, error) { return r.loop.read() }

func (r *oggReader) rewind() error {
	if _, err := r.rs.Seek(0, io.SeekStart); err != nil {
		return err
	}
	r.br.Reset(r.rs)
	r.packets, r.partial, r.headers = r.packets[:0], nil, 2
	return nil
}

func (r *oggReader) next() (Frame, error) {
	for {
		if err := r.fill(); err != nil {
			return Frame{}, err
		}
		pkt := r.packets[0]
		r.packets = r.packets[1:]
		if r.headers > 0 {
			// RFC 7845 §5: OpusHead, then OpusTags, then audio. Skipped on
			// every pass; the decoder configured itself from the SDP.
			r.headers--
			continue
		}
		d, err := opusPacketDuration(pkt)
		if err != nil {
			return Frame{}, err
		}
		// Every Opus packet decodes on its own, so each is a "keyframe" for
		// code that waits for one before forwarding.
		return Frame{Data: pkt, Duration: d, Keyframe: true}, nil
	}
}

// fill reads pages until at least one packet is queued, checking the header
// packets as they go by.
func (r *oggReader) fill() error {
	for len(r.packets) == 0 {
		first := r.headers == 2 && r.partial == nil
		if err := r.readPage(first); err != nil {
			return err
		}
		if r.headers == 2 && len(r.packets) > 0 {
			if p := r.packets[0]; len(p) < 19 || !bytes.HasPrefix(p, []byte("OpusHead")) {
				return fmt.Errorf("%w: Ogg stream is not Opus", ErrUnsupportedCodec)
			}
		}
	}
	return nil
}

func (r *oggReader) readPage(first bool) error {
	n, err := io.ReadFull(r.br, r.hdr[:])
	if err == io.EOF {
		if r.partial != nil {
			return fmt.Errorf("%w: Ogg packet cut at end of file", ErrTruncated)
		}
		return io.EOF
	}
	if err != nil {
		return fmt.Errorf("%w: Ogg page header (%d bytes): %v", ErrTruncated, n, err)
	}
	h := r.hdr[:]
	if string(h[0:4]) != "OggS" || h[4] != 0 {
		return fmt.Errorf("%w: bad Ogg page signature", ErrInvalid)
	}
	serial := binary.LittleEndian.Uint32(h[14:18])
	lacing := r.lacing[:h[26]]
	if _, err := io.ReadFull(r.br, lacing); err != nil {
		return fmt.Errorf("%w: Ogg segment table: %v", ErrTruncated, err)
	}
	size := 0
	for _, l := range lacing {
		size += int(l)
	}
	body := make([]byte, size) // packets alias it, so one allocation per page
	if _, err := io.ReadFull(r.br, body); err != nil {
		return fmt.Errorf("%w: Ogg page body: %v", ErrTruncated, err)
	}
	if got, want := oggCRC(h, lacing, body), binary.LittleEndian.Uint32(h[22:26]); got != want {
		return fmt.Errorf("%w: Ogg page checksum %08x, want %08x", ErrInvalid, got, want)
	}
	if first {
		r.serial = serial
	} else if serial != r.serial {
		return nil
	}
	if continued := h[5]&oggContinued != 0; continued != (r.partial != nil) {
		return fmt.Errorf("%w: Ogg page continuation flag disagrees with the previous page", ErrInvalid)
	}
	// A packet is the run of segments up to one shorter than 255 bytes.
	off, start := 0, 0
	for _, l := range lacing {
		off += int(l)
		if l == 255 {
			continue
		}
		pkt := body[start:off]
		if r.partial != nil {
			pkt = append(r.partial, pkt...)
			r.partial = nil
		}
		r.packets = append(r.packets, pkt)
		start = off
	}
	if start < off {
		r.partial = append(r.partial, body[start:off]...)
	}
	return nil
}

// opusPacketDuration reads the TOC byte (RFC 6716 §3.1). It is exact per
// packet, unlike granule positions, which only mark page ends.
func opusPacketDuration(pkt []byte) (time.Duration, error) {
	if len(pkt) == 0 {
		return 0, fmt.Errorf("%w: empty Opus packet", ErrInvalid)
	}
	toc := pkt[0]
	config := toc >> 3
	var frame time.Duration
	switch {
	case config < 12: // SILK: 10, 20, 40, 60 ms
		frame = []time.Duration{10, 20, 40, 60}[config%4] * time.Millisecond
	case config < 16: // hybrid: 10, 20 ms
		frame = []time.Duration{10, 20}[config%2] * time.Millisecond
	default: // CELT: 2.5, 5, 10, 20 ms
		frame = []time.Duration{2500, 5000, 10000, 20000}[config%4] * time.Microsecond
	}
	var count int
	switch toc & 0x03 {
	case 0:
		count = 1
	case 1, 2:
		count = 2
	default:
		if len(pkt) < 2 {
			return 0, fmt.Errorf("%w: Opus code-3 packet without frame count", ErrInvalid)
		}
		count = int(pkt[1] & 0x3f)
	}
	d := frame * time.Duration(count)
	if d == 0 || d > 120*time.Millisecond {
		return 0, fmt.Errorf("%w: Opus packet of %v", ErrInvalid, d)
	}
	return d, nil
}

// oggCRCTable is the Ogg CRC-32 (polynomial 0x04c11db7, unreflected, zero
// init) — not hash/crc32's IEEE variant, which is reflected.
var oggCRCTable = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ 0x04c11db7
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

func oggCRC(header, lacing, body []byte) uint32 {
	var crc uint32
	add := func(b byte) { crc = crc<<8 ^ oggCRCTable[byte(crc>>24)^b] }
	for i, b := range header {
		if i >= 22 && i < 26 { // the checksum field counts as zero
			b = 0
		}
		add(b)
	}
	for _, b := range lacing {
		add(b)
	}
	for _, b := range body {
		add(b)
	}
	return crc
}
