package load

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/pion/webrtc/v4"
)

// errNotSDP means a signal that should carry SDP does not.
var errNotSDP = errors.New("load: not an SDP description")

// Simulated peers answer real offers without a PeerConnection each. The
// first offer of each shape (the offer with everything that differs per
// connection taken out: ICE credentials, DTLS fingerprint, candidates,
// SSRCs, msids, the origin line) is answered once by a real pion
// PeerConnection; every later offer of that shape gets that answer with
// fresh ICE credentials and a fresh fingerprint, a few microseconds of
// string work. pion, on the parent, accepts it as it accepted the first:
// the answer names the same mids, codecs and directions (TestAnswer* in
// sdp_test.go hold this against a real mesh parent). ICE never completes,
// since nobody listens behind those credentials and the answer carries no
// candidates; the parent's connection to a simulated child stays in
// checking until it fails, which costs the parent a PeerConnection, and is
// why simulated viewers sit below simulated relays (see Config.RelayShare).

// perConnection are the SDP attributes that differ per connection and are
// left out of an offer's shape.
var perConnection = []string{
	"o=", "a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:", "a=candidate:",
	"a=end-of-candidates", "a=ssrc:", "a=ssrc-group:", "a=msid:",
}

func perConnectionLine(line string) bool {
	for _, p := range perConnection {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

// shape is an offer's key in the answer cache.
func shape(offer string) string {
	var b strings.Builder
	b.Grow(len(offer))
	for line := range strings.SplitSeq(offer, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" || perConnectionLine(line) {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// answers caches one real answer per offer shape.
type answers struct {
	mu     sync.Mutex
	shapes map[string]*answerEntry
	built  int // real answers made, for the report
}

type answerEntry struct {
	once     sync.Once
	template string
	err      error
}

func newAnswers() *answers { return &answers{shapes: make(map[string]*answerEntry)} }

// answer returns a valid answer to offer with credentials of its own.
func (a *answers) answer(offer string) (string, error) {
	if !strings.HasPrefix(offer, "v=0") {
		return "", errNotSDP
	}
	key := shape(offer)
	a.mu.Lock()
	e := a.shapes[key]
	if e == nil {
		e = &answerEntry{}
		a.shapes[key] = e
	}
	a.mu.Unlock()
	e.once.Do(func() {
		e.template, e.err = realAnswer(offer)
		a.mu.Lock()
		a.built++
		a.mu.Unlock()
	})
	if e.err != nil {
		return "", e.err
	}
	return withCredentials(e.template, false), nil
}

// realAnswer answers offer with a pion PeerConnection that never gathers.
func realAnswer(offer string) (string, error) {
	var m webrtc.MediaEngine
	if err := m.RegisterDefaultCodecs(); err != nil {
		return "", err
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(&m))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", err
	}
	defer func() { _ = pc.Close() }()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("load: parent's offer: %w", err)
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("load: answer: %w", err)
	}
	return ans.SDP, nil
}

// withCredentials copies desc with fresh ICE credentials and fingerprint;
// dropCandidates also leaves out its candidates (a simulated relay passes
// its parent's offer on as its own).
func withCredentials(desc string, dropCandidates bool) string {
	ufrag, pwd, fp := randToken(8), randToken(16), fingerprint()
	var b strings.Builder
	b.Grow(len(desc) + 64)
	for line := range strings.SplitSeq(desc, "\n") {
		line = strings.TrimSuffix(line, "\r")
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "a=ice-ufrag:"):
			line = "a=ice-ufrag:" + ufrag
		case strings.HasPrefix(line, "a=ice-pwd:"):
			line = "a=ice-pwd:" + pwd
		case strings.HasPrefix(line, "a=fingerprint:"):
			line = "a=fingerprint:sha-256 " + fp
		case dropCandidates && (strings.HasPrefix(line, "a=candidate:") || line == "a=end-of-candidates"):
			continue
		}
		b.WriteString(line)
		b.WriteString("\r\n")
	}
	return b.String()
}

// randToken is n random bytes in hex: ICE wants at least 4 characters of
// ufrag and 22 of password.
func randToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// fingerprint is a random SHA-256 fingerprint, AB:CD:… (the parent only
// compares it with a DTLS certificate that never comes).
func fingerprint() string {
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	const digits = "0123456789ABCDEF"
	out := make([]byte, 0, 95)
	for i, c := range raw {
		if i > 0 {
			out = append(out, ':')
		}
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
