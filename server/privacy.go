package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/pion/ice/v4"

	"canopy/mesh/protocol"
)

// Private mode. In a P2P tree every parent learns its children's network
// addresses from their ICE candidates, and every child its parent's. A
// viewer in private mode connects only through TURN relay candidates (ICE
// transport policy "relay"): its parent sees the relay's address, never
// the viewer's. Such a viewer feeds no children (relaying would hand its
// address to them), and it needs a TURN server to reach anyone at all.
//
// The server does not take the viewer's word for any of it: it clamps the
// viewer's capacity to 0 at hello and at every capacity message, and it
// forwards from a private peer only relay candidates, with their related
// address (the viewer's own address as the TURN server saw it) blanked, in
// trickled candidates and in SDP alike. A browser that ignored the policy
// would still connect (its checks would then come from its own address,
// which only it can prevent), but no address of its would travel through
// the server.

// errPrivateNeedsTURN refuses a private hello on a server that hands out
// no TURN server: a relay-only viewer could connect to nobody.
var errPrivateNeedsTURN = errors.New("private mode needs TURN on this server")

// PrivacyConfig makes private mode the default (-privacy).
type PrivacyConfig struct {
	// All makes every viewer private, whatever its hello says.
	All bool
	// Streams makes the viewers of these streams private.
	Streams []string
}

// parsePrivacy reads -privacy: "" (viewers choose), "relay" (every viewer
// private) or "relay:a,b" (the viewers of streams a and b).
func parsePrivacy(s string) (PrivacyConfig, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return PrivacyConfig{}, nil
	}
	mode, list, hasList := strings.Cut(s, ":")
	if mode != "relay" {
		return PrivacyConfig{}, fmt.Errorf("-privacy: want relay or relay:stream,…, got %q", s)
	}
	if !hasList {
		return PrivacyConfig{All: true}, nil
	}
	var pc PrivacyConfig
	for _, st := range strings.Split(list, ",") {
		if st = strings.TrimSpace(st); st == "" {
			continue
		}
		if !protocol.ValidID(st) {
			return PrivacyConfig{}, fmt.Errorf("-privacy: bad stream name %q", st)
		}
		pc.Streams = append(pc.Streams, st)
	}
	if len(pc.Streams) == 0 {
		return PrivacyConfig{}, fmt.Errorf("-privacy: relay: names no stream")
	}
	return pc, nil
}

// enabled reports whether some viewers are private by default.
func (pc PrivacyConfig) enabled() bool { return pc.All || len(pc.Streams) > 0 }

// privacyPolicy is the server's private-mode decision; no mutable state.
type privacyPolicy struct {
	all     bool
	streams map[string]bool
	turn    bool // the server hands out TURN credentials
}

func newPrivacyPolicy(cfg Config) *privacyPolicy {
	p := &privacyPolicy{all: cfg.Privacy.All, streams: make(map[string]bool), turn: cfg.TURN != nil}
	for _, s := range cfg.Privacy.Streams {
		p.streams[s] = true
	}
	return p
}

// admit applies private mode to an admitted hello: a viewer of a stream
// that is private by default becomes private; a private viewer is clamped
// to no children, or refused when there is no TURN to connect through.
func (pp *privacyPolicy) admit(p *peerConn, hello *protocol.Message) error {
	if hello.Role == protocol.RoleViewer && (pp.all || pp.streams[hello.Stream]) {
		hello.Private = true
	}
	if !hello.Private {
		return nil
	}
	if !pp.turn {
		return errPrivateNeedsTURN
	}
	hello.Capacity = 0
	p.private = true
	return nil
}

// privateCapacity is the capacity p may have: none in private mode.
func privateCapacity(p *peerConn, capacity int) int {
	if p.private {
		return 0
	}
	return capacity
}

// privateSignal is what the server forwards of a signal from p: the signal
// itself, or for a private peer its relay candidates only (nil when
// nothing is left to forward). Called from coordinator.signal.
func privateSignal(p *peerConn, sig *protocol.Signal) *protocol.Signal {
	if !p.private || sig == nil {
		return sig
	}
	switch sig.Kind {
	case protocol.SignalCandidate:
		raw, ok := relayOnlyCandidate(sig.Candidate)
		if !ok {
			return nil
		}
		return &protocol.Signal{Kind: sig.Kind, Candidate: raw}
	case protocol.SignalOffer, protocol.SignalAnswer:
		sdp := relayOnlySDP(sig.SDP)
		if len(sdp) > protocol.MaxSDPLength {
			return nil
		}
		return &protocol.Signal{Kind: sig.Kind, SDP: sdp}
	}
	return nil
}

// relayOnlyCandidate keeps a trickled RTCIceCandidateInit if it is a relay
// candidate (its related address blanked) or the end-of-candidates marker
// (an empty candidate, which names no address).
func relayOnlyCandidate(raw json.RawMessage) (json.RawMessage, bool) {
	var init map[string]json.RawMessage
	if err := json.Unmarshal(raw, &init); err != nil {
		return nil, false
	}
	var line string
	if err := json.Unmarshal(init["candidate"], &line); err != nil {
		return nil, false
	}
	if strings.TrimSpace(line) == "" {
		return raw, true
	}
	kept, ok := relayCandidate(line)
	if !ok {
		return nil, false
	}
	enc, err := json.Marshal(kept)
	if err != nil {
		return nil, false
	}
	init["candidate"] = enc
	out, err := json.Marshal(init)
	if err != nil || len(out) > protocol.MaxCandidateLength {
		return nil, false
	}
	return out, true
}

// relayCandidate returns a candidate line ("candidate:…", with or without
// "a=") if it parses and is of type relay, with its raddr and rport set to
// 0.0.0.0 and 0: a relay candidate's related address is the client's own
// address as the TURN server saw it (pion, and browsers that do not redact
// it, put it there), the one thing private mode hides. ICE never uses it.
func relayCandidate(line string) (string, bool) {
	body := strings.TrimPrefix(strings.TrimSpace(line), "a=")
	c, err := ice.UnmarshalCandidate(body)
	if err != nil || c.Type() != ice.CandidateTypeRelay {
		return "", false
	}
	f := strings.Fields(strings.TrimSpace(line))
	// foundation component transport priority address port "typ" type,
	// then the extensions, related address among them.
	for i := 8; i+1 < len(f); i++ {
		switch f[i] {
		case "raddr":
			f[i+1] = "0.0.0.0"
		case "rport":
			f[i+1] = "0"
		}
	}
	return strings.Join(f, " "), true
}

// relayOnlySDP removes from a description every address that is not a
// relay candidate's: a=candidate lines of other types are dropped, relay
// ones lose their related address, and the default connection addresses
// (c=, a=rtcp, the origin's o=) become 0.0.0.0 unless they are a relay
// candidate's (then the m= port, the default candidate's, is kept; else
// it becomes 9, the port of "no default candidate yet", RFC 8840).
func relayOnlySDP(sdp string) string {
	lines := strings.Split(sdp, "\n")
	relays := make(map[string]bool)
	for _, l := range lines {
		l = strings.TrimSuffix(l, "\r")
		if strings.HasPrefix(l, "a=candidate:") {
			if c, err := ice.UnmarshalCandidate(strings.TrimPrefix(l, "a=")); err == nil && c.Type() == ice.CandidateTypeRelay {
				relays[canonAddr(c.Address())] = true
			}
		}
	}
	known := func(addr string) bool {
		a := canonAddr(addr)
		return relays[a] || a == "0.0.0.0" || a == "::"
	}
	out := make([]string, 0, len(lines))
	mLine := -1 // index in out of the current media section's m= line
	for _, raw := range lines {
		l := strings.TrimSuffix(raw, "\r")
		switch {
		case strings.HasPrefix(l, "m="):
			mLine = len(out)
		case strings.HasPrefix(l, "a=candidate:"):
			kept, ok := relayCandidate(l)
			if !ok {
				continue
			}
			l = kept
		case strings.HasPrefix(l, "a=remote-candidates"):
			continue // the other side's addresses, as this peer saw them
		case strings.HasPrefix(l, "c="):
			if f := strings.Fields(l); len(f) == 3 && !known(strings.Split(f[2], "/")[0]) {
				l = "c=IN IP4 0.0.0.0"
				if mLine >= 0 {
					out[mLine] = withPort(out[mLine], "9")
				}
			}
		case strings.HasPrefix(l, "a=rtcp:"):
			if f := strings.Fields(l); len(f) == 4 && !known(f[3]) {
				l = "a=rtcp:9 IN IP4 0.0.0.0"
			}
		case strings.HasPrefix(l, "o="):
			if f := strings.Fields(l); len(f) == 6 && !known(f[5]) && f[5] != "127.0.0.1" {
				f[4], f[5] = "IP4", "0.0.0.0"
				l = strings.Join(f, " ")
			}
		}
		if strings.HasSuffix(raw, "\r") {
			l += "\r"
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// withPort replaces the port of an m= line, keeping its line end.
func withPort(m, port string) string {
	f := strings.Fields(m)
	if len(f) < 2 {
		return m
	}
	f[1] = port
	out := strings.Join(f, " ")
	if strings.HasSuffix(m, "\r") {
		out += "\r"
	}
	return out
}

// canonAddr spells an IP address one way, so an SDP's c= line and its
// candidates compare equal; anything else is returned as it is.
func canonAddr(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String()
	}
	return s
}
