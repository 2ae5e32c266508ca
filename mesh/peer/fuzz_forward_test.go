package peer

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// Fuzz targets for what a relay does with packets from the network: the
// RTP it forwards to its children and the RTCP it reads back from them.
// Both come from peers, so both are hostile input. Seeds live in
// testdata/fuzz/; run one with
//
//	go test ./mesh/peer -run '^$' -fuzz FuzzForwardRTP -fuzztime 10s

// checkingWriter re-marshals and re-parses every packet a child would send,
// as the child's own stack would, and remembers the first inconsistency.
type checkingWriter struct {
	mu  sync.Mutex
	err error
	buf []byte
}

func (w *checkingWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := rtp.Packet{Header: *h, Payload: payload}
	n := p.MarshalSize()
	if cap(w.buf) < n {
		w.buf = make([]byte, n)
	}
	buf := w.buf[:n]
	if _, err := p.MarshalTo(buf); err != nil {
		return 0, nil // refusing to send is fine; sending garbage is not
	}
	var back rtp.Packet
	if err := back.Unmarshal(buf); err != nil {
		if w.err == nil {
			w.err = errors.New("forwarded packet does not parse: " + err.Error())
		}
		return 0, nil
	}
	if !bytes.Equal(back.Payload, payload) && w.err == nil {
		w.err = errors.New("forwarded payload changed on the wire")
	}
	return n, nil
}

func (w *checkingWriter) Write(b []byte) (int, error) { return len(b), nil }

var rtpSeeds = [][]byte{
	// VP8 keyframe start, no padding.
	{0x80, 0x60, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x05, 0x90, 0x80, 0x01, 0x00, 0x9d, 0x01, 0x2a},
	// Padding bit set, padding length 0 (GHSA-f26w-gh5m-qq77).
	{0xa0, 0x60, 0x00, 0x02, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x05, 0x90, 0x80, 0x01, 0x00},
	// Padding length longer than the payload.
	{0xa0, 0x60, 0x00, 0x03, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x05, 0x10, 0x00, 0xff},
	// Padding only: the whole payload is padding.
	{0xa0, 0x60, 0x00, 0x04, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x04},
	// One-byte header extension (abs-capture-time style) and a marker.
	{0x90, 0xe0, 0x00, 0x05, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x05, 0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0x00, 0x00, 0x10, 0x00, 0x9d},
	// H264 STAP-A with an SPS and an IDR slice header.
	{0x80, 0x66, 0x00, 0x06, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x05, 0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x65, 0x88},
	// CSRC count larger than the packet.
	{0x8f, 0x60, 0x00, 0x07, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x05},
}

// FuzzForwardRTP parses a datagram as the upstream read loop does and
// forwards it to two children of a video Forwarder, as VP8 and as H264,
// also with the padding size forced to pad: a relay must not panic, and what
// it writes must parse again with the same payload.
func FuzzForwardRTP(f *testing.F) {
	for _, s := range rtpSeeds {
		f.Add(s, uint8(0))
	}
	f.Add(rtpSeeds[0], uint8(255))
	h264 := vp8Track
	h264.MimeType, h264.Fmtp = "video/H264", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
	f.Fuzz(func(t *testing.T, data []byte, pad uint8) {
		var p rtp.Packet
		if err := p.Unmarshal(data); err != nil {
			return
		}
		if int(p.PaddingSize) > len(data) {
			t.Fatalf("parsed padding %d longer than the datagram (%d bytes)", p.PaddingSize, len(data))
		}
		for _, tr := range []struct{ mime, fmtp string }{{vp8Track.MimeType, ""}, {h264.MimeType, h264.Fmtp}} {
			track := vp8Track
			track.MimeType, track.Fmtp = tr.mime, tr.fmtp
			// A small GOP cache: the default 4 MiB per exec starved the
			// fuzzer of memory within seconds.
			fwd := NewForwarderWith(track, ForwarderOptions{GOPBytes: 64 << 10}, testLogger())
			w1, w2 := &checkingWriter{}, &checkingWriter{}
			bindFake(t, fwd, "a", 1, w1)
			bindFake(t, fwd, "b", 2, w2)
			_ = fwd.WriteRTP(&p)
			q := p
			q.Header.Padding, q.Header.PaddingSize = pad != 0, pad
			q.SequenceNumber++
			_ = fwd.WriteRTP(&q)
			fwd.Close() // waits for the children's writers
			for _, w := range []*checkingWriter{w1, w2} {
				if w.err != nil {
					t.Fatalf("%s: %v", tr.mime, w.err)
				}
			}
		}
	})
}

// FuzzRTCPFromChild parses RTCP as Downstream.readRTCP does and exercises
// what a relay reads from the packets: no panic, and what parsed marshals.
func FuzzRTCPFromChild(f *testing.F) {
	pli, _ := (&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 2}).Marshal()
	fir, _ := (&rtcp.FullIntraRequest{SenderSSRC: 1, MediaSSRC: 2, FIR: []rtcp.FIREntry{{SSRC: 2, SequenceNumber: 1}}}).Marshal()
	nack, _ := (&rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: 2, Nacks: []rtcp.NackPair{{PacketID: 10, LostPackets: 0xffff}}}).Marshal()
	rr, _ := (&rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 2, FractionLost: 10}}}).Marshal()
	for _, s := range [][]byte{pli, fir, nack, rr, append(append([]byte{}, rr...), pli...), {0x81, 0xce, 0x00, 0x00}, {0xa1, 0xce, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 0}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pkts, err := rtcp.Unmarshal(data)
		if err != nil {
			return
		}
		fwd := NewForwarder(vp8Track, testLogger())
		defer fwd.Close()
		for _, p := range pkts {
			_ = p.DestinationSSRC()
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				fwd.requestKeyframe()
			}
			if _, err := p.Marshal(); err != nil {
				t.Logf("parsed %T does not marshal: %v", p, err) // pion's business, not a relay failure
			}
		}
	})
}
