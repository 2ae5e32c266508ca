package media

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// Decoders see files users hand to `client broadcast`: whatever the bytes,
// they must return frames or an error, never panic or spin.

func fuzzReader(f *testing.F, seeds []string, open func(io.ReadSeeker) (FrameReader, error)) {
	for _, s := range seeds {
		b := readTestdata(f, s)
		f.Add(b)
		f.Add(b[:len(b)/3])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := open(bytes.NewReader(data))
		if err != nil {
			return
		}
		for range 200 { // a few loops of a tiny file, or part of a big one
			fr, err := r.ReadFrame()
			if err != nil {
				return
			}
			if fr.Duration < 0 {
				t.Fatalf("negative duration %v", fr.Duration)
			}
		}
	})
}

func FuzzIVFReader(f *testing.F) { fuzzReader(f, []string{"short.ivf"}, NewIVFReader) }

func FuzzOggReader(f *testing.F) { fuzzReader(f, []string{"short.ogg"}, NewOggReader) }

func FuzzH264Reader(f *testing.F) {
	fuzzReader(f, []string{"short.h264"}, func(rs io.ReadSeeker) (FrameReader, error) { return NewH264Reader(rs, 30) })
}

func FuzzIsKeyframe(f *testing.F) {
	for _, p := range [][]byte{{0x90, 0x80, 0x81, 0x23, 0x50}, {0x78, 0, 2, 0x67, 0x42}, {0x7c, 0x85}} {
		f.Add("video/VP8", p)
		f.Add("video/H264", p)
	}
	f.Fuzz(func(t *testing.T, mime string, payload []byte) {
		IsKeyframe(mime, payload)
	})
}

// FuzzLiveReader: whatever arrives on standard input, OpenLive and its
// readers return frames or an error, and end.
func FuzzLiveReader(f *testing.F) {
	for _, s := range []string{"short.ivf", "short.h264"} {
		b := readTestdata(f, s)
		f.Add(b)
		f.Add(b[:len(b)/3])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := OpenLive(bytes.NewReader(data), FormatAuto, 30)
		if err != nil {
			return
		}
		for range len(data) + 2 { // every frame consumes some input
			fr, err := r.ReadFrame()
			if err != nil {
				return
			}
			if fr.Gap < 0 || fr.Duration < 0 {
				t.Fatalf("negative timing %+v", fr)
			}
		}
		t.Fatal("a live reader of a finite input never ended")
	})
}

// FuzzParseSDP: SDP files are user input to `client broadcast -sdp`.
func FuzzParseSDP(f *testing.F) {
	f.Add([]byte("v=0\nc=IN IP4 127.0.0.1\nm=video 5004 RTP/AVP 96\na=rtpmap:96 H264/90000\nm=audio 5006 RTP/AVP 97\na=rtpmap:97 opus/48000/2\n"))
	f.Add([]byte("m=video 5004 RTP/AVP 96\nc=IN IP4 239.0.0.1/16\na=rtpmap:96 VP8/90000\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		streams, err := ParseSDP(b)
		if err == nil && len(streams) == 0 {
			t.Fatal("no error and no stream")
		}
	})
}

// FuzzRTPIngest: whatever payloads an encoder (or anyone on the port) sends,
// the ingest never panics and never lets a packet over the MTU out when it
// could split it.
func FuzzRTPIngest(f *testing.F) {
	f.Add("video/H264", uint16(1), uint32(0), append([]byte{0x65}, make([]byte, 3000)...))
	f.Add("video/H264", uint16(2), uint32(0), append([]byte{0x7c, 0x85}, make([]byte, 2000)...))
	f.Add("video/H264", uint16(3), uint32(0), []byte{0x78, 0x07, 0xd0, 0x65})
	f.Add("video/VP8", uint16(4), uint32(3000), append([]byte{0x90, 0x80, 0x80, 0x01}, make([]byte, 2500)...))
	f.Fuzz(func(t *testing.T, mime string, seq uint16, ts uint32, payload []byte) {
		c, ok := LookupCodec(mime)
		if !ok {
			return
		}
		g := NewRTPIngest(c)
		now := time.Now()
		for i, s := range []uint16{seq, seq + 1, seq + 3, seq + 2, seq + 2} {
			p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 1, SequenceNumber: s, Timestamp: ts, Marker: i == 2}, Payload: payload}
			for _, q := range g.Push(p, now) {
				if q.SSRC != g.SSRC() {
					t.Fatalf("ssrc %x left, want %x", q.SSRC, g.SSRC())
				}
			}
		}
	})
}
