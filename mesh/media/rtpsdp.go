package media

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ErrSDP means an SDP file does not describe an RTP stream this package can
// take in.
var ErrSDP = errors.New("media: SDP")

// maxSDPSize bounds an SDP file: ffmpeg's for two streams is ~400 bytes.
const maxSDPSize = 64 << 10

// RTPStream is one media section of an SDP file such as ffmpeg writes with
// -sdp_file: where the stream is sent, with what payload type and codec.
type RTPStream struct {
	Codec       Codec  // the package's descriptor of the codec (its own payload type)
	PayloadType uint8  // the payload type the sender uses
	Addr        string // host:port the sender sends to, where to listen
}

// ParseSDP reads the media sections of an SDP description (RFC 8866) for
// plain RTP: m= lines with their port and payload type, the a=rtpmap that
// names the codec, c= (of the section or the session) for the address,
// 127.0.0.1 without one. Sections of other codecs are an error: the tree
// carries VP8, H264 and Opus only.
func ParseSDP(b []byte) ([]RTPStream, error) {
	if len(b) > maxSDPSize {
		return nil, fmt.Errorf("%w: %d bytes, over %d", ErrSDP, len(b), maxSDPSize)
	}
	type section struct {
		kind, host string
		port       int
		pt         int
		rtpmap     string
	}
	var (
		sessionHost = "127.0.0.1"
		secs        []*section
		cur         *section
	)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		key, val, ok := strings.Cut(line, "=")
		if !ok || len(key) != 1 {
			continue
		}
		switch key {
		case "m":
			f := strings.Fields(val)
			if len(f) < 4 {
				return nil, fmt.Errorf("%w: media line %q", ErrSDP, line)
			}
			port, err := strconv.Atoi(f[1])
			if err != nil || port <= 0 || port > 65535 {
				return nil, fmt.Errorf("%w: port in %q", ErrSDP, line)
			}
			if !strings.HasPrefix(f[2], "RTP/") {
				return nil, fmt.Errorf("%w: transport %s, want RTP/AVP", ErrSDP, f[2])
			}
			pt, err := strconv.Atoi(f[3])
			if err != nil || pt < 0 || pt > 127 {
				return nil, fmt.Errorf("%w: payload type in %q", ErrSDP, line)
			}
			cur = &section{kind: f[0], port: port, pt: pt}
			secs = append(secs, cur)
		case "c":
			f := strings.Fields(val)
			if len(f) < 3 {
				return nil, fmt.Errorf("%w: connection line %q", ErrSDP, line)
			}
			host, _, _ := strings.Cut(f[2], "/") // multicast TTL
			if cur != nil {
				cur.host = host
			} else {
				sessionHost = host
			}
		case "a":
			attr, rest, _ := strings.Cut(val, ":")
			if attr != "rtpmap" || cur == nil {
				continue
			}
			ptStr, enc, _ := strings.Cut(rest, " ")
			if pt, err := strconv.Atoi(ptStr); err == nil && pt == cur.pt {
				cur.rtpmap = strings.TrimSpace(enc)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSDP, err)
	}
	var out []RTPStream
	for _, s := range secs {
		c, err := codecFromRTPMap(s.rtpmap, s.pt)
		if err != nil {
			return nil, err
		}
		host := s.host
		if host == "" {
			host = sessionHost
		}
		out = append(out, RTPStream{Codec: c, PayloadType: uint8(s.pt), Addr: net.JoinHostPort(host, strconv.Itoa(s.port))})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no media section", ErrSDP)
	}
	return out, nil
}

// codecFromRTPMap maps "H264/90000" (or a static payload type without an
// rtpmap) to the package's descriptor.
func codecFromRTPMap(rtpmap string, pt int) (Codec, error) {
	if rtpmap == "" {
		return Codec{}, fmt.Errorf("%w: payload type %d without a=rtpmap: %w", ErrSDP, pt, ErrUnsupportedCodec)
	}
	name, rate, _ := strings.Cut(rtpmap, "/")
	rate, _, _ = strings.Cut(rate, "/")
	c, ok := LookupCodec(name)
	if !ok {
		c, ok = LookupCodec("video/" + name)
	}
	if !ok {
		c, ok = LookupCodec("audio/" + name)
	}
	if !ok {
		return Codec{}, fmt.Errorf("%w: %s: %w (want VP8, H264 or opus)", ErrSDP, rtpmap, ErrUnsupportedCodec)
	}
	if r, err := strconv.Atoi(rate); err != nil || uint32(r) != c.ClockRate {
		return Codec{}, fmt.Errorf("%w: %s: clock rate, want %d", ErrSDP, rtpmap, c.ClockRate)
	}
	return c, nil
}
