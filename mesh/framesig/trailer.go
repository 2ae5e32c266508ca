package framesig

import (
	"crypto/ed25519"
	"encoding/binary"
)

// The trailer form (VP8, Opus):
//
//	frame || counter (8, BE) || signature (64) || 0x01 || 'C' 'S'
//
// Its last three bytes let a server strip it from a frame's last RTP packet
// without assembling the frame.

// HasTrailer reports whether b (a frame, or the last RTP payload of one)
// ends in a signature trailer.
func HasTrailer(b []byte) bool {
	n := len(b)
	return n >= TrailerSize && b[n-3] == version && b[n-2] == magic[0] && b[n-1] == magic[1]
}

func appendTrailer(b []byte, counter uint64, sig []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, counter)
	b = append(b, sig...)
	return append(b, version, magic[0], magic[1])
}

func parseTrailer(frame []byte) (Signed, error) {
	if !HasTrailer(frame) {
		return Signed{}, ErrUnsigned
	}
	t := frame[len(frame)-TrailerSize:]
	return Signed{
		Media:   frame[:len(frame)-TrailerSize],
		Counter: binary.BigEndian.Uint64(t),
		Sig:     t[8 : 8+ed25519.SignatureSize],
	}, nil
}
