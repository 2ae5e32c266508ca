package framesig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

// Vectors shared with the browser (static/test/framesig.test.js reads the
// same file): frames this package signed, some changed the way a network
// path may change them harmlessly (start codes, a dropped AUD) and some
// tampered with. Go checks them here, the browser's WebCrypto code there,
// and both must agree on every one. Regenerate with
//
//	go test ./mesh/framesig -run TestVectors -update

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

const vectorsPath = "testdata/vectors.json"

type vectorFile struct {
	Note   string   `json:"note"`
	Key    string   `json:"key"`
	Frames []vector `json:"frames"`
}

type vector struct {
	Name    string `json:"name"`
	Codec   string `json:"codec"` // VP8, opus, H264
	Kind    string `json:"kind"`  // v, a
	Frame   string `json:"frame"` // base64url, as a receiver gets it
	Valid   bool   `json:"valid"`
	Counter uint64 `json:"counter,omitempty"`
	Hash    string `json:"hash,omitempty"`  // of the canonical media
	Media   string `json:"media,omitempty"` // trailer form: the frame without it
}

var b64 = base64.RawURLEncoding

func makeVectors(t *testing.T) vectorFile {
	seed := sha256.Sum256([]byte("canopy framesig test vectors"))
	priv := ed25519.NewKeyFromSeed(seed[:])
	pub := priv.Public().(ed25519.PublicKey)
	f := vectorFile{Note: "made by mesh/framesig TestVectors -update; read by static/test/framesig.test.js", Key: EncodeKey(pub)}
	add := func(name, codec string, frame []byte, valid bool) {
		mime := map[string]string{"VP8": "video/VP8", "opus": "audio/opus", "H264": "video/H264"}[codec]
		format, kind, err := FormatOf(mime)
		if err != nil {
			t.Fatal(err)
		}
		v := vector{Name: name, Codec: codec, Kind: string(kind), Frame: b64.EncodeToString(frame), Valid: valid}
		if valid {
			s, err := Parse(format, frame)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			h := Hash(format, s.Media)
			v.Counter, v.Hash = s.Counter, b64.EncodeToString(h[:])
			if format == FormatTrailer {
				v.Media = b64.EncodeToString(s.Media)
			}
		}
		f.Frames = append(f.Frames, v)
	}
	sign := func(mime string, frame []byte) []byte {
		s, err := NewSigner(priv, mime)
		if err != nil {
			t.Fatal(err)
		}
		return s.Sign(frame)
	}
	vp8 := sign("video/VP8", append([]byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01}, bytes.Repeat([]byte{0x5a, 0x00, 0x00, 0x01}, 50)...))
	add("vp8 keyframe", "VP8", vp8, true)
	flipped := bytes.Clone(vp8)
	flipped[20] ^= 0x10
	add("vp8 bit flipped in the media", "VP8", flipped, false)
	opus := sign("audio/opus", []byte{0xfc, 0xff, 0xfe, 0x01, 0x02, 0x03, 0x43, 0x53})
	add("opus frame", "opus", opus, true)
	add("opus frame without its trailer", "opus", opus[:len(opus)-TrailerSize], false)
	add("the opus frame as video", "VP8", opus, false)
	sigFlip := bytes.Clone(opus)
	sigFlip[len(sigFlip)-10] ^= 1
	add("opus signature bit flipped", "opus", sigFlip, false)

	au := annexB([][]byte{{0, 0, 0, 1}, {0, 0, 1}}, aud, sps, pps, sei0, idr, fill)
	h264 := sign("video/H264", au)
	add("h264 idr with aud, sps, pps, another sei, filler", "H264", h264, true)
	// What a receiver may get instead: the same NALs behind 4-byte start
	// codes, without AUD and filler (a packetizer dropped them).
	var kept [][]byte
	for _, n := range splitNALs(h264, nil) {
		if b := h264[n.start:n.end]; nalType(b) != nalAUD && nalType(b) != nalFiller {
			kept = append(kept, b)
		}
	}
	add("h264 re-framed: 4-byte start codes, no aud or filler", "H264", annexB([][]byte{{0, 0, 0, 1}}, kept...), true)
	slice := bytes.Clone(h264)
	slice[len(slice)-len(fill)-4-2] ^= 0x01 // a byte of the IDR slice
	add("h264 slice byte flipped", "H264", slice, false)
	add("h264 unsigned", "H264", au, false)
	return f
}

// TestVectors checks the shared vectors against this package (and with
// -update writes them afresh).
func TestVectors(t *testing.T) {
	if *update {
		f := makeVectors(t)
		b, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(vectorsPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsPath, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatalf("%v (make it with -update)", err)
	}
	var f vectorFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	pub, err := DecodeKey(f.Key)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Frames) < 8 {
		t.Fatalf("%d vectors, want the full set", len(f.Frames))
	}
	for _, v := range f.Frames {
		frame, err := b64.DecodeString(v.Frame)
		if err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		mime := map[string]string{"VP8": "video/VP8", "opus": "audio/opus", "H264": "video/H264"}[v.Codec]
		ver, err := NewVerifier(pub, mime)
		if err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		media, ev, err := ver.Verify(frame)
		if (err == nil) != v.Valid {
			t.Errorf("%s: verify error %v, vector says valid=%v", v.Name, err, v.Valid)
			continue
		}
		if !v.Valid {
			continue
		}
		if ev.Counter != v.Counter || b64.EncodeToString(ev.Hash[:]) != v.Hash {
			t.Errorf("%s: counter %d hash %s, vector has %d %s", v.Name, ev.Counter, b64.EncodeToString(ev.Hash[:]), v.Counter, v.Hash)
		}
		if v.Media != "" && b64.EncodeToString(media) != v.Media {
			t.Errorf("%s: stripped media differs from the vector's", v.Name)
		}
	}
}
