package framesig

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"testing"
)

func testKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// annexB joins NALs with the given start codes (cycled).
func annexB(codes [][]byte, nals ...[]byte) []byte {
	var b []byte
	for i, n := range nals {
		b = append(b, codes[i%len(codes)]...)
		b = append(b, n...)
	}
	return b
}

var (
	sps   = []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8}
	pps   = []byte{0x68, 0xce, 0x3c, 0x80}
	aud   = []byte{0x09, 0xf0}
	fill  = []byte{0x0c, 0xff, 0xff, 0x80}
	sei0  = []byte{0x06, 0x05, 0x01, 0x00, 0x80} // someone else's SEI: hashed
	idr   = []byte{0x65, 0x88, 0x84, 0x00, 0x00, 0x03, 0x01, 0x33, 0x21}
	slice = []byte{0x41, 0x9a, 0x02, 0x05}
)

func TestTrailerRoundTrip(t *testing.T) {
	pub, priv := testKey(t)
	r := rand.New(rand.NewPCG(1, 2))
	for _, mime := range []string{"video/VP8", "audio/opus"} {
		s, err := NewSigner(priv, mime)
		if err != nil {
			t.Fatal(err)
		}
		if s.Counter() >= counterLimit {
			t.Fatalf("first counter %d not below 2^40", s.Counter())
		}
		v, err := NewVerifier(pub, mime)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 50 {
			frame := randomBytes(r, 1+r.IntN(3000))
			orig := bytes.Clone(frame)
			signed := s.Sign(frame)
			if len(signed) != len(frame)+TrailerSize || !HasTrailer(signed) {
				t.Fatalf("%s frame %d: signed %d bytes from %d", mime, i, len(signed), len(frame))
			}
			if !bytes.Equal(frame, orig) {
				t.Fatal("Sign changed its input")
			}
			if got := Strip(FormatTrailer, signed); !bytes.Equal(got, frame) {
				t.Fatal("Strip did not give the frame back")
			}
			media, _, err := v.Verify(signed)
			if err != nil || !bytes.Equal(media, frame) {
				t.Fatalf("%s frame %d: verify = %v", mime, i, err)
			}
		}
	}
}

func TestTamperedTrailer(t *testing.T) {
	pub, priv := testKey(t)
	s, _ := NewSigner(priv, "video/VP8")
	r := rand.New(rand.NewPCG(3, 4))
	frame := randomBytes(r, 900)
	signed := s.Sign(frame)
	// Every single-bit flip anywhere fails: in the media or counter (bad
	// signature), in the signature (bad signature), in version or magic
	// (unsigned).
	for i := range len(signed) * 8 {
		v, _ := NewVerifier(pub, "video/VP8")
		b := bytes.Clone(signed)
		b[i/8] ^= 1 << (i % 8)
		_, ev, err := v.Verify(b)
		if err == nil {
			t.Fatalf("bit %d flipped and the frame verified", i)
		}
		want := ErrBadSignature
		if i/8 >= len(signed)-3 {
			want = ErrUnsigned
		}
		if !errors.Is(err, want) {
			t.Fatalf("bit %d: %v, want %v", i, err, want)
		}
		// The evidence of a forged frame does not verify on the server.
		if Check(pub, ev.Kind, ev.Counter, ev.Hash, ev.Sig) {
			t.Fatalf("bit %d: evidence of a forged frame checks", i)
		}
	}
	// Another key's signature.
	_, other := testKey(t)
	s2, _ := NewSigner(other, "video/VP8")
	v, _ := NewVerifier(pub, "video/VP8")
	if _, _, err := v.Verify(s2.Sign(frame)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other key: %v", err)
	}
	// A frame that is too short or carries nothing.
	for _, b := range [][]byte{nil, {1, 0x43, 0x53}, frame} {
		if _, _, err := v.Verify(b); !errors.Is(err, ErrUnsigned) {
			t.Fatalf("unsigned %d bytes: %v", len(b), err)
		}
	}
	// Audio and video signatures do not stand in for each other.
	sa, _ := NewSigner(priv, "audio/opus")
	if _, _, err := v.Verify(sa.Sign(frame)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("audio signature on video: %v", err)
	}
}

func TestReplay(t *testing.T) {
	pub, priv := testKey(t)
	s, _ := NewSigner(priv, "audio/opus")
	v, _ := NewVerifier(pub, "audio/opus")
	var frames [][]byte
	for i := range 10 {
		frames = append(frames, s.Sign([]byte{byte(i), 1, 2, 3}))
	}
	for _, f := range frames[:6] {
		if _, _, err := v.Verify(f); err != nil {
			t.Fatal(err)
		}
	}
	// A duplicate is stale; a run past MaxStale is a replay; a fresh frame
	// resets the run. The evidence of a replay verifies (the frame is
	// genuine) and says what was accepted last.
	for i := range MaxStale {
		if _, _, err := v.Verify(frames[i%6]); !errors.Is(err, ErrStale) {
			t.Fatalf("stale %d: %v", i, err)
		}
	}
	_, ev, err := v.Verify(frames[2])
	if !errors.Is(err, ErrReplay) {
		t.Fatalf("past MaxStale: %v", err)
	}
	if !Check(pub, ev.Kind, ev.Counter, ev.Hash, ev.Sig) || ev.Last <= ev.Counter {
		t.Fatalf("replay evidence: checks %v, counter %d last %d", Check(pub, ev.Kind, ev.Counter, ev.Hash, ev.Sig), ev.Counter, ev.Last)
	}
	// Skipping frames (loss) is fine.
	if _, _, err := v.Verify(frames[9]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Verify(frames[7]); !errors.Is(err, ErrStale) {
		t.Fatalf("older after newer: %v", err)
	}
}

func TestH264RoundTrip(t *testing.T) {
	pub, priv := testKey(t)
	four, three := []byte{0, 0, 0, 1}, []byte{0, 0, 1}
	aus := [][]byte{
		annexB([][]byte{four}, aud, sps, pps, sei0, idr, idr),
		annexB([][]byte{three}, slice),
		annexB([][]byte{four, three}, aud, slice, fill, slice),
		annexB([][]byte{four}, sps, pps),          // no slice: the SEI goes last
		append(annexB([][]byte{four}, idr), 0, 0), // trailing_zero_8bits
	}
	s, _ := NewSigner(priv, "video/H264")
	v, _ := NewVerifier(pub, "video/H264")
	for i, au := range aus {
		signed := s.Sign(au)
		if len(signed) < len(au)+SEISize {
			t.Fatalf("au %d: %d bytes signed from %d", i, len(signed), len(au))
		}
		media, _, err := v.Verify(signed)
		if err != nil {
			t.Fatalf("au %d: %v", i, err)
		}
		if !bytes.Equal(bytes.TrimRight(media, "\x00"), bytes.TrimRight(au, "\x00")) {
			t.Fatalf("au %d: media\n%x\nwant\n%x", i, media, au)
		}
	}
	// The SEI sits right before the first slice, after SPS/PPS.
	signed := s.Sign(aus[0])
	nals := splitNALs(signed, nil)
	var types []byte
	for _, n := range nals {
		types = append(types, nalType(signed[n.start:n.end]))
	}
	if !bytes.Equal(types, []byte{9, 7, 8, 6, 6, 5, 5}) || !isSigSEI(signed[nals[4].start:nals[4].end]) {
		t.Fatalf("NAL types %v", types)
	}
}

// TestH264Canonical: what a packetizer may change on the way (start code
// length, AUD and filler dropped) does not change the hash; what a decoder
// sees does.
func TestH264Canonical(t *testing.T) {
	pub, priv := testKey(t)
	s, _ := NewSigner(priv, "video/H264")
	signed := s.Sign(annexB([][]byte{{0, 0, 0, 1}}, aud, sps, pps, idr, fill, idr))
	var nals [][]byte
	for _, n := range splitNALs(signed, nil) {
		if b := signed[n.start:n.end]; nalType(b) != nalAUD && nalType(b) != nalFiller {
			nals = append(nals, b)
		}
	}
	v, _ := NewVerifier(pub, "video/H264")
	if _, _, err := v.Verify(annexB([][]byte{{0, 0, 1}}, nals...)); err != nil {
		t.Fatalf("repacketized: %v", err)
	}
	// Dropping, reordering or changing a NAL breaks it.
	for i, forged := range [][][]byte{
		{nals[0], nals[1], nals[2], nals[3]},
		{nals[1], nals[0], nals[2], nals[3], nals[4]},
		{nals[0], nals[1], nals[2], nals[3], nals[4], slice},
	} {
		v, _ := NewVerifier(pub, "video/H264")
		if _, _, err := v.Verify(annexB([][]byte{{0, 0, 0, 1}}, forged...)); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("forgery %d: %v", i, err)
		}
	}
	// No SEI, or two.
	v, _ = NewVerifier(pub, "video/H264")
	if _, _, err := v.Verify(annexB([][]byte{{0, 0, 0, 1}}, sps, idr)); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("no SEI: %v", err)
	}
	two := annexB([][]byte{{0, 0, 0, 1}}, nals[0], nals[2], nals[2], nals[3])
	if _, _, err := v.Verify(two); !errors.Is(err, ErrMalformed) {
		t.Fatalf("two SEIs: %v", err)
	}
}

// TestSEIEmulationPrevention: a counter and signature full of zeros are
// escaped so no start code appears inside the SEI, and parse back.
func TestSEIEmulationPrevention(t *testing.T) {
	sig := make([]byte, ed25519.SignatureSize)
	sig[10], sig[11], sig[12] = 0, 0, 1
	sei := buildSEI(0x0000_0000_0001_0000, sig)
	if bytes.Contains(sei, []byte{0, 0, 0}) || bytes.Contains(sei, []byte{0, 0, 1}) || bytes.Contains(sei, []byte{0, 0, 2}) {
		t.Fatalf("start code emulated inside the SEI: %x", sei)
	}
	if !isSigSEI(sei) {
		t.Fatal("escaped SEI not recognised")
	}
	au := annexB([][]byte{{0, 0, 0, 1}}, sps, sei, idr)
	got, err := Parse(FormatSEI, au)
	if err != nil {
		t.Fatal(err)
	}
	if got.Counter != 0x10000 || !bytes.Equal(got.Sig, sig) {
		t.Fatalf("counter %x sig %x", got.Counter, got.Sig)
	}
	if want := annexB([][]byte{{0, 0, 0, 1}}, sps, idr); !bytes.Equal(got.Media, want) {
		t.Fatalf("media %x want %x", got.Media, want)
	}
	// The RBSP is a well-formed SEI: type 5, size 88, uuid, payload, stop bit.
	rbsp := unescape(sei[1:])
	if rbsp[0] != 5 || rbsp[1] != 88 || len(rbsp) != 2+88+1 || rbsp[len(rbsp)-1] != 0x80 {
		t.Fatalf("rbsp %x", rbsp)
	}
}

func TestKeys(t *testing.T) {
	pub, _ := testKey(t)
	s := EncodeKey(pub)
	if len(s) != 43 {
		t.Fatalf("encoded key %q", s)
	}
	got, err := DecodeKey(s)
	if err != nil || !bytes.Equal(got, pub) {
		t.Fatalf("decode: %v", err)
	}
	for _, bad := range []string{"", "abc", s + "A", s[:42] + "=", "!" + s[1:]} {
		if _, err := DecodeKey(bad); !errors.Is(err, ErrKey) {
			t.Fatalf("DecodeKey(%q) = %v", bad, err)
		}
	}
	if _, err := NewSigner(nil, "video/VP8"); !errors.Is(err, ErrKey) {
		t.Fatal(err)
	}
	if _, err := NewVerifier(pub, "video/AV1"); !errors.Is(err, ErrCodec) {
		t.Fatal(err)
	}
}
