package main

import (
	"encoding/json"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"canopy/mesh/framesig"
	"canopy/mesh/media"
	"canopy/mesh/protocol"
)

// tamperKid is one child's connection and tracks; live once it has been
// sent the GOP so far.
type tamperKid struct {
	pc           *webrtc.PeerConnection
	video, audio *webrtc.TrackLocalStaticRTP
	live         bool
}

// A malicious Go relay, written here against the signaling protocol: it
// joins as a relay, plays from the parent the server gives it (and says
// so), offers each child it is given from a plain pion PeerConnection, and
// forwards its parent's packets, rewriting video as its mode says. Audio
// and, between forgeries, video pass unchanged.
type tamperMode int

const (
	flipBits  tamperMode = iota // flip a byte inside every 5th video frame
	replayOld                   // every 60 frames, replay 10 recorded old frames in a row
	injectOwn                   // every 10th frame, insert a frame of its own with a forged trailer
	// An honest relay on a lossy link: every 60 frames, 6 frames in a row
	// come late, after the one behind them, as NACK repairs do. It forges
	// nothing; forged counts the frames it delayed.
	lateRepairs
)

type tamperRelay struct {
	t       *testing.T
	p       *livePeer
	id      string
	welcome *protocol.Message
	errs    chan *protocol.Message // the server's errors, for a test that waits for one
	mode    tamperMode

	mu        sync.Mutex
	up        *webrtc.PeerConnection
	parent    string
	kids      map[string]*tamperKid
	gop       []*rtp.Packet // video sent since the last keyframe, for a new child
	videoSSRC atomic.Uint32
	live      atomic.Bool
	armed     atomic.Bool  // forges only once armed: honest until then
	forged    atomic.Int32 // frames rewritten, replayed or injected
	stop      chan struct{}
	wg        sync.WaitGroup

	// Owned by the video read loop.
	shift    uint16 // packets inserted so far: later ones move up
	nextSeq  uint16 // the number after the last packet sent
	frames   int
	lastTS   uint32
	frame    []*rtp.Packet   // the current frame's packets, as received
	recorded [][]*rtp.Packet // old frames, for replayOld
	late     []*rtp.Packet   // frames held back, for lateRepairs
}

func startTamperRelay(t *testing.T, url, stream string, capacity int, mode tamperMode) *tamperRelay {
	t.Helper()
	return startTamperRelayOn(t, dialLive(t, url, nil), &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version,
		Role: protocol.RoleRelay, Kind: protocol.KindGo, Stream: stream, Capacity: capacity}, mode)
}

// startLateRelay starts a signing demo source (one slot) and, under it, a
// lateRepairs relay of one slot, and waits until the relay has earned it.
func startLateRelay(t *testing.T, srvURL, stream string) *tamperRelay {
	t.Helper()
	src := demoSignedSource(t, srvURL, stream, 1, "")
	m := startTamperRelay(t, srvURL, stream, 1, lateRepairs)
	waitFor(t, 20*time.Second, "the lossy relay under the source, with a slot", func() bool {
		var tr treeResponse
		getJSON(t, srvURL+"/api/streams/"+stream+"/tree", &tr)
		for _, n := range tr.Nodes {
			if n.ID == m.id {
				return n.Parent == src.ID() && n.Usable > 0
			}
		}
		return false
	})
	return m
}

// startTamperRelayOn runs the relay on a connection of the test's (from
// another address) with a hello of its own (a resume).
func startTamperRelayOn(t *testing.T, p *livePeer, hello *protocol.Message, mode tamperMode) *tamperRelay {
	t.Helper()
	r := &tamperRelay{t: t, p: p, mode: mode, kids: map[string]*tamperKid{}, stop: make(chan struct{}),
		errs: make(chan *protocol.Message, 16)}
	r.p.sendMsg(hello)
	r.welcome = r.p.next(protocol.TypeWelcome)
	r.id = r.welcome.ID
	if r.welcome.Resumed {
		r.parent = r.welcome.Peer
	}
	r.wg.Add(1)
	go r.run()
	t.Cleanup(r.close)
	return r
}

func (r *tamperRelay) run() {
	defer r.wg.Done()
	for {
		select {
		case m := <-r.p.in:
			switch m.Type {
			case protocol.TypeParent:
				r.mu.Lock()
				r.parent = m.Peer
				r.mu.Unlock()
			case protocol.TypeAttach:
				r.offer(m.Peer)
			case protocol.TypeSignal:
				r.onSignal(m.Peer, *m.Sig)
			case protocol.TypeError:
				select {
				case r.errs <- m:
				default:
				}
			}
		case <-r.p.done:
			return
		case <-r.stop:
			return
		}
	}
}

// newPC makes a loopback PeerConnection with VP8 and Opus.
func (r *tamperRelay) newPC() *webrtc.PeerConnection {
	pc, err := loopbackPC()
	if err != nil {
		r.t.Errorf("tamper relay: %v", err)
		return nil
	}
	return pc
}

func (r *tamperRelay) trickle(pc *webrtc.PeerConnection, to string) {
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			raw, _ := json.Marshal(c.ToJSON())
			r.p.signal(to, protocol.Signal{Kind: protocol.SignalCandidate, Candidate: raw})
		}
	})
}

// answerParent takes the parent's offer and starts reading its tracks.
func (r *tamperRelay) answerParent(from string, offer string) {
	pc := r.newPC()
	if pc == nil {
		return
	}
	r.mu.Lock()
	if r.up != nil {
		_ = r.up.Close()
	}
	r.up = pc
	r.mu.Unlock()
	r.trickle(pc, from)
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			r.videoSSRC.Store(uint32(tr.SSRC()))
		}
		r.wg.Add(1)
		go r.read(from, tr)
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		r.t.Logf("tamper relay: offer: %v", err)
		return
	}
	answer, err := pc.CreateAnswer(nil)
	if err == nil {
		err = pc.SetLocalDescription(answer)
	}
	if err != nil {
		r.t.Logf("tamper relay: answer: %v", err)
		return
	}
	r.p.signal(from, protocol.Signal{Kind: protocol.SignalAnswer, SDP: pc.LocalDescription().SDP})
}

func (r *tamperRelay) offer(child string) {
	pc := r.newPC()
	if pc == nil {
		return
	}
	k := &tamperKid{pc: pc}
	k.video, _ = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "canopy")
	k.audio, _ = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "canopy")
	for _, tr := range []*webrtc.TrackLocalStaticRTP{k.video, k.audio} {
		s, err := pc.AddTrack(tr)
		if err != nil {
			r.t.Errorf("tamper relay: %v", err)
			return
		}
		r.wg.Add(1)
		go r.readRTCP(s)
	}
	r.mu.Lock()
	r.kids[child] = k
	r.mu.Unlock()
	// Like a relay's GOP cache: a child starts at the last keyframe.
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s != webrtc.PeerConnectionStateConnected {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, q := range r.gop {
			_ = k.video.WriteRTP(q)
		}
		k.live = true
	})
	r.trickle(pc, child)
	offer, err := pc.CreateOffer(nil)
	if err == nil {
		err = pc.SetLocalDescription(offer)
	}
	if err != nil {
		r.t.Errorf("tamper relay: offer: %v", err)
		return
	}
	r.p.signal(child, protocol.Signal{Kind: protocol.SignalOffer, SDP: pc.LocalDescription().SDP})
}

// readRTCP passes children's keyframe requests to the parent.
func (r *tamperRelay) readRTCP(s *webrtc.RTPSender) {
	defer r.wg.Done()
	for {
		pkts, _, err := s.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			if _, ok := p.(*rtcp.PictureLossIndication); ok {
				r.mu.Lock()
				up := r.up
				r.mu.Unlock()
				if up != nil {
					_ = up.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: r.videoSSRC.Load()}})
				}
			}
		}
	}
}

func (r *tamperRelay) onSignal(from string, s protocol.Signal) {
	r.mu.Lock()
	parent, up := r.parent, r.up
	var kid *webrtc.PeerConnection
	if k := r.kids[from]; k != nil {
		kid = k.pc
	}
	r.mu.Unlock()
	switch {
	case from == parent && s.Kind == protocol.SignalOffer:
		r.answerParent(from, s.SDP)
		return
	case from == parent:
		kid = up
	}
	if kid == nil {
		return
	}
	switch s.Kind {
	case protocol.SignalAnswer:
		if err := kid.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: s.SDP}); err != nil {
			r.t.Logf("tamper relay: answer: %v", err)
		}
	case protocol.SignalCandidate:
		var c webrtc.ICECandidateInit
		if json.Unmarshal(s.Candidate, &c) == nil {
			_ = kid.AddICECandidate(c)
		}
	}
}

// read forwards one upstream track, telling the server it plays once the
// first packet is in.
func (r *tamperRelay) read(parent string, tr *webrtc.TrackRemote) {
	defer r.wg.Done()
	video := tr.Kind() == webrtc.RTPCodecTypeVideo
	for {
		p, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		if !r.live.Swap(true) {
			r.p.sendMsg(&protocol.Message{Type: protocol.TypeLive, Peer: parent})
		}
		if !video {
			r.mu.Lock()
			for _, k := range r.kids {
				if k.live {
					_ = k.audio.WriteRTP(p)
				}
			}
			r.mu.Unlock()
			continue
		}
		r.forward(p)
	}
}

// forward rewrites one video packet as the mode says and sends it, and
// whatever the mode adds, shifting sequence numbers past inserted packets.
func (r *tamperRelay) forward(p *rtp.Packet) {
	r.frame = append(r.frame, p.Clone())
	if !p.Marker {
		return
	}
	frame := r.frame
	r.frame = nil
	r.frames++
	armed := r.armed.Load()
	switch {
	case armed && r.mode == flipBits && r.frames%5 == 0 && len(frame[0].Payload) > 60:
		frame[0].Payload[len(frame[0].Payload)/2] ^= 0x40 // inside the VP8 data, past its headers
		r.forged.Add(1)
	case r.mode == replayOld && r.frames <= 20:
		r.recorded = append(r.recorded, cloneFrame(frame))
	}
	if r.mode == lateRepairs && (armed && r.frames%60 >= 10 && r.frames%60 < 16) {
		r.late = append(r.late, frame...)
		r.forged.Add(1)
		return
	}
	for _, q := range frame {
		r.send(q)
	}
	for _, q := range r.late {
		r.write(q) // their own sequence numbers, below the frame just sent
	}
	r.late = nil
	r.lastTS = frame[0].Timestamp
	switch {
	case armed && r.mode == replayOld && r.frames%60 == 0:
		for _, old := range r.recorded[len(r.recorded)-10:] {
			r.insert(cloneFrame(old))
		}
	case armed && r.mode == injectOwn && r.frames%10 == 0:
		r.insert([]*rtp.Packet{forgedFrame(frame[0])})
	}
}

// insert sends a frame of extra packets between the last frame and the
// next, with timestamps just after the last.
func (r *tamperRelay) insert(frame []*rtp.Packet) {
	r.lastTS++
	for i, q := range frame {
		q.Timestamp, q.Marker = r.lastTS, i == len(frame)-1
		q.SequenceNumber = r.nextSeq
		r.nextSeq++
		r.shift++
		r.write(q)
	}
	r.forged.Add(1)
}

// send writes one packet with the relay's numbering: the parent's, moved
// up by the packets inserted so far.
func (r *tamperRelay) send(q *rtp.Packet) {
	q.SequenceNumber += r.shift
	r.nextSeq = q.SequenceNumber + 1
	r.write(q)
}

// write sends a video packet to every live child and keeps it for new ones.
func (r *tamperRelay) write(q *rtp.Packet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if media.IsKeyframe(webrtc.MimeTypeVP8, q.Payload) || len(r.gop) > 4096 {
		r.gop = r.gop[:0]
	}
	r.gop = append(r.gop, q)
	for _, k := range r.kids {
		if k.live {
			_ = k.video.WriteRTP(q)
		}
	}
}

func cloneFrame(f []*rtp.Packet) []*rtp.Packet {
	out := make([]*rtp.Packet, len(f))
	for i, p := range f {
		out[i] = p.Clone()
	}
	return out
}

// forgedFrame is a one-packet VP8 delta frame of the relay's own: the
// descriptor and frame header of a real one, random data, and a trailer
// with a counter and signature it made up.
func forgedFrame(like *rtp.Packet) *rtp.Packet {
	rng := rand.New(rand.NewPCG(uint64(like.Timestamp), 7))
	n := min(len(like.Payload), 400)
	payload := append([]byte(nil), like.Payload[:min(n, 14)]...)
	for len(payload) < n {
		payload = append(payload, byte(rng.Uint32()))
	}
	trailer := make([]byte, framesig.TrailerSize)
	for i := range trailer {
		trailer[i] = byte(rng.Uint32())
	}
	copy(trailer[len(trailer)-3:], []byte{0x01, 'C', 'S'})
	return &rtp.Packet{Header: like.Header, Payload: append(payload, trailer...)}
}

func (r *tamperRelay) close() {
	select {
	case <-r.stop:
		return
	default:
	}
	close(r.stop)
	r.mu.Lock()
	for _, k := range r.kids {
		_ = k.pc.Close()
	}
	if r.up != nil {
		_ = r.up.Close()
	}
	r.mu.Unlock()
	_ = r.p.conn.Close()
	r.wg.Wait()
}
