package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"canopy/mesh"
	"canopy/mesh/media"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// A hostile parent, written here against the signaling protocol: a source
// that says it publishes VP8 video and Opus audio, offers each child it is
// given from a plain pion PeerConnection, and then misbehaves.
type hostileMode int

const (
	sendAudioOnly    hostileMode = iota // audio flows, video never does
	sendGarbage                         // audio, and video packets of random bytes
	repeatedSections                    // the offer repeats the video m-section 90 times
)

type hostileSource struct {
	t    *testing.T
	p    *livePeer
	id   string
	mode hostileMode

	mu        sync.Mutex
	kids      map[string]*hostileLink
	offered   atomic.Int32
	answered  atomic.Int32
	connected atomic.Int32
	stop      chan struct{}
	wg        sync.WaitGroup
}

type hostileLink struct {
	pc           *webrtc.PeerConnection
	video, audio *webrtc.TrackLocalStaticRTP
}

var hostileTracks = []protocol.Track{
	{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000},
	{ID: "audio", Kind: "audio", MimeType: "audio/opus", ClockRate: 48000, Channels: 2},
}

func startHostileSource(t *testing.T, url, stream string, capacity int, mode hostileMode) *hostileSource {
	t.Helper()
	h := &hostileSource{t: t, p: dialLive(t, url, nil), mode: mode, kids: map[string]*hostileLink{}, stop: make(chan struct{})}
	h.p.sendMsg(&protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: protocol.RoleSource,
		Kind: protocol.KindGo, Stream: stream, Capacity: capacity, Tracks: hostileTracks})
	h.id = h.p.next(protocol.TypeWelcome).ID
	h.wg.Add(1)
	go h.run()
	t.Cleanup(h.close)
	return h
}

func (h *hostileSource) run() {
	defer h.wg.Done()
	for {
		select {
		case m := <-h.p.in:
			switch m.Type {
			case protocol.TypeAttach:
				h.offer(m.Peer)
			case protocol.TypeSignal:
				h.onSignal(m.Peer, *m.Sig)
			}
		case <-h.p.done:
			return
		case <-h.stop:
			return
		}
	}
}

func (h *hostileSource) offer(child string) {
	pc, err := loopbackPC()
	if err != nil {
		h.t.Errorf("hostile parent: %v", err)
		return
	}
	l := &hostileLink{pc: pc}
	l.video, _ = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "canopy")
	l.audio, _ = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "canopy")
	for _, tr := range []*webrtc.TrackLocalStaticRTP{l.video, l.audio} {
		if _, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			h.t.Errorf("hostile parent: %v", err)
			return
		}
	}
	h.mu.Lock()
	h.kids[child] = l
	h.mu.Unlock()
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			h.connected.Add(1)
			h.wg.Add(1)
			go h.feed(l)
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err == nil {
		err = pc.SetLocalDescription(offer)
	}
	if err != nil {
		h.t.Errorf("hostile parent: offer: %v", err)
		return
	}
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			raw, _ := json.Marshal(c.ToJSON())
			h.p.signal(child, protocol.Signal{Kind: protocol.SignalCandidate, Candidate: raw})
		}
	})
	sdp := pc.LocalDescription().SDP
	if h.mode == repeatedSections {
		sdp = repeatVideoSection(sdp, 90)
	}
	h.offered.Add(1)
	h.p.signal(child, protocol.Signal{Kind: protocol.SignalOffer, SDP: sdp})
}

func (h *hostileSource) onSignal(from string, s protocol.Signal) {
	h.mu.Lock()
	l := h.kids[from]
	h.mu.Unlock()
	if l == nil {
		return
	}
	switch s.Kind {
	case protocol.SignalAnswer:
		h.answered.Add(1)
		if err := l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: firstSections(s.SDP, 2)}); err != nil {
			h.t.Logf("hostile parent: answer: %v", err)
		}
	case protocol.SignalCandidate:
		var c webrtc.ICECandidateInit
		if json.Unmarshal(s.Candidate, &c) == nil {
			_ = l.pc.AddICECandidate(c)
		}
	}
}

// feed sends what the mode says, at 30 frames and 50 audio packets a second.
func (h *hostileSource) feed(l *hostileLink) {
	defer h.wg.Done()
	rng := rand.New(rand.NewPCG(5, 6))
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var vseq, aseq uint16
	for i := 0; ; i++ {
		select {
		case <-h.stop:
			return
		case <-tick.C:
		}
		if i%2 == 0 {
			payload := make([]byte, 80)
			for k := range payload {
				payload[k] = byte(rng.Uint32())
			}
			_ = l.audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: aseq, Timestamp: uint32(i/2) * 960}, Payload: payload})
			aseq++
		}
		if h.mode == sendAudioOnly || i%3 != 0 {
			continue
		}
		for j := range 4 {
			payload := make([]byte, 1000)
			for k := range payload {
				payload[k] = byte(rng.Uint32())
			}
			_ = l.video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: vseq, Timestamp: uint32(i/3) * 3000, Marker: j == 3}, Payload: payload})
			vseq++
		}
	}
}

func (h *hostileSource) close() {
	select {
	case <-h.stop:
		return
	default:
	}
	close(h.stop)
	h.mu.Lock()
	for _, l := range h.kids {
		_ = l.pc.Close()
	}
	h.mu.Unlock()
	_ = h.p.conn.Close()
	h.wg.Wait()
}

// repeatVideoSection repeats the video m-section n times (SSRC and all,
// each copy with its own mid), trimmed so that the offer fits a signal.
func repeatVideoSection(sdp string, n int) string {
	head, secs := splitSections(sdp)
	var video string
	for _, s := range secs {
		if strings.HasPrefix(s, "m=video") {
			video = s
		}
	}
	var short []string
	for _, l := range strings.Split(video, "\r\n") {
		if strings.HasPrefix(l, "a=rtcp-fb") || strings.HasPrefix(l, "a=extmap") || strings.HasPrefix(l, "a=msid") ||
			(strings.HasPrefix(l, "a=ssrc:") && !strings.Contains(l, " cname:")) {
			continue
		}
		short = append(short, l)
	}
	mids := []string{"0", "1"}
	var b strings.Builder
	for k := 2; k < n+1; k++ {
		mids = append(mids, strconv.Itoa(k))
	}
	for _, s := range secs {
		b.WriteString(s)
	}
	for k := 2; k < n+1; k++ {
		b.WriteString(strings.Replace(strings.Join(short, "\r\n"), "a=mid:0", "a=mid:"+mids[k], 1))
	}
	return strings.Replace(head, "a=group:BUNDLE 0 1", "a=group:BUNDLE "+strings.Join(mids, " "), 1) + b.String()
}

// firstSections keeps the first n m-sections of an answer, as the hostile
// parent's own session has.
func firstSections(sdp string, n int) string {
	head, secs := splitSections(sdp)
	if len(secs) <= n {
		return sdp
	}
	if i := strings.Index(head, "a=group:BUNDLE "); i >= 0 {
		end := strings.Index(head[i:], "\r\n")
		head = head[:i] + "a=group:BUNDLE 0 1" + head[i+end:]
	}
	return head + strings.Join(secs[:n], "")
}

func splitSections(sdp string) (string, []string) {
	parts := strings.Split(sdp, "\r\nm=")
	head := parts[0] + "\r\n"
	var secs []string
	for _, p := range parts[1:] {
		s := "m=" + p
		if !strings.HasSuffix(s, "\r\n") {
			s += "\r\n"
		}
		secs = append(secs, s)
	}
	return head, secs
}

// victim is a Go viewer that records its events and assembles its video.
type victim struct {
	node *mesh.Node
	mu   sync.Mutex
	evs  []mesh.Event
	asm  *media.Assembler
	vid  int
	aud  int
}

func startVictim(t *testing.T, url, stream string) *victim {
	t.Helper()
	v := &victim{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	asm, err := media.NewAssembler(media.VP8, nil)
	if err != nil {
		t.Fatal(err)
	}
	v.asm = asm
	node, err := mesh.Dial(ctx, mesh.Config{Server: url, Stream: stream, LoopbackOnly: true, Logger: testLogger(),
		OnEvent: func(e mesh.Event) { v.mu.Lock(); v.evs = append(v.evs, e); v.mu.Unlock() },
		OnPacket: func(t protocol.Track, p *rtp.Packet) {
			v.mu.Lock()
			defer v.mu.Unlock()
			if t.Kind == "video" {
				v.vid++
				v.asm.Push(p)
			} else {
				v.aud++
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	v.node = node
	t.Cleanup(func() { _ = node.Close() })
	return v
}

func (v *victim) saw(kind mesh.EventKind, peer string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.evs {
		if e.Kind == kind && e.Peer == peer {
			return true
		}
	}
	return false
}

func (v *victim) packets() (video, audio int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.vid, v.aud
}

// TestHostileParentAudioOnlyIsReported: a parent that sends the audio of a
// stream with video, and never the video, is reported stalled by its Go
// child, which never calls it live.
func TestHostileParentAudioOnlyIsReported(t *testing.T) {
	lightTest(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	h := startHostileSource(t, url, "audio-only", 2, sendAudioOnly)
	v := startVictim(t, url, "audio-only")
	waitFor(t, 20*time.Second, "audio from the hostile parent", func() bool { _, a := v.packets(); return a >= 50 })
	start := time.Now()
	waitFor(t, 15*time.Second, "the child to report its parent", func() bool { return v.saw(mesh.EventStalled, h.id) })
	t.Logf("reported after %v of audio without video", time.Since(start).Round(time.Millisecond))
	if v.saw(mesh.EventLive, h.id) {
		t.Error("the child reported an audio-only parent live")
	}
}

// TestHostileParentGarbageIsReported: a parent whose video packets are
// random bytes is reported stalled by its Go child; neither the child's
// assembler nor `client watch` counts a frame.
func TestHostileParentGarbageIsReported(t *testing.T) {
	lightTest(t)
	bin := buildClient(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	h := startHostileSource(t, url, "garbage", 2, sendGarbage)
	v := startVictim(t, url, "garbage")
	waitFor(t, 20*time.Second, "video from the hostile parent", func() bool { vid, _ := v.packets(); return vid >= 200 })
	waitFor(t, 15*time.Second, "the child to report its parent", func() bool { return v.saw(mesh.EventStalled, h.id) })
	if v.saw(mesh.EventLive, h.id) {
		t.Error("the child reported a garbage parent live")
	}
	v.mu.Lock()
	st := v.asm.Stats()
	v.mu.Unlock()
	t.Logf("assembler: %+v", st)
	if st.Frames != 0 || st.Undecodable == 0 {
		t.Errorf("assembler counted %d frames of noise (%d undecodable)", st.Frames, st.Undecodable)
	}

	var out, errOut bytes.Buffer
	watch := exec.Command(bin, "watch", "-server", url, "-stream", "garbage", "-frames", "10", "-json", "-timeout", "6s", "-loopback-only")
	watch.Stdout, watch.Stderr = &out, &errOut
	err := watch.Run()
	t.Logf("watch: %v %s%s", err, out.String(), errOut.String())
	if err == nil || !strings.Contains(errOut.String(), "did not play") {
		t.Errorf("watch of a garbage parent: err %v, stdout %s, stderr %s; want it not to play", err, out.String(), errOut.String())
	}
}

// TestHostileParentRepeatedSectionsRefused: a `client relay` offered one
// m-section repeated 90 times refuses the offer (and says so), and still
// exits promptly on SIGTERM.
func TestHostileParentRepeatedSectionsRefused(t *testing.T) {
	lightTest(t)
	bin := buildClient(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 1})
	h := startHostileSource(t, url, "sections", 1, repeatedSections)
	var errOut bytes.Buffer
	var errMu sync.Mutex
	relay := exec.Command(bin, "relay", "-server", url, "-stream", "sections", "-capacity", "2", "-loopback-only")
	relay.Stderr = writerFunc(func(b []byte) (int, error) { errMu.Lock(); defer errMu.Unlock(); return errOut.Write(b) })
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = relay.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			_ = relay.Process.Kill()
			<-exited
		}
	}()
	waitFor(t, 20*time.Second, "the hostile offer", func() bool { return h.offered.Load() > 0 })
	// Long enough for the offer to be answered, connected and fed, if the
	// relay takes it: what wedged its read loops.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && h.connected.Load() == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // media flows on every section meanwhile; not an assertion
	t.Logf("answered %d, connected %d", h.answered.Load(), h.connected.Load())
	if err := relay.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		errMu.Lock()
		t.Log(errOut.String())
		errMu.Unlock()
		t.Fatal("the relay ignored SIGTERM for 15 s")
	}
	errMu.Lock()
	defer errMu.Unlock()
	if h.answered.Load() != 0 || !strings.Contains(errOut.String(), "offer refused") {
		t.Errorf("the 90-section offer was not refused (answered %d); relay said:\n%s", h.answered.Load(), errOut.String())
	}
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(b []byte) (int, error) { return w(b) }

// loopbackPC is a raw pion PeerConnection for a hand-written peer: VP8
// and Opus, ICE on loopback UDP only, no mDNS.
func loopbackPC() (*webrtc.PeerConnection, error) {
	me := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	_ = me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: fb}, PayloadType: 96}, webrtc.RTPCodecTypeVideo)
	_ = me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, PayloadType: 111}, webrtc.RTPCodecTypeAudio)
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(n string) bool { return n == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	return pc, err
}
