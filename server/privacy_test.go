package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"canopy/mesh/protocol"
)

// An answer as Chromium writes it once it has gathered: host (an IPv4, an
// IPv6 and an mDNS name), server-reflexive, peer-reflexive and relayed
// candidates, the default candidate's address in c= and a=rtcp, and a
// relay candidate whose related address is the viewer's public address.
const gatheredAnswer = "v=0\r\n" +
	"o=- 4611731400430051336 2 IN IP4 192.168.1.20\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=group:BUNDLE 0 1\r\n" +
	"m=video 50000 UDP/TLS/RTP/SAVPF 96\r\n" +
	"c=IN IP4 203.0.113.7\r\n" +
	"a=rtcp:50000 IN IP4 203.0.113.7\r\n" +
	"a=candidate:1 1 udp 2122260223 192.168.1.20 50000 typ host generation 0\r\n" +
	"a=candidate:2 1 udp 2122262783 2001:db8::20 50001 typ host generation 0\r\n" +
	"a=candidate:3 1 udp 2122194687 4f1c2a3b-1111-2222-3333-444455556666.local 50002 typ host\r\n" +
	"a=candidate:4 1 udp 1686052607 203.0.113.7 61000 typ srflx raddr 192.168.1.20 rport 50000\r\n" +
	"a=candidate:5 1 udp 1853824767 198.51.100.9 61001 typ prflx raddr 192.168.1.20 rport 50000\r\n" +
	"a=candidate:6 1 udp 41885439 198.51.100.200 3478 typ relay raddr 203.0.113.7 rport 61000 generation 0\r\n" +
	"a=remote-candidates:1 192.0.2.5 4000\r\n" +
	"a=ice-ufrag:abcd\r\n" +
	"a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\n" +
	"a=mid:0\r\n" +
	"a=end-of-candidates\r\n" +
	"m=audio 50000 UDP/TLS/RTP/SAVPF 111\r\n" +
	"c=IN IP4 198.51.100.200\r\n" +
	"a=mid:1\r\n"

// The viewer's own addresses in gatheredAnswer: none may survive.
var viewerAddrs = []string{"192.168.1.20", "2001:db8::20", ".local", "203.0.113.7", "198.51.100.9", "192.0.2.5"}

func TestRelayOnlySDP(t *testing.T) {
	lightTest(t)
	got := relayOnlySDP(gatheredAnswer)
	for _, a := range viewerAddrs {
		if strings.Contains(got, a) {
			t.Errorf("the viewer's address %s survives:\n%s", a, got)
		}
	}
	for _, want := range []string{
		"a=candidate:6 1 udp 41885439 198.51.100.200 3478 typ relay raddr 0.0.0.0 rport 0 generation 0\r\n",
		"m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n",
		"o=- 4611731400430051336 2 IN IP4 0.0.0.0\r\n",
		// The audio section's default is the relay's address: kept, port too.
		"m=audio 50000 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 198.51.100.200\r\n",
		"a=ice-ufrag:abcd\r\n", "a=end-of-candidates\r\n", "a=group:BUNDLE 0 1\r\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if n := strings.Count(got, "a=candidate:"); n != 1 {
		t.Errorf("%d candidates left, want the relay one", n)
	}
	if !strings.HasSuffix(got, "a=mid:1\r\n") {
		t.Errorf("the description's line ends changed:\n%q", got[len(got)-20:])
	}
	// A description without candidates (trickle ICE) loses nothing else.
	trickle := "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
	if out := relayOnlySDP(trickle); out != trickle {
		t.Errorf("a trickle description changed:\n%q\n%q", trickle, out)
	}
}

func TestRelayOnlyCandidate(t *testing.T) {
	lightTest(t)
	init := func(c string) json.RawMessage {
		raw, _ := json.Marshal(map[string]any{"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"})
		return raw
	}
	for _, c := range []struct {
		name, in string
		keep     bool
		want     string
	}{
		{"host", "candidate:1 1 udp 2122260223 192.168.1.20 50000 typ host generation 0", false, ""},
		{"mdns host", "candidate:3 1 udp 2122194687 4f1c2a3b.local 50002 typ host", false, ""},
		{"srflx", "candidate:4 1 udp 1686052607 203.0.113.7 61000 typ srflx raddr 192.168.1.20 rport 50000", false, ""},
		{"prflx", "candidate:5 1 udp 1853824767 198.51.100.9 61001 typ prflx raddr 192.168.1.20 rport 50000", false, ""},
		{"tcp host", "candidate:7 1 tcp 1518280447 192.168.1.20 9 typ host tcptype active", false, ""},
		{"garbage", "candidate:what is this", false, ""},
		{"relay", "candidate:6 1 udp 41885439 198.51.100.200 3478 typ relay raddr 203.0.113.7 rport 61000 generation 0",
			true, "candidate:6 1 udp 41885439 198.51.100.200 3478 typ relay raddr 0.0.0.0 rport 0 generation 0"},
		{"relay, a= prefix", "a=candidate:6 1 udp 41885439 198.51.100.200 3478 typ relay raddr 203.0.113.7 rport 61000",
			true, "a=candidate:6 1 udp 41885439 198.51.100.200 3478 typ relay raddr 0.0.0.0 rport 0"},
		{"relay, no related address", "candidate:6 1 udp 41885439 198.51.100.200 3478 typ relay",
			true, "candidate:6 1 udp 41885439 198.51.100.200 3478 typ relay"},
		{"end of candidates", "", true, ""},
	} {
		out, ok := relayOnlyCandidate(init(c.in))
		if ok != c.keep {
			t.Errorf("%s: kept %v, want %v", c.name, ok, c.keep)
			continue
		}
		if !ok {
			continue
		}
		var got map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got["candidate"] != c.want || got["sdpMid"] != "0" || got["usernameFragment"] != "abcd" {
			t.Errorf("%s: forwarded %s", c.name, out)
		}
	}
	for _, bad := range []string{`"a string"`, `{"candidate":5}`, `{}`, `[1]`} {
		if _, ok := relayOnlyCandidate(json.RawMessage(bad)); ok {
			t.Errorf("%s forwarded", bad)
		}
	}
}

func TestParsePrivacy(t *testing.T) {
	lightTest(t)
	for _, c := range []struct {
		in   string
		want PrivacyConfig
		err  bool
	}{
		{"", PrivacyConfig{}, false},
		{"relay", PrivacyConfig{All: true}, false},
		{"relay:a,b", PrivacyConfig{Streams: []string{"a", "b"}}, false},
		{" relay: a , b ", PrivacyConfig{Streams: []string{"a", "b"}}, false},
		{"relay:", PrivacyConfig{}, true},
		{"relay:bad name", PrivacyConfig{}, true},
		{"direct", PrivacyConfig{}, true},
		{"all", PrivacyConfig{}, true},
	} {
		got, err := parsePrivacy(c.in)
		if (err != nil) != c.err || got.All != c.want.All || strings.Join(got.Streams, ",") != strings.Join(c.want.Streams, ",") {
			t.Errorf("parsePrivacy(%q) = %+v, %v; want %+v (error %v)", c.in, got, err, c.want, c.err)
		}
	}
}

// -privacy without any TURN to connect through is refused at start.
func TestPrivacyFlagNeedsTURN(t *testing.T) {
	lightTest(t)
	err := run([]string{"-addr", "127.0.0.1:0", "-demo=false", "-turn=false", "-privacy", "relay"})
	if err == nil || !strings.Contains(err.Error(), "-privacy needs TURN") {
		t.Fatalf("run: %v, want the TURN refusal", err)
	}
	if err := run([]string{"-addr", "127.0.0.1:0", "-demo=false", "-turn=false", "-privacy", "everyone"}); err == nil ||
		!strings.Contains(err.Error(), "-privacy: want relay") {
		t.Fatalf("run with a bad -privacy: %v", err)
	}
}

// A private peer's signal that carries nothing but other candidates is
// not forwarded; a plain peer's passes untouched.
func TestPrivateSignalOnlyForPrivatePeers(t *testing.T) {
	lightTest(t)
	host := &protocol.Signal{Kind: protocol.SignalCandidate,
		Candidate: json.RawMessage(`{"candidate":"candidate:1 1 udp 2122260223 192.168.1.20 50000 typ host"}`)}
	if got := privateSignal(&peerConn{}, host); got != host {
		t.Errorf("a plain peer's candidate was changed: %+v", got)
	}
	if got := privateSignal(&peerConn{private: true}, host); got != nil {
		t.Errorf("a private peer's host candidate forwarded: %s", got.Candidate)
	}
	offer := &protocol.Signal{Kind: protocol.SignalAnswer, SDP: gatheredAnswer}
	if got := privateSignal(&peerConn{}, offer); got.SDP != gatheredAnswer {
		t.Error("a plain peer's description was changed")
	}
	if got := privateSignal(&peerConn{private: true}, offer); got == nil || strings.Contains(got.SDP, "192.168.1.20") {
		t.Errorf("a private peer's description: %+v", got)
	}
	if !errors.Is(errPrivateNeedsTURN, errPrivateNeedsTURN) || errorCode(errPrivateNeedsTURN) != protocol.CodeUnavailable {
		t.Errorf("errPrivateNeedsTURN maps to %q", errorCode(errPrivateNeedsTURN))
	}
}
