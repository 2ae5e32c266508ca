// Package framesig signs and verifies the encoded media frames of a Canopy
// stream end to end: the source signs every video and audio frame with the
// stream's Ed25519 key, relays forward the bytes untouched, and every viewer
// checks the signature before the frame reaches its decoder, so a relay cannot
// alter, replay or inject what its children play.
//
// The wire form (README "Signed frames", shared with static/js):
//
//	msg       = "CNPY1" || kind || counter (u64 BE) || sha256(canonical)
//	signature = Ed25519(key, msg)
//
// VP8 and Opus carry counter and signature in a 75-byte trailer appended to
// the frame; H264 carries them in one user-data-unregistered SEI NAL before
// the first slice, which decoders that cannot verify skip. It imports nothing
// of pion: frames are byte slices, as a frame reader or an assembler gives them.
package framesig

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Kind is the one-byte track kind inside the signed message.
type Kind byte

// Track kinds.
const (
	Video Kind = 'v'
	Audio Kind = 'a'
)

// Format is where a codec's frames carry their signature.
type Format int

// Formats.
const (
	// FormatTrailer appends Trailer bytes to the frame (VP8, Opus).
	FormatTrailer Format = iota + 1
	// FormatSEI inserts a user-data-unregistered SEI NAL (H264).
	FormatSEI
)

const (
	// TrailerSize is what a signature adds to a VP8 or Opus frame: counter
	// (8), signature (64), version (1), magic "CS" (2). At 30 fps that is
	// 18 kbit/s of video, at 50 Opus frames/s 30 kbit/s.
	TrailerSize = 8 + ed25519.SignatureSize + 3
	// SEISize is what a signature adds to an H264 access unit before
	// emulation prevention: start code (4), NAL header (1), payload type
	// and size (2), uuid (16), counter (8), signature (64), trailing bits (1).
	SEISize = 4 + 1 + 2 + seiPayloadSize + 1
	// KeySize is the size of a stream's public key.
	KeySize = ed25519.PublicKeySize
	// MaxStale is how many frames in a row may come with a counter not
	// above the last accepted one before the verifier calls it a replay. A
	// duplicate after a parent switch is normal (dropped silently); honest
	// relays forward each sequence number once, so a run longer than a few
	// frames is a relay resending old frames.
	MaxStale = 4
	// counterLimit bounds a track's first counter (2^40): random, so a
	// restarted source is not mistaken for a replay, and far from wrapping
	// (2^64 - 2^40 frames is 19 million years at 30 fps).
	counterLimit = 1 << 40

	version = 0x01
	domain  = "CNPY1"
	msgSize = len(domain) + 1 + 8 + sha256.Size
)

var magic = [2]byte{'C', 'S'}

// Errors of Parse and Verify. A signed track's frame that fails with any of
// them must not be played.
var (
	// ErrUnsigned means the frame carries no signature in the codec's form.
	ErrUnsigned = errors.New("framesig: frame is not signed")
	// ErrMalformed means the signature's container does not parse (a bad
	// SEI, two signatures in one access unit).
	ErrMalformed = errors.New("framesig: malformed signature")
	// ErrBadSignature means the signature does not verify over the frame.
	ErrBadSignature = errors.New("framesig: bad signature")
	// ErrStale means the counter is not above the last accepted one: a
	// duplicate, dropped without alarm.
	ErrStale = errors.New("framesig: stale counter")
	// ErrReplay means more than MaxStale stale frames came in a row.
	ErrReplay = errors.New("framesig: replayed frames")
	// ErrCodec means the codec has no signature form here.
	ErrCodec = errors.New("framesig: codec cannot be signed")
	// ErrKey means a key is not a valid Ed25519 public key encoding.
	ErrKey = errors.New("framesig: bad key")
)

// FormatOf returns the signature form and track kind for a MIME type.
func FormatOf(mime string) (Format, Kind, error) {
	switch strings.ToLower(mime) {
	case "video/vp8":
		return FormatTrailer, Video, nil
	case "audio/opus":
		return FormatTrailer, Audio, nil
	case "video/h264":
		return FormatSEI, Video, nil
	}
	return 0, 0, fmt.Errorf("%w: %s", ErrCodec, mime)
}

// Message builds the bytes a signature covers.
func Message(kind Kind, counter uint64, hash [sha256.Size]byte) [msgSize]byte {
	var m [msgSize]byte
	n := copy(m[:], domain)
	m[n] = byte(kind)
	binary.BigEndian.PutUint64(m[n+1:], counter)
	copy(m[n+9:], hash[:])
	return m
}

// Check reports whether sig signs (kind, counter, hash) under pub: what the
// server does with a child's evidence, without the frame.
func Check(pub ed25519.PublicKey, kind Kind, counter uint64, hash [sha256.Size]byte, sig []byte) bool {
	if len(pub) != KeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	m := Message(kind, counter, hash)
	return ed25519.Verify(pub, m[:], sig)
}

// Hash is the canonical hash of a frame's media bytes (without signature):
// the bytes themselves for the trailer form, the access unit's NAL units
// (length-prefixed, without AUD, filler and signature SEI) for H264.
func Hash(f Format, media []byte) [sha256.Size]byte {
	if f == FormatSEI {
		return hashNALs(media)
	}
	return sha256.Sum256(media)
}

// GenerateKey makes a stream's key pair.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}

// EncodeKey writes a public key as the protocol carries it: base64url
// without padding.
func EncodeKey(pub ed25519.PublicKey) string {
	return base64.RawURLEncoding.EncodeToString(pub)
}

// DecodeKey parses EncodeKey's form.
func DecodeKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != KeySize {
		return nil, ErrKey
	}
	return ed25519.PublicKey(b), nil
}

// Signer signs one track's frames. It is not safe for concurrent use: one
// track, one goroutine, as frames are sent.
type Signer struct {
	key     ed25519.PrivateKey
	format  Format
	kind    Kind
	counter uint64
}

// NewSigner makes a signer for a track of the given MIME type, its counter
// starting at a random value below 2^40.
func NewSigner(key ed25519.PrivateKey, mime string) (*Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, ErrKey
	}
	f, k, err := FormatOf(mime)
	if err != nil {
		return nil, err
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	return &Signer{key: key, format: f, kind: k, counter: binary.BigEndian.Uint64(b[:]) % counterLimit}, nil
}

// Counter returns the counter the next frame will carry.
func (s *Signer) Counter() uint64 { return s.counter }

// Sign returns the frame with its signature, in a new slice; frame is not
// changed. An empty frame is returned as is (nothing to play, nothing sent).
func (s *Signer) Sign(frame []byte) []byte {
	if len(frame) == 0 {
		return frame
	}
	c := s.counter
	s.counter++
	m := Message(s.kind, c, Hash(s.format, frame))
	sig := ed25519.Sign(s.key, m[:])
	if s.format == FormatSEI {
		return insertSEI(frame, c, sig)
	}
	out := make([]byte, len(frame), len(frame)+TrailerSize)
	copy(out, frame)
	return appendTrailer(out, c, sig)
}

// Signed is a frame taken apart by Parse.
type Signed struct {
	// Media is the frame as its decoder must see it, without the signature.
	// For the trailer form it aliases the frame; for H264 it is a new slice.
	Media   []byte
	Counter uint64
	Sig     []byte // 64 bytes; aliases the frame or Parse's own copy
}

// Parse takes a frame of format f apart into media, counter and signature,
// without checking the signature.
func Parse(f Format, frame []byte) (Signed, error) {
	switch f {
	case FormatTrailer:
		return parseTrailer(frame)
	case FormatSEI:
		return parseSEI(frame)
	}
	return Signed{}, ErrCodec
}

// Strip returns what a player that cannot verify should decode: the frame
// without its trailer when it has one, the frame unchanged otherwise (an
// H264 SEI may stay: decoders skip unknown user data).
func Strip(f Format, frame []byte) []byte {
	if f != FormatTrailer || !HasTrailer(frame) {
		return frame
	}
	return frame[:len(frame)-TrailerSize]
}

// Evidence is what a viewer shows the server about a frame it rejected: the
// counter and signature as received and the hash of the media as received.
type Evidence struct {
	Kind    Kind
	Counter uint64
	Hash    [sha256.Size]byte
	Sig     []byte // empty when the frame carried none
	// Last is the counter of the last frame accepted, for a replay: a
	// signature that verifies is then no proof the report is false.
	Last uint64
}
