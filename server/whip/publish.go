package whip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"canopy/mesh"
	"canopy/mesh/framesig"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// disconnectGrace is how long a publisher's connection may stay
// "disconnected" (no ICE traffic for pion's 5 s) before the session ends
// and viewers see the stream offline, instead of pion's 25 s more until
// "failed". ICE may recover within it; an encoder that quit does not.
const disconnectGrace = 5 * time.Second

// minPLIGap is the least time between two keyframe requests to the
// publisher: the tree's forwarders pass at most one per 300 ms.
const minPLIGap = 300 * time.Millisecond

// dialTimeout bounds the hosted node's hello and welcome, in-process.
const dialTimeout = 10 * time.Second

// publisher is a WHIP session: the publisher's PeerConnection, whose
// tracks feed a source node of the stream's tree.
type publisher struct {
	h      *Handler
	s      *session
	pc     *webrtc.PeerConnection
	node   *mesh.Node
	tracks map[string]protocol.Track // by mid
	log    *slog.Logger

	videoSSRC       atomic.Uint32
	pendingKeyframe atomic.Bool   // asked for before the connection was up
	lastPLI         atomic.Int64  // unix nanoseconds of the last PLI sent
	nodeReady       chan struct{} // closed once node is set, or the set-up failed
	readyOnce       sync.Once

	mu     sync.Mutex // orders track read loops starting with close
	closed bool
	wg     sync.WaitGroup // track read loops
}

// publish is POST /whip/<stream>: the publisher's offer becomes the
// stream's source.
func (h *Handler) publish(c *gin.Context) {
	stream, offer, media, err := h.readOffer(c, true)
	if err != nil {
		h.writeError(c, err)
		return
	}
	connect, err := h.cfg.Admit(c.Request, stream, protocol.RoleSource)
	if err != nil {
		h.writeError(c, err)
		return
	}
	if h.cfg.HasSource != nil {
		if _, live := h.cfg.HasSource(stream); live {
			h.writeError(c, fmt.Errorf("%w: %q", errStreamTaken, stream))
			return
		}
	}
	release, err := h.reserve(h.cfg.ClientKey(c.Request))
	if err != nil {
		h.writeError(c, err)
		return
	}
	p, answer, err := h.startPublisher(c.Request.Context(), stream, offer, media, connect)
	if err != nil {
		release()
		h.writeError(c, err)
		return
	}
	s := p.s
	s.addr = h.cfg.ClientKey(c.Request)
	prevEnd := s.end
	s.end = func() { prevEnd(); release() }
	h.add(s)
	p.watch()
	h.log.Info("WHIP publisher connected", "stream", stream, "session", s.id, "peer", p.node.ID(), "tracks", len(p.tracks))
	h.created(c, s, answer)
}

// startPublisher negotiates the publisher's PeerConnection and joins the
// tree as its source.
func (h *Handler) startPublisher(ctx context.Context, stream, offer string, media []offered, connect Connect) (*publisher, string, error) {
	// The connection knows only the codecs picked from the offer, under the
	// offer's payload types: the answer accepts exactly those.
	var codecs []webrtc.RTPCodecParameters
	pts := map[uint8]bool{}
	for _, m := range media {
		if !pts[m.pt] {
			pts[m.pt] = true
			codecs = append(codecs, m.answerCodec())
		}
	}
	pc, err := h.api.NewIngestPeerConnection(codecs)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", errNoCodec, err)
	}
	s := &session{id: newID(), stream: stream, kind: "whip", pc: pc, etag: newETag(), offer: offer, ufrag: iceUfrag(offer)}
	p := &publisher{h: h, s: s, pc: pc, tracks: make(map[string]protocol.Track), nodeReady: make(chan struct{}),
		log: h.log.With("stream", stream, "session", s.id)}
	fail := func(err error) (*publisher, string, error) {
		p.readyOnce.Do(func() { close(p.nodeReady) })
		p.close()
		return nil, "", err
	}
	// Track ids: video, audio, then video2… in the offer's order, as a Go
	// source names its tracks.
	var tracks []protocol.Track
	seen := map[string]int{}
	for _, m := range media {
		seen[m.kind]++
		id := m.kind
		if seen[m.kind] > 1 {
			id = fmt.Sprintf("%s%d", m.kind, seen[m.kind])
		}
		t := protocol.Track{ID: id, Kind: m.kind, MimeType: m.codec.MimeType, ClockRate: m.codec.ClockRate,
			Channels: m.codec.Channels, Fmtp: m.fmtp}
		p.tracks[m.mid] = t
		tracks = append(tracks, t)
	}
	pc.OnTrack(p.onTrack)
	admitted, n := h.admitOfferCandidates(offer)
	s.candidates = n
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: admitted}); err != nil {
		return fail(fmt.Errorf("%w: %v", errBadSDP, err))
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	// The server signs for the publisher: a new key for each session.
	_, key, err := framesig.GenerateKey()
	if err != nil {
		return fail(err)
	}
	node, err := mesh.Dial(dctx, mesh.Config{
		SignKey:   key,
		Transport: connect(), Stream: stream, Role: protocol.RoleSource, Capacity: h.cfg.SourceCapacity,
		Tracks: tracks, LoopbackOnly: h.cfg.Peer.LoopbackOnly, UDPMux: h.cfg.Peer.UDPMux, PublicIPs: h.cfg.Peer.PublicIPs,
		Logger: h.log.With("whip", s.id), OnKeyframeRequest: p.requestKeyframe,
		RemoteCandidateFilter: h.cfg.Peer.RemoteCandidateFilter,
		LocalPeer:             h.cfg.LocalPeer,
	})
	if err != nil {
		return fail(nodeError(err))
	}
	p.node = node
	p.readyOnce.Do(func() { close(p.nodeReady) })
	answer, err := answerWhole(ctx, pc)
	if err != nil {
		return fail(err)
	}
	s.end = p.close
	return p, answer, nil
}

// nodeError maps the server's refusal of a hosted node's hello.
func nodeError(err error) error {
	var se *mesh.ServerError
	if errors.As(err, &se) {
		switch se.Code {
		case protocol.CodeStreamTaken:
			return fmt.Errorf("%w: %s", errStreamTaken, se.Reason)
		case protocol.CodeUnauthorized:
			return fmt.Errorf("%w: %s", ErrForbidden, se.Reason)
		case protocol.CodeNotFound:
			return fmt.Errorf("%w: %s", ErrNoStream, se.Reason)
		case protocol.CodeFull:
			return fmt.Errorf("%w: %s", errFull, se.Reason)
		}
	}
	return fmt.Errorf("joining the tree: %w", err)
}

// watch ends the session when the publisher's connection fails, or stays
// disconnected past disconnectGrace, or the source node stops.
func (p *publisher) watch() {
	var mu sync.Mutex
	var timer *time.Timer
	p.pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		p.log.Debug("publisher connection", "state", st.String())
		mu.Lock()
		defer mu.Unlock()
		if timer != nil {
			timer.Stop()
			timer = nil
		}
		switch st {
		case webrtc.PeerConnectionStateConnected:
			if p.pendingKeyframe.Swap(false) {
				go p.requestKeyframe("")
			}
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			go p.h.end(p.s, "publisher connection "+st.String())
		case webrtc.PeerConnectionStateDisconnected:
			timer = time.AfterFunc(disconnectGrace, func() { p.h.end(p.s, "publisher disconnected") })
		}
	})
	go func() {
		<-p.node.Done()
		p.h.end(p.s, "source node stopped")
	}()
}

// close leaves the tree (viewers are told the stream is offline, and stay
// for a publisher that comes back) and closes the publisher's connection.
func (p *publisher) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.pc.Close()
	p.wg.Wait()
	if p.node != nil {
		go func() { _ = p.node.Close() }() // a graceful leave waits for children to move
	}
}

// requestKeyframe asks the publisher for a keyframe: the tree's requests
// arrive merged and throttled by the source node's forwarder (one per
// ~300 ms at most).
func (p *publisher) requestKeyframe(string) {
	if p.pc.ConnectionState() != webrtc.PeerConnectionStateConnected {
		// pion drops RTCP written before DTLS is up: ask once it is.
		p.pendingKeyframe.Store(true)
		if p.pc.ConnectionState() != webrtc.PeerConnectionStateConnected {
			return
		}
		p.pendingKeyframe.Store(false)
	}
	ssrc := p.videoSSRC.Load()
	if ssrc == 0 {
		// Before the first packet: the SSRC the offer declared, if any.
		for _, tr := range p.pc.GetTransceivers() {
			if r := tr.Receiver(); r != nil && tr.Kind() == webrtc.RTPCodecTypeVideo && r.Track() != nil {
				ssrc = uint32(r.Track().SSRC())
				break
			}
		}
	}
	if ssrc == 0 {
		return
	}
	// The forwarder throttles requests; one held until the connection came
	// up may go out just before the next, so merge those here too.
	now := time.Now().UnixNano()
	last := p.lastPLI.Load()
	if now-last < int64(minPLIGap) || !p.lastPLI.CompareAndSwap(last, now) {
		return
	}
	if err := p.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
		p.log.Debug("PLI to publisher", "err", err)
	}
}

// onTrack runs on its own goroutine (pion starts one per track) and
// becomes the track's read loop.
func (p *publisher) onTrack(tr *webrtc.TrackRemote, rcv *webrtc.RTPReceiver) {
	<-p.nodeReady
	p.mu.Lock()
	if p.closed || p.node == nil {
		p.mu.Unlock()
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()
	var t protocol.Track
	for _, x := range p.pc.GetTransceivers() {
		if x.Receiver() == rcv {
			t = p.tracks[x.Mid()]
		}
	}
	if t.ID == "" {
		p.log.Warn("publisher sent a track its offer did not declare", "kind", tr.Kind().String())
		return
	}
	if tr.Kind() == webrtc.RTPCodecTypeVideo {
		p.videoSSRC.CompareAndSwap(0, uint32(tr.SSRC()))
	}
	var extID uint8
	for _, e := range rcv.GetParameters().HeaderExtensions {
		if e.URI == peer.AbsCaptureTimeURI && e.ID > 0 && e.ID < 15 {
			extID = uint8(e.ID)
		}
	}
	p.readLoop(t, tr, extID)
}

// readLoop passes the publisher's packets to the source node unchanged
// (sequence numbers, timestamps, payload) but for their header
// extensions: the only one the tree forwards is abs-capture-time, under
// peer.AbsCaptureTimeID, taken from the publisher when it sends one and
// stamped here, at the first packet of each frame, when it does not.
func (p *publisher) readLoop(t protocol.Track, tr *webrtc.TrackRemote, extID uint8) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Warn("publisher track read loop panicked; track dropped", "track", t.ID, "panic", r)
		}
	}()
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	var capture [16]byte
	captureLen := 0
	var frameTS uint32
	haveFrame := false
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		if err := pkt.Unmarshal(buf[:n]); err != nil {
			continue
		}
		var ext []byte
		if extID != 0 {
			if b := pkt.GetExtension(extID); len(b) >= 8 && len(b) <= len(capture) {
				captureLen = copy(capture[:], b)
				ext = capture[:captureLen]
			}
		}
		if ext == nil {
			if !haveFrame || pkt.Timestamp != frameTS {
				b, _ := rtp.NewAbsCaptureTimeExtension(time.Now()).Marshal()
				captureLen = copy(capture[:], b)
				frameTS, haveFrame = pkt.Timestamp, true
			}
			ext = capture[:captureLen]
		}
		pkt.Extensions = pkt.Extensions[:0]
		pkt.Extension = false
		_ = pkt.SetExtension(peer.AbsCaptureTimeID, ext)
		if err := p.node.WriteSourceRTP(t.ID, &pkt); err != nil && !errors.Is(err, peer.ErrPacketTooLarge) {
			return // the node stopped; watch ends the session
		}
	}
}
