package main

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"canopy/mesh/framesig"
	"canopy/mesh/media"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// whepClient is a WHEP player built on pion: recvonly audio and video, the
// whole offer at once, frames assembled and checked against the source's.
type whepClient struct {
	t        testing.TB
	pc       *webrtc.PeerConnection
	src      *testSource
	prev     *testSource // the source before src: its frames still in flight are genuine
	location string
	etag     string

	mu       sync.Mutex
	frames   int
	mismatch int
	audio    int
	trailers int // frames and audio packets that end in a signature trailer
}

func newWHEPClient(t testing.TB, src *testSource) *whepClient {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(n string) bool { return n == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	c := &whepClient{t: t, pc: pc, src: src}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	pc.OnTrack(c.onTrack)
	return c
}

func (c *whepClient) onTrack(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	if tr.Kind() == webrtc.RTPCodecTypeAudio {
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.audio++
			if framesig.HasTrailer(p.Payload) {
				c.trailers++
			}
			c.mu.Unlock()
		}
	}
	started := false
	asm, err := media.NewAssembler(media.Codec{MimeType: tr.Codec().MimeType, ClockRate: tr.Codec().ClockRate}, func(f media.Frame) {
		if !started && !f.Keyframe {
			return
		}
		started = true
		c.mu.Lock()
		defer c.mu.Unlock()
		c.frames++
		if framesig.HasTrailer(f.Data) {
			c.trailers++
		}
		if c.src != nil && !c.src.sent.has(f.Data) && (c.prev == nil || !c.prev.sent.has(f.Data)) {
			c.mismatch++
		}
	})
	if err != nil {
		c.t.Errorf("assembler for %s: %v", tr.Codec().MimeType, err)
		return
	}
	for {
		p, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		asm.Push(p)
	}
}

func (c *whepClient) counts() (frames, mismatch, audio int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames, c.mismatch, c.audio
}

// whepOfferOf is the player's complete offer.
func whepOfferOf(t testing.TB, c *whepClient) string {
	t.Helper()
	offer, err := c.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	return c.pc.LocalDescription().SDP
}

// webrtcAnswerOf is an answer body as a description.
func webrtcAnswerOf(sdp string) webrtc.SessionDescription {
	return webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}
}

// watch POSTs the offer to base+/whep/stream and applies the answer.
func (c *whepClient) watch(base, stream, token string) (int, string) {
	c.t.Helper()
	resp, body := post(c.t, http.MethodPost, base+"/whep/"+stream, "application/sdp", token, whepOfferOf(c.t, c))
	if resp.StatusCode != http.StatusCreated {
		return resp.StatusCode, body
	}
	c.location, c.etag = base+resp.Header.Get("Location"), resp.Header.Get("ETag")
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
		c.t.Fatalf("apply answer: %v\n%s", err, body)
	}
	return resp.StatusCode, body
}

// TestWHEPPlayersOfAWHIPStream: pion WHEP players of a stream published
// over WHIP get complete frames from the server's relay node, which the
// tree places like any Go relay; the tree API shows the players as its
// children; the source feeds the relay once, however many players.
func TestWHEPPlayersOfAWHIPStream(t *testing.T) {
	lightTest(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	obs := newWHIPClient(t)
	if code, body := obs.publish(url, "show", ""); code != http.StatusCreated {
		t.Fatalf("POST /whip: %d %s", code, body)
	}
	obs.play(h264Clip)
	var players []*whepClient
	for range 3 {
		p := newWHEPClient(t, obs.src)
		if code, body := p.watch(url, "show", ""); code != http.StatusCreated {
			t.Fatalf("POST /whep: %d %s", code, body)
		}
		players = append(players, p)
	}
	for _, p := range players {
		waitFor(t, 30*time.Second, "WHEP players play", func() bool { f, _, _ := p.counts(); return f >= 60 })
		if _, mismatch, audio := p.counts(); mismatch != 0 || audio == 0 {
			t.Errorf("WHEP player: %d frames differ from the publisher's, %d audio packets", mismatch, audio)
		}
	}
	var tr treeResponse
	getJSON(t, url+"/api/streams/show/tree", &tr)
	var relay *tree.NodeInfo
	whep := 0
	for i, n := range tr.Nodes {
		if n.Role == protocol.RoleRelay {
			relay = &tr.Nodes[i]
		}
		if string(n.Kind) == KindWHEP {
			whep++
		}
	}
	if relay == nil || relay.Depth != 1 || whep != 3 {
		t.Fatalf("tree: relay %+v, %d WHEP players; want the server's relay under the source with 3 players: %+v", relay, whep, tr.Nodes)
	}
	for _, n := range tr.Nodes {
		if string(n.Kind) == KindWHEP && (n.Parent != relay.ID || n.Depth != 2) {
			t.Errorf("WHEP player %+v is not the relay's child", n)
		}
	}
	if len(relay.Children) != 3 {
		t.Errorf("relay children %v, want the 3 players", relay.Children)
	}
	// The dashboard's view lists them too, live, under the relay.
	waitFor(t, 10*time.Second, "the dashboard shows three live WHEP players", func() bool {
		var sr statsResponse
		getJSON(t, url+"/api/streams/show/stats", &sr)
		live := 0
		for _, n := range sr.Nodes {
			if string(n.Kind) == KindWHEP && n.State == stateLive && n.Parent == relay.ID {
				live++
			}
		}
		return live == 3
	})

	// The publisher stops and comes back: the players keep their sessions
	// and play the returning publisher's frames.
	if code := obs.stop(); code != http.StatusOK {
		t.Fatalf("DELETE /whip: %d", code)
	}
	back := newWHIPClient(t)
	for _, p := range players {
		p.mu.Lock()
		p.prev, p.src = p.src, back.src
		p.mu.Unlock()
	}
	waitFor(t, 20*time.Second, "the stream is offline", func() bool {
		var streams []streamInfo
		getJSON(t, url+"/api/streams", &streams)
		return len(streams) == 1 && !streams[0].Live
	})
	if code, body := back.publish(url, "show", ""); code != http.StatusCreated {
		t.Fatalf("POST /whip again: %d %s", code, body)
	}
	back.play(h264Clip)
	for _, p := range players {
		f0, m0, _ := p.counts()
		waitFor(t, 30*time.Second, "WHEP players play the returning publisher", func() bool { f, _, _ := p.counts(); return f >= f0+60 })
		if _, m, _ := p.counts(); m != m0 {
			t.Errorf("WHEP player: %d frames after the return differ from the publisher's", m-m0)
		}
	}

	// A player leaves with DELETE; the tree API forgets it.
	if resp, _ := post(t, http.MethodDelete, players[0].location, "", "", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("DELETE /whep session: %d", resp.StatusCode)
	}
	waitFor(t, 10*time.Second, "the tree API drops the player", func() bool {
		var tr treeResponse
		getJSON(t, url+"/api/streams/show/tree", &tr)
		n := 0
		for _, x := range tr.Nodes {
			if string(x.Kind) == KindWHEP {
				n++
			}
		}
		return n == 2
	})
}
