package framesig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
)

// The H264 form: one SEI NAL (type 6) right before the access unit's first
// slice,
//
//	0x06 | EP( 0x05 (user_data_unregistered) 0x58 (88 bytes)
//	           uuid "canopy.framesig1" counter (8) signature (64) 0x80 )
//
// with emulation prevention (EP) over everything after the NAL header.
// The canonical form hashed is every other NAL of the access unit in order,
// as u32 BE length || NAL bytes (header included, emulation prevention
// bytes as they are), leaving out AUD (9) and filler (12), which
// packetizers may drop: so the hash does not depend on start code lengths
// or on how RTP packetized the access unit.

const (
	nalSEI         = 6
	nalAUD         = 9
	nalFiller      = 12
	seiUserData    = 5
	seiPayloadSize = len(seiUUID) + 8 + ed25519.SignatureSize
)

// seiUUID names Canopy's SEI among user-data-unregistered messages.
var seiUUID = [16]byte{'c', 'a', 'n', 'o', 'p', 'y', '.', 'f', 'r', 'a', 'm', 'e', 's', 'i', 'g', '1'}

var startCode = []byte{0, 0, 0, 1}

// nal is one NAL unit of an Annex-B access unit: b[start:end] are its
// bytes, b[from:start] its start code (and any zero bytes before it).
type nal struct{ from, start, end int }

// splitNALs finds the NAL units of an Annex-B access unit. Zero bytes before
// a start code (trailing_zero_8bits, the 4-byte form's leading zero) belong
// to the start code, not to the NAL before: a NAL never ends in 0x00.
// Bytes before the first start code are not a NAL and are skipped.
func splitNALs(b []byte, out []nal) []nal {
	i := bytes.Index(b, startCode[1:])
	if i < 0 {
		return out
	}
	from := i
	for from > 0 && b[from-1] == 0 {
		from--
	}
	start := i + 3
	for {
		j := bytes.Index(b[start:], startCode[1:])
		if j < 0 {
			end := len(b)
			for end > start && b[end-1] == 0 {
				end--
			}
			if end > start {
				out = append(out, nal{from, start, end})
			}
			return out
		}
		next := start + j
		end := next
		for end > start && b[end-1] == 0 {
			end--
		}
		if end > start {
			out = append(out, nal{from, start, end})
		}
		from, start = end, next+3
	}
}

func nalType(b []byte) byte { return b[0] & 0x1f }

// hashed reports whether a NAL counts in the canonical form.
func hashed(n []byte) bool {
	t := nalType(n)
	return t != nalAUD && t != nalFiller && !isSigSEI(n)
}

func hashNALs(au []byte) [sha256.Size]byte {
	var buf [16]nal
	h := sha256.New()
	var l [4]byte
	for _, n := range splitNALs(au, buf[:0]) {
		b := au[n.start:n.end]
		if !hashed(b) {
			continue
		}
		binary.BigEndian.PutUint32(l[:], uint32(len(b)))
		h.Write(l[:])
		h.Write(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// seiPrefix is the start of the SEI's RBSP: payload type and size, uuid.
// None of it needs emulation prevention, so it also starts the escaped form.
var seiPrefix = append([]byte{seiUserData, byte(seiPayloadSize)}, seiUUID[:]...)

// isSigSEI reports whether a NAL is Canopy's signature SEI.
func isSigSEI(n []byte) bool {
	return len(n) > len(seiPrefix) && nalType(n) == nalSEI && bytes.Equal(n[1:1+len(seiPrefix)], seiPrefix)
}

// buildSEI returns the signature SEI NAL, escaped, without start code.
func buildSEI(counter uint64, sig []byte) []byte {
	rbsp := make([]byte, 0, 2+seiPayloadSize+1)
	rbsp = append(rbsp, seiPrefix...)
	rbsp = binary.BigEndian.AppendUint64(rbsp, counter)
	rbsp = append(rbsp, sig...)
	rbsp = append(rbsp, 0x80)
	out := make([]byte, 1, 1+len(rbsp)+len(rbsp)/2)
	out[0] = nalSEI
	return escape(out, rbsp)
}

// escape appends rbsp to dst with emulation prevention (H.264 §7.4.1): a
// 0x03 after two zero bytes when the next byte is 0x00-0x03.
func escape(dst, rbsp []byte) []byte {
	zeros := 0
	for _, c := range rbsp {
		if zeros >= 2 && c <= 3 {
			dst = append(dst, 3)
			zeros = 0
		}
		dst = append(dst, c)
		if c == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return dst
}

// unescape removes emulation prevention bytes.
func unescape(ebsp []byte) []byte {
	out := make([]byte, 0, len(ebsp))
	zeros := 0
	for _, c := range ebsp {
		if zeros >= 2 && c == 3 {
			zeros = 0
			continue
		}
		out = append(out, c)
		if c == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return out
}

// insertSEI returns the access unit with the signature SEI before its first
// slice (at the end if it has none).
func insertSEI(au []byte, counter uint64, sig []byte) []byte {
	sei := buildSEI(counter, sig)
	var buf [16]nal
	at := len(au)
	for _, n := range splitNALs(au, buf[:0]) {
		if t := nalType(au[n.start:n.end]); t >= 1 && t <= 5 {
			at = n.from
			break
		}
	}
	out := make([]byte, 0, len(au)+len(startCode)+len(sei))
	out = append(out, au[:at]...)
	out = append(out, startCode...)
	out = append(out, sei...)
	return append(out, au[at:]...)
}

// parseSEI finds the one signature SEI of an access unit and returns the
// access unit without it.
func parseSEI(au []byte) (Signed, error) {
	var buf [16]nal
	nals := splitNALs(au, buf[:0])
	found := -1
	for i, n := range nals {
		if isSigSEI(au[n.start:n.end]) {
			if found >= 0 {
				return Signed{}, ErrMalformed
			}
			found = i
		}
	}
	if found < 0 {
		return Signed{}, ErrUnsigned
	}
	n := nals[found]
	rbsp := unescape(au[n.start+1 : n.end])
	if len(rbsp) != 2+seiPayloadSize+1 || rbsp[len(rbsp)-1] != 0x80 {
		return Signed{}, ErrMalformed
	}
	body := rbsp[len(seiPrefix):]
	media := make([]byte, 0, len(au)-(n.end-n.from))
	media = append(media, au[:n.from]...)
	if found+1 < len(nals) {
		media = append(media, au[nals[found+1].from:]...)
	}
	return Signed{Media: media, Counter: binary.BigEndian.Uint64(body), Sig: body[8 : 8+ed25519.SignatureSize]}, nil
}
