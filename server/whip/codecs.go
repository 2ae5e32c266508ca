package whip

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"canopy/mesh/peer"
)

// maxTracks bounds the media sections of an offer Canopy carries: a
// stream is a video and an audio track, a second of each at most.
const maxTracks = 4

// h264Profiles are the H264 profiles (profile_idc and constraint byte of
// profile-level-id; the level may be anything) a publisher may send: what
// OBS and browsers offer, and every browser decodes: constrained baseline
// (42e0), baseline (4200), main (4d00), constrained high (640c), high (6400).
var h264Profiles = []string{"42e0", "4200", "4d00", "640c", "6400"}

// ingestCodecs are the codecs a publisher's answer may use. H264 only with
// packetization-mode 1 (FU-A fragments, what every WebRTC encoder sends).
// No RTX: a publisher then resends lost packets on the media SSRC, which
// the ingest passes on like any other.
var ingestCodecs = func() []webrtc.RTPCodecParameters {
	fb := peer.VideoFeedback()
	list := []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: fb}, PayloadType: 96},
	}
	for i, p := range h264Profiles {
		list = append(list, webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeH264, ClockRate: 90000, RTCPFeedback: fb,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + p + "1f",
		}, PayloadType: webrtc.PayloadType(100 + i)})
	}
	return list
}()

// offered is one media section of an offer and the codec Canopy takes
// from it.
type offered struct {
	mid   string
	kind  string // audio or video
	codec webrtc.RTPCodecParameters
	// fmtp is the offer's own format parameters for the codec: what the
	// stream's track declares to the tree.
	fmtp string
	pt   uint8 // the offer's payload type for it
}

// answerCodec is the codec as the answer must name it: the offer's payload
// type and format parameters (pion answers with its own numbers for
// codecs it registered under others, which the publisher would not know).
func (o offered) answerCodec() webrtc.RTPCodecParameters {
	c := o.codec
	c.PayloadType = webrtc.PayloadType(o.pt)
	c.SDPFmtpLine = o.fmtp
	return c
}

// format describes one offered format.
type format struct {
	pt              uint8
	name            string
	clock, channels uint32
	fmtp            string
}

// parseOffer checks an offer and picks, for each audio and video section,
// the first format the tree can carry. wantSend says whether the client
// must send (WHIP) or receive (WHEP).
func parseOffer(raw string, wantSend bool) (*sdp.SessionDescription, []offered, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(raw); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errBadSDP, err)
	}
	var out []offered
	for _, md := range sd.MediaDescriptions {
		kind := md.MediaName.Media
		if kind != "audio" && kind != "video" {
			continue
		}
		if md.MediaName.Port.Value == 0 {
			continue // rejected by the offerer itself
		}
		if len(out) == maxTracks {
			return nil, nil, fmt.Errorf("%w: more than %d media sections", errBadSDP, maxTracks)
		}
		dir := direction(md)
		if wantSend && dir != "sendonly" && dir != "sendrecv" {
			return nil, nil, fmt.Errorf("%w: a WHIP offer sends media; its %s section is %s", errBadSDP, kind, dir)
		}
		if !wantSend && dir != "recvonly" && dir != "sendrecv" {
			return nil, nil, fmt.Errorf("%w: a WHEP offer receives media; its %s section is %s", errBadSDP, kind, dir)
		}
		mid, _ := md.Attribute("mid")
		if mid == "" {
			return nil, nil, fmt.Errorf("%w: the %s section has no a=mid", errBadSDP, kind)
		}
		formats := formatsOf(md)
		o, ok := pick(kind, formats)
		if !ok {
			names := make([]string, 0, len(formats))
			for _, f := range formats {
				names = append(names, fmt.Sprintf("%s/%d %s", f.name, f.clock, f.fmtp))
			}
			return nil, nil, fmt.Errorf("%w: the %s section offers %s; Canopy carries H264 (packetization-mode=1, profiles 42e0, 4200, 4d00, 640c, 6400), VP8 and Opus",
				errNoCodec, kind, strings.Join(names, ", "))
		}
		o.mid = mid
		out = append(out, o)
	}
	if len(out) == 0 {
		return nil, nil, fmt.Errorf("%w: no audio or video section", errBadSDP)
	}
	return &sd, out, nil
}

func direction(md *sdp.MediaDescription) string {
	for _, d := range []string{"sendonly", "recvonly", "sendrecv", "inactive"} {
		if _, ok := md.Attribute(d); ok {
			return d
		}
	}
	return "sendrecv"
}

// formatsOf lists a section's formats in the offer's order of preference.
func formatsOf(md *sdp.MediaDescription) []format {
	byPT := map[string]*format{}
	var order []*format
	for _, f := range md.MediaName.Formats {
		pt, err := strconv.ParseUint(f, 10, 7)
		if err != nil || byPT[f] != nil {
			continue
		}
		ff := &format{pt: uint8(pt)}
		byPT[f] = ff
		order = append(order, ff)
	}
	for _, a := range md.Attributes {
		pt, rest, ok := strings.Cut(a.Value, " ")
		f := byPT[pt]
		if !ok || f == nil {
			continue
		}
		switch a.Key {
		case "rtpmap":
			parts := strings.Split(rest, "/")
			f.name = parts[0]
			if len(parts) > 1 {
				c, _ := strconv.ParseUint(parts[1], 10, 32)
				f.clock = uint32(c)
			}
			if len(parts) > 2 {
				c, _ := strconv.ParseUint(parts[2], 10, 8)
				f.channels = uint32(c)
			}
		case "fmtp":
			f.fmtp = rest
		}
	}
	out := make([]format, 0, len(order))
	for _, f := range order {
		if f.name == "" { // static payload types without rtpmap: nothing we carry
			continue
		}
		out = append(out, *f)
	}
	return out
}

// pick returns the first of formats the tree can carry.
func pick(kind string, formats []format) (offered, bool) {
	for _, f := range formats {
		for _, c := range ingestCodecs {
			if !strings.EqualFold("audio/"+f.name, c.MimeType) && !strings.EqualFold("video/"+f.name, c.MimeType) {
				continue
			}
			if !strings.HasPrefix(c.MimeType, kind+"/") || f.clock != c.ClockRate {
				continue
			}
			if c.MimeType == webrtc.MimeTypeH264 && !h264Matches(f.fmtp, c.SDPFmtpLine) {
				continue
			}
			return offered{kind: kind, codec: c, fmtp: f.fmtp, pt: f.pt}, true
		}
	}
	return offered{}, false
}

// h264Matches is RFC 6184's rule as pion applies it: the same
// packetization mode and the same profile (the level may differ).
func h264Matches(offer, ours string) bool {
	pm := func(f string) string { return fmtpValue(f, "packetization-mode") }
	prof := func(f string) string {
		v := fmtpValue(f, "profile-level-id")
		if len(v) != 6 {
			return ""
		}
		return v[:4]
	}
	return pm(offer) != "" && pm(offer) == pm(ours) && prof(offer) != "" && prof(offer) == prof(ours)
}

func fmtpValue(fmtp, key string) string {
	for _, kv := range strings.Split(fmtp, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok && strings.EqualFold(k, key) {
			return strings.ToLower(strings.TrimSpace(v))
		}
	}
	return ""
}
