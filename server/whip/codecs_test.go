package whip

import (
	"errors"
	"strings"
	"testing"
)

func TestParseOfferPicksWhatTheTreeCarries(t *testing.T) {
	withVideo := func(rtpmap, fmtp string) string {
		s := strings.Replace(obsOffer, "a=rtpmap:96 H264/90000", "a=rtpmap:96 "+rtpmap, 1)
		return strings.Replace(s, "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1", "a=fmtp:96 "+fmtp, 1)
	}
	for _, tc := range []struct {
		name, offer string
		video       string // MIME type picked for video, "" when refused
		err         error
	}{
		{"OBS", obsOffer, "video/H264", nil},
		{"constrained high", withVideo("H264/90000", "profile-level-id=640c1f;packetization-mode=1"), "video/H264", nil},
		{"main", withVideo("H264/90000", "profile-level-id=4d001f;packetization-mode=1"), "video/H264", nil},
		{"baseline", withVideo("H264/90000", "profile-level-id=42001f;packetization-mode=1"), "video/H264", nil},
		{"VP8", withVideo("VP8/90000", ""), "video/VP8", nil},
		{"packetization-mode 0", withVideo("H264/90000", "profile-level-id=42e01f;packetization-mode=0"), "", errNoCodec},
		{"no packetization-mode", withVideo("H264/90000", "profile-level-id=42e01f"), "", errNoCodec},
		{"high 4:4:4", withVideo("H264/90000", "profile-level-id=f4001f;packetization-mode=1"), "", errNoCodec},
		{"H265", withVideo("H265/90000", ""), "", errNoCodec},
		{"AV1", withVideo("AV1/90000", ""), "", errNoCodec},
		{"recvonly", strings.ReplaceAll(obsOffer, "a=sendonly", "a=recvonly"), "", errBadSDP},
		{"no mid", strings.Replace(obsOffer, "a=mid:1\r\n", "", 1), "", errBadSDP},
		{"not SDP", "hello", "", errBadSDP},
	} {
		_, media, err := parseOffer(tc.offer, true)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		if len(media) != 2 || media[0].kind != "audio" || media[0].codec.MimeType != "audio/opus" || media[1].codec.MimeType != tc.video {
			t.Errorf("%s: picked %+v", tc.name, media)
		}
		if tc.name == "OBS" {
			if c := media[1].answerCodec(); c.PayloadType != 96 || !strings.Contains(c.SDPFmtpLine, "profile-level-id=42e01f") || media[1].mid != "1" {
				t.Errorf("OBS: the answer would name %+v (mid %q); want the offer's payload type 96 and format", c, media[1].mid)
			}
		}
	}
}

func TestParseFragment(t *testing.T) {
	f, err := parseFragment(sampleFragment)
	if err != nil || f.ufrag != "EsAw" || f.pwd == "" || len(f.candidates) != 1 || !f.end {
		t.Fatalf("%+v, %v", f, err)
	}
	c := f.candidates[0]
	if c.SDPMid == nil || *c.SDPMid != "0" || c.SDPMLineIndex == nil || *c.SDPMLineIndex != 0 || !strings.HasPrefix(c.Candidate, "candidate:1387637174 ") {
		t.Errorf("candidate %+v", c)
	}
	for _, bad := range []string{"hello", "a=ice-pwd:x\r\n", "x\r\n", strings.Repeat("a=candidate:1 1 udp 1 192.0.2.1 1 typ host\r\n", maxFragCandidates+1)} {
		if _, err := parseFragment(bad); !errors.Is(err, errBadFragment) {
			t.Errorf("%.30q: %v, want errBadFragment", bad, err)
		}
	}
	restart := restartOffer(obsOffer, fragment{ufrag: "new", pwd: "newpwd"})
	if !strings.Contains(restart, "a=ice-ufrag:new\r\n") || !strings.Contains(restart, "a=ice-pwd:newpwd\r\n") ||
		strings.Contains(restart, "PLvb") || strings.Contains(restart, "a=candidate:") {
		t.Errorf("restart offer:\n%s", restart)
	}
	ans := answerFragment("v=0\r\nm=audio 9 X 111\r\na=mid:0\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\na=candidate:1 1 udp 1 192.0.2.1 1 typ host\r\nm=video 9 X 96\r\na=mid:1\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n")
	if strings.Count(ans, "a=ice-ufrag:u") != 1 || !strings.HasPrefix(ans, "a=ice-ufrag:u\r\na=ice-pwd:p\r\n") || !strings.Contains(ans, "a=mid:1") {
		t.Errorf("answer fragment:\n%s", ans)
	}
}
