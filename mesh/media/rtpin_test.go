package media

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// TestRTPIngestRestartIsContinuous: a sender that restarts with a new SSRC,
// sequence numbers and clock continues the output where it stopped, its
// clock moved on by the wall time between; a second sender that talks over
// the first is ignored; duplicates and far-too-late packets are dropped.
func TestRTPIngestRestartIsContinuous(t *testing.T) {
	g := NewRTPIngest(VP8)
	t0 := time.Now()
	push := func(ssrc uint32, seq uint16, ts uint32, at time.Duration) []*rtp.Packet {
		p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: ssrc, SequenceNumber: seq, Timestamp: ts, PayloadType: 100}, Payload: []byte{0x10, 1, 2}}
		return g.Push(p, t0.Add(at))
	}
	var lastSeq uint16
	var lastTS uint32
	for i := range 10 {
		out := push(1, 60000+uint16(i), 1000+uint32(i)*3000, time.Duration(i)*33*time.Millisecond)
		if len(out) != 1 || out[0].SSRC != g.SSRC() || out[0].PayloadType != VP8.PayloadType {
			t.Fatalf("packet %d: %+v", i, out)
		}
		lastSeq, lastTS = out[0].SequenceNumber, out[0].Timestamp
	}
	if out := push(1, 60005, 16000, 400*time.Millisecond); len(out) != 0 {
		t.Fatal("a duplicate passed")
	}
	if out := push(2, 7, 5, 320*time.Millisecond); len(out) != 0 {
		t.Fatal("a second sender, 20 ms after the first one's last packet, was taken")
	}
	// The first sender stops; 2 s after its last packet another starts.
	gap := 2 * time.Second
	out := push(3, 12345, 777, 297*time.Millisecond+gap)
	if len(out) != 1 {
		t.Fatal("the restarted sender was ignored")
	}
	if out[0].SequenceNumber != lastSeq+1 {
		t.Errorf("after the restart seq %d, want %d", out[0].SequenceNumber, lastSeq+1)
	}
	if d := out[0].Timestamp - lastTS; d < 90*1900 || d > 90*2100 {
		t.Errorf("after a 2 s pause the clock moved %d ticks, want ~180000", d)
	}
	restartTS := out[0].Timestamp // out is valid until the next Push
	next := push(3, 12346, 777+3000, 330*time.Millisecond+gap)
	if next[0].SequenceNumber != lastSeq+2 || next[0].Timestamp != restartTS+3000 {
		t.Errorf("the new sender's numbering is not carried on: %+v", next[0].Header)
	}
	// A reordered packet passes, numbered where it belongs.
	push(3, 12348, 777+6000, 400*time.Millisecond+gap)
	late := push(3, 12347, 777+6000, 401*time.Millisecond+gap)
	if len(late) != 1 || late[0].SequenceNumber != lastSeq+3 {
		t.Errorf("reordered packet: %+v", late)
	}
}

// TestRTPIngestSplitsOversized: oversized H264 (a single NAL, an FU-A, a
// STAP-A) and VP8 packets are cut to the MTU, the numbers after move up,
// and the frames assemble byte for byte as they were sent.
func TestRTPIngestSplitsOversized(t *testing.T) {
	for _, tc := range []struct {
		name  string
		codec Codec
		pkts  [][]byte // one frame's payloads, in order
		want  []byte   // the assembled frame
	}{
		func() (c struct {
			name  string
			codec Codec
			pkts  [][]byte
			want  []byte
		}) {
			sps, pps := []byte{0x67, 0x42, 0xc0, 0x1e}, []byte{0x68, 0xce, 0x3c, 0x80}
			idr := append([]byte{0x65}, bytes.Repeat([]byte{0xab}, 3000)...)
			stap := []byte{0x78, 0, byte(len(sps))}
			stap = append(append(append(stap, sps...), 0, byte(len(pps))), pps...)
			// A STAP-A with a large NAL after the parameter sets.
			big := append([]byte{0x78, 0, byte(len(sps))}, sps...)
			big = append(append(big, byte(len(idr)>>8), byte(len(idr))), idr...)
			slice := append([]byte{0x41}, bytes.Repeat([]byte{0xcd}, 1500)...)
			fu := func(s, e bool, b []byte) []byte {
				h := byte(1)
				if s {
					h |= 0x80
				}
				if e {
					h |= 0x40
				}
				return append([]byte{0x5c, h}, b...)
			}
			more := bytes.Repeat([]byte{0xee}, 2500)
			c.name, c.codec = "H264", H264
			c.pkts = [][]byte{stap, big, slice, fu(true, false, more[:1300]), fu(false, true, more[1300:])}
			sc := []byte{0, 0, 0, 1}
			for _, n := range [][]byte{sps, pps, sps, idr, slice, append([]byte{0x41}, more...)} {
				c.want = append(append(c.want, sc...), n...)
			}
			return c
		}(),
		func() (c struct {
			name  string
			codec Codec
			pkts  [][]byte
			want  []byte
		}) {
			// A 3000-byte key frame whose tag parses (the assembler passes
			// only decodable frames): first partition 100 bytes, shown,
			// start code, 640x360.
			frame := append([]byte{0x90, 0x0c, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01}, bytes.Repeat([]byte{0x5a}, 2990)...)
			c.name, c.codec = "VP8", VP8
			c.pkts = [][]byte{append([]byte{0x90, 0x80, 0x80, 0x01}, frame...)}
			c.want = frame
			return c
		}(),
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewRTPIngest(tc.codec)
			var frames [][]byte
			asm, err := NewAssembler(tc.codec, func(f Frame) { frames = append(frames, f.Data) })
			if err != nil {
				t.Fatal(err)
			}
			var out []*rtp.Packet
			now := time.Now()
			for frame := range 2 { // the second frame completes the first in the assembler
				for i, b := range tc.pkts {
					p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 9, SequenceNumber: uint16(100 + frame*len(tc.pkts) + i),
						Timestamp: uint32(frame) * 3000, Marker: i == len(tc.pkts)-1}, Payload: append([]byte(nil), b...)}
					for _, q := range g.Push(p, now) {
						if len(q.Payload) > MTU-12 {
							t.Fatalf("a %d-byte payload left the ingest", len(q.Payload))
						}
						c := q.Clone()
						out = append(out, c)
						asm.Push(c)
					}
				}
			}
			for i := 1; i < len(out); i++ {
				if out[i].SequenceNumber != out[i-1].SequenceNumber+1 {
					t.Fatalf("packet %d: seq %d after %d", i, out[i].SequenceNumber, out[i-1].SequenceNumber)
				}
				if out[i-1].Marker && out[i-1].Timestamp == out[i].Timestamp {
					t.Fatalf("packet %d: marker inside a frame", i-1)
				}
			}
			if len(frames) == 0 || !bytes.Equal(frames[0], tc.want) {
				t.Fatalf("%d frames; the first is %d bytes, want %d as sent", len(frames), len(frames[0]), len(tc.want))
			}
			t.Logf("%d packets in, %d out", 2*len(tc.pkts), len(out))
		})
	}
}

// TestParseSDPFromFFmpeg parses what ffmpeg 5.1 writes with -sdp_file for
// H264 + Opus, and refuses codecs the tree cannot carry.
func TestParseSDPFromFFmpeg(t *testing.T) {
	const ff = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nt=0 0\r\na=tool:libavformat LIBAVFORMAT_VERSION\r\n" +
		"m=video 5004 RTP/AVP 96\r\nc=IN IP4 127.0.0.1\r\nb=AS:2000\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n" +
		"m=audio 5006 RTP/AVP 97\r\nc=IN IP4 127.0.0.1\r\nb=AS:64\r\na=rtpmap:97 opus/48000/2\r\n"
	got, err := ParseSDP([]byte(ff))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Codec.MimeType != H264.MimeType || got[0].PayloadType != 96 || got[0].Addr != "127.0.0.1:5004" ||
		got[1].Codec.MimeType != Opus.MimeType || got[1].PayloadType != 97 || got[1].Addr != "127.0.0.1:5006" {
		t.Fatalf("parsed %+v", got)
	}
	for _, bad := range []string{
		"v=0\nm=video 5004 RTP/AVP 96\na=rtpmap:96 H265/90000\n",
		"v=0\nm=video 5004 RTP/AVP 96\n",
		"v=0\nm=video 0 RTP/AVP 96\na=rtpmap:96 VP8/90000\n",
		"v=0\ns=nothing\n",
	} {
		if _, err := ParseSDP([]byte(bad)); !errors.Is(err, ErrSDP) {
			t.Errorf("ParseSDP(%q) = %v, want ErrSDP", bad, err)
		}
	}
}

// TestOpenLive: the format is told from the first bytes, a live IVF stream
// is read once with each frame's gap from its timestamps, and both formats
// end with io.EOF instead of looping.
func TestOpenLive(t *testing.T) {
	for _, name := range []string{"short.ivf", "short.h264"} {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		r, err := OpenLive(bytes.NewReader(b), FormatAuto, 30)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		n, gaps := 0, time.Duration(0)
		for {
			f, err := r.ReadFrame()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s frame %d: %v", name, n, err)
			}
			if n == 0 && !f.Keyframe {
				t.Errorf("%s: the first frame is not a keyframe", name)
			}
			gaps += f.Gap + f.Duration
			n++
		}
		t.Logf("%s: %d frames, %v of media", name, n, gaps)
		if n == 0 || gaps <= 0 {
			t.Errorf("%s: %d frames, %v of media", name, n, gaps)
		}
	}
	if _, err := OpenLive(bytes.NewReader([]byte("OggS....")), FormatAuto, 30); !errors.Is(err, ErrUnknownLiveFormat) {
		t.Errorf("an Ogg stream was taken as %v", err)
	}
}
