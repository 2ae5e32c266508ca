package protocol

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// FuzzDecode feeds the signaling decoder what a hostile peer could send: it
// must not panic, and whatever it accepts must encode and decode back to the
// same message (the server re-encodes what it forwards).
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"hello","v":1,"role":"viewer","kind":"browser","stream":"demo"}`,
		`{"type":"hello","v":1,"role":"source","kind":"go","stream":"s","capacity":4,"token":"a.b.c","tracks":[{"id":"video","kind":"video","mimeType":"video/VP8","clockRate":90000}]}`,
		`{"type":"signal","peer":"p1","signal":{"kind":"offer","sdp":"v=0\r\n"}}`,
		`{"type":"signal","peer":"p1","signal":{"kind":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0"}}}`,
		`{"type":"stats","stats":{"bytesReceived":1,"jitterMs":1.5,"children":2}}`,
		`{"type":"live","peer":"p1"}`,
		`{"type":"leave","reason":"bye"}`,
		`{"type":"hello","v":1,"role":"viewer","kind":"go","stream":"x","capacity":1000}`,
		`{"type":"hello"}{"type":"leave"}`,
		`{"type":"hello","v":1,"role":"relay","kind":"go","stream":"s","capacity":2,"resume":"r1.s.p1.1.1999999999.mac"}`,
		`{"type":"welcome","id":"p1","stream":"s","resumed":true,"peer":"p0","depth":1,"children":["p2"],"held":["p3"],"resume":"r1.s.p1.2.1.m","grace":10000}`,
		`{"type":"resume","resume":"r1.s.p1.2.1.m"}`,
		`{"type":"hello","v":1,"role":"viewer","kind":"browser","stream":"s","noVerify":true}`,
		`{"type":"attach","peer":"p2","strip":true}`,
		`{"type":"standby","peer":"p2","strip":true}`,
		`{"type":"stats","stats":{"jitterMs":1e400}}`,
		`{"type":"\u0000"}`,
		`[` + strings.Repeat(`[`, 1000),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			return
		}
		out, err := Encode(m)
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", data, err)
		}
		back, err := Decode(out)
		if err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", out, err)
		}
		if !reflect.DeepEqual(normalize(m), normalize(back)) {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", m, back)
		}
	})
}

// normalize drops differences JSON cannot carry: the whitespace of a raw
// candidate (encoding compacts it), an empty candidate and a missing one.
func normalize(m *Message) Message {
	c := *m
	if c.Sig != nil {
		s := *c.Sig
		var b bytes.Buffer
		if len(s.Candidate) != 0 && json.Compact(&b, s.Candidate) == nil {
			s.Candidate = b.Bytes()
		}
		if len(s.Candidate) == 0 {
			s.Candidate = nil
		}
		c.Sig = &s
	}
	return c
}
