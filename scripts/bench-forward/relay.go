//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"canopy/mesh/media"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

var videoTrack = protocol.Track{ID: "video", Kind: "video", MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}

// source writes a 2.5 Mbps synthetic VP8 stream (30 fps, 10 packets of
// 1040 bytes per frame, a keyframe every second) to write, stamping each
// frame's capture time so children can measure delay.
func source(write func(*rtp.Packet) error, count *atomic.Uint64) {
	src := media.SyntheticVP8{Packet: rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 1234, PayloadType: 96}}, Payload: make([]byte, 1040), Packets: 10}
	tick := time.NewTicker(time.Second / 30)
	for i := 0; ; i++ {
		now := time.Now()
		_ = src.WriteFrame(i, func(p *rtp.Packet) error {
			_ = peer.StampCaptureTime(p, now)
			_ = write(p)
			count.Add(1)
			return nil
		})
		<-tick.C
	}
}

func runRelay(variant string, n int) {
	if path := os.Getenv("BENCH_RELAY_PROFILE"); path != "" && strings.HasPrefix(variant, "forwarder") {
		if f, err := os.Create(path); err == nil {
			_ = pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	o := &out{enc: json.NewEncoder(os.Stdout)}
	in := make(chan msg, 1024)
	go lines(os.Stdin, in)
	var srcCount atomic.Uint64
	var sent func() uint64
	handlers := map[string]func(protocol.Signal) error{}
	var f *peer.Forwarder
	switch variant {
	case "forwarder", "forwarder-mux", "forwarder-icemux":
		cfg := peer.Config{LoopbackOnly: true, Logger: logger()}
		switch variant {
		case "forwarder-mux": // one port for every child, batched
			mux, err := peer.NewUDPMuxFromPort(0, ice.UDPMuxFromPortWithLoopback(),
				ice.UDPMuxFromPortWithInterfaceFilter(func(n string) bool { return n == "lo" }),
				ice.UDPMuxFromPortWithNetworks(ice.NetworkTypeUDP4))
			if err != nil {
				fatal(err)
			}
			cfg.UDPMux = mux
		case "forwarder-icemux": // one socket for every child, one datagram per call
			conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				fatal(err)
			}
			cfg.UDPMux = ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: conn})
		}
		a, err := peer.NewAPI(cfg)
		if err != nil {
			fatal(err)
		}
		f = peer.NewForwarder(videoTrack, logger())
		var downs []*peer.Downstream
		defer func() {
			var st peer.SendStats
			if variant == "forwarder-mux" && len(downs) > 0 {
				downs = downs[:1] // they share the mux's sockets and counters
			}
			for _, d := range downs {
				s := d.SendStats()
				st.Datagrams += s.Datagrams
				st.Sends += s.Sends
			}
			if st.Sends > 0 {
				fmt.Fprintf(os.Stderr, "relay: %d datagrams in %d batched sends (%.1f per send)\n", st.Datagrams, st.Sends, float64(st.Datagrams)/float64(st.Sends))
			}
		}()
		for i := range n {
			id := fmt.Sprint("c", i)
			d, err := a.NewDownstream(id, []*peer.Forwarder{f}, func(s protocol.Signal) { o.send(msg{Child: id, Sig: &s}) })
			if err != nil {
				fatal(err)
			}
			handlers[id] = d.HandleSignal
			downs = append(downs, d)
		}
		sent = func() uint64 { return f.Stats().PacketsOut }
		go source(f.WriteRTP, &srcCount)
	case "naive":
		api := naiveAPI()
		track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", peer.StreamID)
		if err != nil {
			fatal(err)
		}
		for i := range n {
			id := fmt.Sprint("c", i)
			h, err := naiveChild(api, track, func(s protocol.Signal) { o.send(msg{Child: id, Sig: &s}) })
			if err != nil {
				fatal(err)
			}
			handlers[id] = h
		}
		sent = func() uint64 { return srcCount.Load() * uint64(n) }
		go source(track.WriteRTP, &srcCount)
	}
	for m := range in {
		dispatch(o, m, handlers, func() *stats { return &stats{CPU: cpuTime(), Sent: sent(), In: srcCount.Load()} })
	}
	if f != nil {
		st := f.Stats()
		fmt.Fprintf(os.Stderr, "relay: forwarder %+v\n", st)
	}
}

func dispatch(o *out, m msg, handlers map[string]func(protocol.Signal) error, st func() *stats) {
	switch {
	case m.Cmd == "mark":
		o.send(msg{Stats: st()})
	case m.Sig != nil:
		if h := handlers[m.Child]; h != nil {
			if err := h(*m.Sig); err != nil {
				fmt.Fprintln(os.Stderr, "relay: signal:", err)
			}
		}
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// naiveAPI mirrors peer.NewAPI's settings (codecs, NACK, reports, GCM,
// loopback) so that the two variants differ only in how they fan out.
func naiveAPI() *webrtc.API {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		fatal(err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.ConfigureNack(me, reg); err != nil {
		fatal(err)
	}
	if err := webrtc.ConfigureRTCPReports(reg); err != nil {
		fatal(err)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(loopbackSettings()))
}

// loopbackSettings: GCM first (as peer.NewAPI), loopback UDP4 only.
func loopbackSettings() webrtc.SettingEngine {
	se := webrtc.SettingEngine{}
	se.SetSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80)
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(n string) bool { return n == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return se
}

// naiveChild adds the shared track to a new PeerConnection and sends a
// complete offer (no trickle); it returns the answer/candidate handler.
func naiveChild(api *webrtc.API, track *webrtc.TrackLocalStaticRTP, send func(protocol.Signal)) (func(protocol.Signal) error, error) {
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	s, err := pc.AddTrack(track)
	if err != nil {
		return nil, err
	}
	go func() { // drain RTCP so the NACK responder and reports work
		buf := make([]byte, 1500)
		for {
			if _, _, err := s.Read(buf); err != nil {
				return
			}
		}
	}()
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return nil, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return nil, err
	}
	<-gathered
	send(protocol.Signal{Kind: protocol.SignalOffer, SDP: pc.LocalDescription().SDP})
	return func(sig protocol.Signal) error {
		switch sig.Kind {
		case protocol.SignalAnswer:
			return pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sig.SDP})
		case protocol.SignalCandidate:
			var c webrtc.ICECandidateInit
			if err := json.Unmarshal(sig.Candidate, &c); err != nil {
				return err
			}
			return pc.AddICECandidate(c)
		}
		return nil
	}, nil
}
