package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"canopy/mesh/media"
	"canopy/mesh/peer"
)

// obsH264Fmtp is the H264 format OBS 30's WHIP output offers.
const obsH264Fmtp = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"

// whipClient publishes like OBS 30: one sendonly audio (Opus) and one
// sendonly video (H264, packetization-mode 1) section, no trickle (the
// offer is sent once gathering is complete), then RTP from a file.
type whipClient struct {
	t      testing.TB
	pc     *webrtc.PeerConnection
	video  *webrtc.TrackLocalStaticRTP
	audio  *webrtc.TrackLocalStaticRTP
	src    *testSource // only its sent hashes: what viewers check frames against
	cancel context.CancelFunc
	done   chan struct{}

	location, etag string
	resp           *http.Response
	posted         time.Time

	// obsStyle rewrites the offer as OBS 30 writes it (obsOffer).
	obsStyle bool
	// captureClock, if set, makes the publisher stamp each video frame's
	// capture time (abs-capture-time, as browsers do) from this clock.
	captureClock func() time.Time
	videoSender  *webrtc.RTPSender
	// sentFrame, if set, is told each video frame's RTP timestamp and
	// capture time as it is sent (glass-to-glass figures match on it).
	sentFrame func(rtpTimestamp uint32, captured time.Time)

	mu    sync.Mutex
	plis  []time.Time // keyframe requests received
	nacks int
}

// newWHIPClient builds the publisher's PeerConnection; codecs defaults to
// what OBS offers.
func newWHIPClient(t testing.TB, codecs ...webrtc.RTPCodecParameters) *whipClient {
	t.Helper()
	obs := len(codecs) == 0
	if obs {
		codecs = []webrtc.RTPCodecParameters{
			{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111},
			{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: obsH264Fmtp,
				RTCPFeedback: []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}}, PayloadType: 96},
		}
	}
	me := &webrtc.MediaEngine{}
	for _, c := range codecs {
		kind := webrtc.RTPCodecTypeVideo
		if strings.HasPrefix(c.MimeType, "audio/") {
			kind = webrtc.RTPCodecTypeAudio
		}
		if err := me.RegisterCodec(c, kind); err != nil {
			t.Fatal(err)
		}
	}
	if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: peer.AbsCaptureTimeURI}, webrtc.RTPCodecTypeVideo); err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, reg); err != nil {
		t.Fatal(err)
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(n string) bool { return n == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	c := &whipClient{t: t, pc: pc, src: &testSource{}, done: make(chan struct{}), obsStyle: obs}
	t.Cleanup(c.close)
	for _, codec := range codecs {
		kind := "video"
		if strings.HasPrefix(codec.MimeType, "audio/") {
			kind = "audio"
		}
		if (kind == "video" && c.video != nil) || (kind == "audio" && c.audio != nil) {
			continue
		}
		tr, err := webrtc.NewTrackLocalStaticRTP(codec.RTPCodecCapability, kind, "obs")
		if err != nil {
			t.Fatal(err)
		}
		s, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			t.Fatal(err)
		}
		go c.readRTCP(s.Sender())
		if kind == "video" {
			c.video, c.videoSender = tr, s.Sender()
		} else {
			c.audio = tr
		}
	}
	return c
}

// readRTCP records the keyframe requests and NACKs the server sends the
// publisher.
func (c *whipClient) readRTCP(s *webrtc.RTPSender) {
	buf := make([]byte, 1500)
	for {
		n, _, err := s.Read(buf)
		if err != nil {
			return
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		for _, p := range pkts {
			c.mu.Lock()
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				c.plis = append(c.plis, time.Now())
			case *rtcp.TransportLayerNack:
				c.nacks++
			}
			c.mu.Unlock()
		}
	}
}

// rtcpSeen returns the times of the keyframe requests and the number of
// NACKs the publisher received.
func (c *whipClient) rtcpSeen() ([]time.Time, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.plis...), c.nacks
}

// offer is the complete offer, every candidate in it.
func (c *whipClient) offer() string {
	c.t.Helper()
	o, err := c.pc.CreateOffer(nil)
	if err != nil {
		c.t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(o); err != nil {
		c.t.Fatal(err)
	}
	<-gathered
	if c.obsStyle {
		return obsOffer(c.pc.LocalDescription().SDP)
	}
	return c.pc.LocalDescription().SDP
}

// obsOffer rewrites a pion offer the way OBS 30's WHIP output (libdatachannel)
// writes its own: ICE credentials and the fingerprint at session level,
// ice2 and trickle in ice-options though it never trickles, no header
// extensions, and OBS's own format parameters.
func obsOffer(sdp string) string {
	var session, media []string
	var hoisted []string
	seen := map[string]bool{}
	inMedia := false
	for _, l := range strings.Split(strings.TrimRight(sdp, "\r\n"), "\r\n") {
		switch {
		case strings.HasPrefix(l, "m="):
			inMedia = true
		case strings.HasPrefix(l, "o="):
			l = "o=rtc 3767197920 0 IN IP4 127.0.0.1"
		case strings.HasPrefix(l, "a=extmap"), strings.HasPrefix(l, "a=ice-options"), l == "a=cryptex":
			continue
		case strings.HasPrefix(l, "a=ice-ufrag:"), strings.HasPrefix(l, "a=ice-pwd:"), strings.HasPrefix(l, "a=fingerprint:"):
			key, _, _ := strings.Cut(l, ":")
			if !seen[key] {
				seen[key] = true
				hoisted = append(hoisted, l)
			}
			continue
		case strings.HasPrefix(l, "a=fmtp:") && strings.Contains(l, "packetization-mode=1"):
			pt, _, _ := strings.Cut(strings.TrimPrefix(l, "a=fmtp:"), " ")
			l = "a=fmtp:" + pt + " profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1"
		case strings.HasPrefix(l, "a=fmtp:111 "):
			l = "a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1"
		}
		if inMedia {
			media = append(media, l)
		} else {
			session = append(session, l)
		}
	}
	session = append(session, hoisted...)
	session = append(session, "a=ice-options:ice2,trickle")
	return strings.Join(append(session, media...), "\r\n") + "\r\n"
}

// post sends body to url and returns the response with its body read.
func post(t testing.TB, method, url, contentType, token, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// publish POSTs the offer to base+/whip/stream and applies the answer; it
// returns the response status (the body on failure).
func (c *whipClient) publish(base, stream, token string) (int, string) {
	c.t.Helper()
	offer := c.offer()
	c.posted = time.Now()
	resp, body := post(c.t, http.MethodPost, base+"/whip/"+stream, "application/sdp", token, offer)
	c.resp = resp
	if resp.StatusCode != http.StatusCreated {
		return resp.StatusCode, body
	}
	c.location, c.etag = base+resp.Header.Get("Location"), resp.Header.Get("ETag")
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
		c.t.Fatalf("apply answer: %v\n%s", err, body)
	}
	return resp.StatusCode, body
}

// play sends the H264 clip (and Opus) in real time until close.
func (c *whipClient) play(videoFile string) {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	readers := map[*webrtc.TrackLocalStaticRTP]media.FrameReader{}
	data, err := os.ReadFile(videoFile)
	if err != nil {
		c.t.Fatal(err)
	}
	vr, err := media.NewH264Reader(bytes.NewReader(data), 30)
	if err != nil {
		c.t.Fatal(err)
	}
	readers[c.video] = vr
	if c.audio != nil {
		adata, err := os.ReadFile("../mesh/media/testdata/short.ogg")
		if err != nil {
			c.t.Fatal(err)
		}
		ar, err := media.NewOggReader(bytes.NewReader(adata))
		if err != nil {
			c.t.Fatal(err)
		}
		readers[c.audio] = ar
	}
	var wg sync.WaitGroup
	for tr, r := range readers {
		pk, err := media.NewPacketizer(r.Codec())
		if err != nil {
			c.t.Fatal(err)
		}
		isVideo := tr == c.video
		var extID uint8
		if isVideo && c.captureClock != nil {
			for _, e := range c.videoSender.GetParameters().HeaderExtensions {
				if e.URI == peer.AbsCaptureTimeURI {
					extID = uint8(e.ID)
				}
			}
			if extID == 0 {
				c.t.Error("abs-capture-time was not negotiated")
			}
		}
		wg.Go(func() {
			_ = media.Play(ctx, r, pk, func(pkts []*rtp.Packet, f media.Frame) error {
				if isVideo {
					c.src.sent.add(f.Data)
				}
				captured := time.Now()
				if c.captureClock != nil {
					captured = c.captureClock()
				}
				if isVideo && c.sentFrame != nil && len(pkts) > 0 {
					c.sentFrame(pkts[0].Timestamp, captured)
				}
				if extID != 0 {
					b, _ := rtp.NewAbsCaptureTimeExtension(captured).Marshal()
					for _, p := range pkts {
						_ = p.SetExtension(extID, b)
					}
				}
				for _, p := range pkts {
					if err := tr.WriteRTP(p); err != nil {
						return err
					}
				}
				return nil
			})
		})
	}
	go func() { wg.Wait(); close(c.done) }()
}

// stop ends the session with DELETE, as OBS does when it stops streaming.
func (c *whipClient) stop() int {
	c.t.Helper()
	resp, _ := post(c.t, http.MethodDelete, c.location, "", "", "")
	c.close()
	return resp.StatusCode
}

func (c *whipClient) close() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
		c.cancel = nil
	}
	_ = c.pc.Close()
}
