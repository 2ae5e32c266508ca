package whip

import (
	"fmt"
	"strings"

	"github.com/pion/webrtc/v4"
)

// Bounds of a trickle fragment: a client gathers a handful of candidates
// per network interface; more is not a client, and a line longer than an
// SDP line may be is not SDP.
const (
	maxFragCandidates = 64
	maxFragLine       = 1024
)

// fragment is an application/trickle-ice-sdpfrag body (RFC 8840): ICE
// credentials, then candidates grouped by media section. A trickle may
// name its ICE session by ufrag alone; an ICE restart brings both.
type fragment struct {
	ufrag, pwd string
	candidates []webrtc.ICECandidateInit
	end        bool // a=end-of-candidates
}

// parseFragment reads a fragment. Lines other than the ICE attributes, m=
// and a=mid are ignored, as RFC 8840 allows; anything that is not an SDP
// line at all is an error.
func parseFragment(body string) (fragment, error) {
	var f fragment
	mline := -1
	mid := ""
	for _, line := range strings.Split(body, "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" {
			continue
		}
		if len(line) > maxFragLine {
			return f, fmt.Errorf("%w: a line of %d bytes", errBadFragment, len(line))
		}
		if len(line) < 2 || line[1] != '=' || line[0] < 'a' || line[0] > 'z' {
			return f, fmt.Errorf("%w: %q is not an SDP line", errBadFragment, truncate(line))
		}
		key, val := line[:2], line[2:]
		switch {
		case key == "m=":
			mline++
			mid = ""
		case key != "a=":
		case strings.HasPrefix(val, "ice-ufrag:"):
			f.ufrag = strings.TrimPrefix(val, "ice-ufrag:")
		case strings.HasPrefix(val, "ice-pwd:"):
			f.pwd = strings.TrimPrefix(val, "ice-pwd:")
		case strings.HasPrefix(val, "mid:"):
			mid = strings.TrimPrefix(val, "mid:")
		case strings.HasPrefix(val, "candidate:"):
			if len(f.candidates) == maxFragCandidates {
				return f, fmt.Errorf("%w: more than %d candidates", errBadFragment, maxFragCandidates)
			}
			c := webrtc.ICECandidateInit{Candidate: val}
			if mid != "" {
				m := mid
				c.SDPMid = &m
			}
			if mline >= 0 {
				i := uint16(min(mline, 1<<15))
				c.SDPMLineIndex = &i
			}
			f.candidates = append(f.candidates, c)
		case val == "end-of-candidates":
			f.end = true
		}
	}
	if f.pwd != "" && f.ufrag == "" {
		return f, fmt.Errorf("%w: ice-pwd without ice-ufrag", errBadFragment)
	}
	return f, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// answerFragment is the fragment a server answers an ICE restart with: its
// new credentials (once: pion uses the same in every media section) and its
// candidates per media section, taken from its new local description.
func answerFragment(sdp string) string {
	var creds, media strings.Builder
	ufrag, pwd := false, false
	for _, line := range strings.Split(sdp, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.HasPrefix(line, "a=ice-ufrag:"):
			if !ufrag {
				creds.WriteString(line + "\r\n")
			}
			ufrag = true
		case strings.HasPrefix(line, "a=ice-pwd:"):
			if !pwd {
				creds.WriteString(line + "\r\n")
			}
			pwd = true
		case strings.HasPrefix(line, "m="), strings.HasPrefix(line, "a=mid:"),
			strings.HasPrefix(line, "a=candidate:"), line == "a=end-of-candidates":
			media.WriteString(line + "\r\n")
		}
	}
	return creds.String() + media.String()
}

// restartOffer is the last offer with the fragment's credentials and
// without its old candidates: what a client's ICE restart amounts to, for
// SetRemoteDescription.
func restartOffer(offer string, f fragment) string {
	var b strings.Builder
	for _, line := range strings.Split(offer, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "a=ice-ufrag:"):
			line = "a=ice-ufrag:" + f.ufrag
		case strings.HasPrefix(line, "a=ice-pwd:"):
			line = "a=ice-pwd:" + f.pwd
		case strings.HasPrefix(line, "a=candidate:"), line == "a=end-of-candidates":
			continue
		}
		b.WriteString(line + "\r\n")
	}
	return b.String()
}
