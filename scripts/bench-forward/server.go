//go:build unix

package main

// The whip and whep variants measure a real Canopy server process: a pion
// publisher in another process publishes the same synthetic 2.5 Mbps VP8
// stream over WHIP (stamping abs-capture-time), and the children, in other
// processes, receive it from the server's nodes: Go mesh viewers as
// children of the WHIP source node (whip, -source-capacity n), or WHEP
// players as children of the server's WHEP relay (whep). The relay CPU is
// the whole server process's (ingest, SRTP both ways, signaling, stats),
// read from /proc/<pid>/stat. whip-mux and whep-mux run the server with
// -udp-port (one UDP port for its hosted peers, batched sends).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"canopy/mesh"
	"canopy/mesh/media"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// serverBinary is the Canopy server built once per benchmark run.
var serverBinary struct {
	once sync.Once
	path string
	err  error
}

func buildServer() (string, error) {
	serverBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "bench-forward")
		if err != nil {
			serverBinary.err = err
			return
		}
		serverBinary.path = filepath.Join(dir, "canopy-server")
		cmd := exec.Command("go", "build", "-o", serverBinary.path, "./server")
		cmd.Stderr = os.Stderr
		serverBinary.err = cmd.Run()
	})
	return serverBinary.path, serverBinary.err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// procCPU is the user+system CPU of process pid so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

func oneServerRun(self, variant string, n int, window time.Duration) (result, error) {
	bin, err := buildServer()
	if err != nil {
		return result{}, fmt.Errorf("build the server: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return result{}, err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	args := []string{"-addr", fmt.Sprintf("127.0.0.1:%d", port), "-demo=false", "-turn=false",
		"-loopback-only", "-log-level", "error", "-source-capacity", strconv.Itoa(max(4, n))}
	if strings.HasSuffix(variant, "-mux") { // one UDP port for every hosted peer, batched sends
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return result{}, err
		}
		udp := u.LocalAddr().(*net.UDPAddr).Port
		_ = u.Close()
		args = append(args, "-udp-port", strconv.Itoa(udp))
	}
	srv := exec.Command(bin, args...)
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		return result{}, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("server did not start: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	pub, err := start(self, "-mode=publisher", "-server="+url)
	if err != nil {
		return result{}, err
	}
	defer pub.stop()
	go route(pub, pub)
	for deadline := time.Now().Add(30 * time.Second); ; { // viewers need the stream to exist
		s, err := pub.mark()
		if err != nil {
			return result{}, err
		}
		if s.In > 0 {
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("the publisher sends nothing")
		}
		time.Sleep(100 * time.Millisecond)
	}
	procs := max(1, (n+perProc-1)/perProc)
	children := make(group, 0, procs)
	defer func() {
		for _, c := range children {
			c.stop()
		}
	}()
	kind := strings.TrimSuffix(variant, "-mux")
	for i := range procs {
		count := min(perProc, n-i*perProc)
		c, err := start(self, "-mode=viewers", "-server="+url, "-kind="+kind, "-first="+strconv.Itoa(i*perProc), "-children="+strconv.Itoa(count))
		if err != nil {
			return result{}, err
		}
		children = append(children, c)
		go route(c, c)
	}
	deadline = time.Now().Add(90 * time.Second)
	for {
		s, err := children.mark()
		if err != nil {
			return result{}, err
		}
		if s.Ready == n {
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("only %d of %d viewers receive", s.Ready, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // warm-up: joins and their bursts are over
	pid := srv.Process.Pid
	cpu0, err := procCPU(pid)
	if err != nil {
		return result{}, err
	}
	p0, err := pub.mark()
	if err != nil {
		return result{}, err
	}
	c0, err := children.mark()
	if err != nil {
		return result{}, err
	}
	time.Sleep(window)
	cpu1, err := procCPU(pid)
	if err != nil {
		return result{}, err
	}
	p1, err := pub.mark()
	if err != nil {
		return result{}, err
	}
	time.Sleep(300 * time.Millisecond) // packets in flight
	c1, err := children.mark()
	if err != nil {
		return result{}, err
	}
	fwd := float64(p1.In-p0.In) * float64(n)
	cpu := (cpu1 - cpu0).Seconds()
	got := float64(c1.Received - c0.Received)
	return result{
		cpuPerPkt:  cpu * 1e6 / fwd,
		pktsPerSec: fwd / cpu,
		loss:       max(0, 100*(1-got/fwd)),
		p50:        c1.P50,
		p99:        c1.P99,
		childCPU:   100 * (c1.CPU - c0.CPU).Seconds() / (window + 300*time.Millisecond).Seconds(),
	}, nil
}

// pionAPI is a pion API with abs-capture-time on video, loopback only, as a
// browser publisher or player would negotiate.
func pionAPI() *webrtc.API {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000,
		RTCPFeedback: []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}}, PayloadType: 96}, webrtc.RTPCodecTypeVideo); err != nil {
		fatal(err)
	}
	if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: peer.AbsCaptureTimeURI}, webrtc.RTPCodecTypeVideo); err != nil {
		fatal(err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, reg); err != nil {
		fatal(err)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(loopbackSettings()))
}

// postSDP POSTs an offer to a WHIP or WHEP endpoint and returns the answer.
func postSDP(client *http.Client, url, offer string) (string, error) {
	resp, err := client.Post(url, "application/sdp", strings.NewReader(offer))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("POST %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b), nil
}

// gatheredOffer creates pc's offer with every candidate in it (no trickle,
// as OBS sends it).
func gatheredOffer(pc *webrtc.PeerConnection) (string, error) {
	o, err := pc.CreateOffer(nil)
	if err != nil {
		return "", err
	}
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(o); err != nil {
		return "", err
	}
	<-done
	return pc.LocalDescription().SDP, nil
}

// runPublisher publishes the synthetic stream to the server over WHIP and
// reports how many packets it sent.
func runPublisher(server string) {
	o := &out{enc: json.NewEncoder(os.Stdout)}
	in := make(chan msg, 16)
	go lines(os.Stdin, in)
	pc, err := pionAPI().NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		fatal(err)
	}
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "bench")
	if err != nil {
		fatal(err)
	}
	tr, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := tr.Sender().Read(buf); err != nil {
				return
			}
		}
	}()
	offer, err := gatheredOffer(pc)
	if err != nil {
		fatal(err)
	}
	answer, err := postSDP(http.DefaultClient, server+"/whip/bench", offer)
	if err != nil {
		fatal(err)
	}
	connected := make(chan struct{})
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(connected) })
		}
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		fatal(err)
	}
	select {
	case <-connected:
	case <-time.After(20 * time.Second):
		fatal(fmt.Errorf("publisher: not connected"))
	}
	var ext uint8
	for _, e := range tr.Sender().GetParameters().HeaderExtensions {
		if e.URI == peer.AbsCaptureTimeURI {
			ext = uint8(e.ID)
		}
	}
	var count atomic.Uint64
	src := media.SyntheticVP8{Packet: rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 1234, PayloadType: 96}}, Payload: make([]byte, 1040), Packets: 10}
	go func() {
		tick := time.NewTicker(time.Second / 30)
		for i := 0; ; i++ {
			now := time.Now()
			capture, _ := rtp.NewAbsCaptureTimeExtension(now).Marshal()
			_ = src.WriteFrame(i, func(p *rtp.Packet) error {
				if ext != 0 {
					_ = p.SetExtension(ext, capture)
				}
				if track.WriteRTP(p) == nil {
					count.Add(1)
				}
				return nil
			})
			<-tick.C
		}
	}()
	for m := range in {
		if m.Cmd == "mark" {
			o.send(msg{Stats: &stats{CPU: cpuTime(), In: count.Load()}})
		}
	}
	_ = pc.Close()
}

// runViewers joins count viewers of the server's stream, numbered from
// first: Go mesh viewers (kind whip) or WHEP players (kind whep), and
// answers marks as the children mode does.
func runViewers(server, kind string, first, count int) {
	o := &out{enc: json.NewEncoder(os.Stdout)}
	in := make(chan msg, 16)
	go lines(os.Stdin, in)
	rx := newReceivers()
	var closers []func()
	for i := range count {
		id := first + i
		sink := rx.sink(id)
		switch kind {
		case "whip":
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			node, err := mesh.Dial(ctx, mesh.Config{Server: server, Stream: "bench", Role: protocol.RoleViewer, LoopbackOnly: true, Logger: logger(),
				OnPacket: func(_ protocol.Track, p *rtp.Packet) { sink(p, peer.AbsCaptureTimeID) }})
			cancel()
			if err != nil {
				fatal(fmt.Errorf("viewer %d: %w", id, err))
			}
			closers = append(closers, func() { _ = node.Close() })
		case "whep":
			c, err := whepPlayer(server, id, sink)
			if err != nil {
				fatal(fmt.Errorf("player %d: %w", id, err))
			}
			closers = append(closers, c)
		default:
			fatal(fmt.Errorf("unknown viewer kind %q", kind))
		}
	}
	for m := range in {
		if m.Cmd == "mark" {
			o.send(msg{Stats: rx.mark()})
		}
	}
	for _, c := range closers {
		c()
	}
}

// whepPlayer plays the stream over WHEP from its own loopback address
// (127.0.0.2 and up, 16 players each: the server allows 16 WHIP and WHEP
// sessions per client address).
func whepPlayer(server string, id int, sink func(*rtp.Packet, uint8)) (func(), error) {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, byte(id/16/250), byte(2+id/16%250))}
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: local}).DialContext}}
	pc, err := pionAPI().NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		return nil, err
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
		var ext uint8
		for _, e := range r.GetParameters().HeaderExtensions {
			if e.URI == peer.AbsCaptureTimeURI {
				ext = uint8(e.ID)
			}
		}
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			sink(p, ext)
		}
	})
	offer, err := gatheredOffer(pc)
	if err != nil {
		return nil, err
	}
	answer, err := postSDP(client, server+"/whep/bench", offer)
	if err != nil {
		return nil, err
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return nil, err
	}
	return func() { _ = pc.Close() }, nil
}

// receivers counts what a process's viewers receive and their frames'
// capture-to-here delays, reported at each mark as the children mode does.
type receivers struct {
	received atomic.Uint64
	mu       sync.Mutex
	delays   []float64
	counts   map[int]*atomic.Uint64
}

func newReceivers() *receivers {
	return &receivers{delays: make([]float64, 0, 1<<20), counts: map[int]*atomic.Uint64{}}
}

// sink returns viewer id's packet handler; ext is the abs-capture-time
// extension id its packets carry (0: none).
func (r *receivers) sink(id int) func(*rtp.Packet, uint8) {
	c := &atomic.Uint64{}
	r.mu.Lock()
	r.counts[id] = c
	r.mu.Unlock()
	return func(p *rtp.Packet, ext uint8) {
		r.received.Add(1)
		c.Add(1)
		if ext == 0 || !p.Marker {
			return
		}
		var e rtp.AbsCaptureTimeExtension
		if b := p.GetExtension(ext); len(b) >= 8 && e.Unmarshal(b) == nil {
			d := float64(time.Since(e.CaptureTime())) / 1e6
			r.mu.Lock()
			r.delays = append(r.delays, d)
			r.mu.Unlock()
		}
	}
}

func (r *receivers) mark() *stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	ready := 0
	for _, c := range r.counts {
		if c.Load() > 0 {
			ready++
		}
	}
	st := &stats{CPU: cpuTime(), Received: r.received.Load(), Ready: ready}
	summarize(st, r.delays)
	r.delays = r.delays[:0]
	return st
}
