package framesig

import (
	"crypto/ed25519"
	"crypto/sha256"
)

// Verifier checks one track's frames in the order they are to be played:
// each must carry a valid signature and a counter above the last accepted.
// It is not safe for concurrent use.
type Verifier struct {
	key    ed25519.PublicKey
	format Format
	kind   Kind
	last   uint64
	have   bool
	stale  int
}

// NewVerifier makes a verifier for a track of the given MIME type under the
// stream's public key.
func NewVerifier(key ed25519.PublicKey, mime string) (*Verifier, error) {
	if len(key) != KeySize {
		return nil, ErrKey
	}
	f, k, err := FormatOf(mime)
	if err != nil {
		return nil, err
	}
	return &Verifier{key: key, format: f, kind: k}, nil
}

// Format returns the track's signature form.
func (v *Verifier) Format() Format { return v.format }

// Verify checks a frame and returns what its decoder must see. On error the
// frame must not be played; the Evidence describes it for a tampering
// report. ErrStale is a duplicate to drop silently; every other error
// (ErrUnsigned, ErrMalformed, ErrBadSignature, ErrReplay) is tampering.
func (v *Verifier) Verify(frame []byte) ([]byte, Evidence, error) {
	s, err := Parse(v.format, frame)
	if err != nil {
		// Nothing to show but what came: the hash of the whole frame.
		return nil, Evidence{Kind: v.kind, Hash: sha256.Sum256(frame), Last: v.last}, err
	}
	ev := Evidence{Kind: v.kind, Counter: s.Counter, Hash: Hash(v.format, s.Media), Sig: s.Sig, Last: v.last}
	m := Message(v.kind, s.Counter, ev.Hash)
	if !ed25519.Verify(v.key, m[:], s.Sig) {
		return nil, ev, ErrBadSignature
	}
	if v.have && s.Counter <= v.last {
		v.stale++
		if v.stale > MaxStale {
			return nil, ev, ErrReplay
		}
		return nil, ev, ErrStale
	}
	v.have, v.last, v.stale = true, s.Counter, 0
	return s.Media, ev, nil
}
