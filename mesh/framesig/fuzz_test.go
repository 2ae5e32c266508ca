package framesig

import (
	"bytes"
	"crypto/ed25519"
	"testing"
)

// A fixed key, so the fuzzer's corpus stays meaningful across runs.
var fuzzKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

func fuzzSeeds(f *testing.F) {
	s, _ := NewSigner(fuzzKey, "video/H264")
	t, _ := NewSigner(fuzzKey, "video/VP8")
	for _, au := range [][]byte{
		annexB([][]byte{{0, 0, 0, 1}}, aud, sps, pps, idr),
		annexB([][]byte{{0, 0, 1}}, slice, fill),
		{0, 0, 1},
		{},
	} {
		f.Add(au, true)
		f.Add(s.Sign(au), true)
		f.Add(t.Sign(au), false)
	}
}

// FuzzParse: whatever a parent sends, Parse and Verify return a frame or an
// error, never panic; what verifies is the signed media; a parsed SEI frame
// is shorter by the SEI and holds no signature SEI any more.
func FuzzParse(f *testing.F) {
	fuzzSeeds(f)
	pub := fuzzKey.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, frame []byte, sei bool) {
		format, mime := FormatTrailer, "video/VP8"
		if sei {
			format, mime = FormatSEI, "video/H264"
		}
		s, err := Parse(format, frame)
		if err != nil {
			return
		}
		if len(s.Sig) != ed25519.SignatureSize || len(s.Media) >= len(frame) {
			t.Fatalf("parsed %d bytes into media %d, sig %d", len(frame), len(s.Media), len(s.Sig))
		}
		if sei {
			if _, err := Parse(FormatSEI, s.Media); err == nil {
				t.Fatal("media still holds a signature SEI")
			}
		}
		v, _ := NewVerifier(pub, mime)
		media, ev, err := v.Verify(frame)
		if err == nil && (!bytes.Equal(media, s.Media) || !Check(pub, ev.Kind, ev.Counter, ev.Hash, ev.Sig)) {
			t.Fatal("verified media differs from parsed media")
		}
	})
}

// FuzzSignVerify: any access unit or frame a source reads signs and
// verifies back to the same canonical media.
func FuzzSignVerify(f *testing.F) {
	fuzzSeeds(f)
	pub := fuzzKey.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, frame []byte, sei bool) {
		format, mime := FormatTrailer, "audio/opus"
		if sei {
			format, mime = FormatSEI, "video/H264"
		}
		if sei && bytes.Contains(frame, seiUUID[:]) {
			return // a frame that already holds a signature SEI is not a source's
		}
		s, _ := NewSigner(fuzzKey, mime)
		v, _ := NewVerifier(pub, mime)
		signed := s.Sign(frame)
		if len(frame) == 0 {
			return
		}
		media, _, err := v.Verify(signed)
		if err != nil {
			t.Fatalf("own signature: %v", err)
		}
		if Hash(format, media) != Hash(format, frame) {
			t.Fatal("canonical hash changed through sign and parse")
		}
	})
}
