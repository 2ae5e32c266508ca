package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"net/http"
	"sync"
	"testing"
	"time"

	"canopy/mesh"
	"canopy/mesh/framesig"
	"canopy/mesh/media"
	"canopy/mesh/media/demo"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Signed frames through real parts: a signing Go source (mesh.Node.Play),
// the real server handing out its key, real Go relays, and Go viewers that
// verify every frame (mesh.Config.OnFrame) before they count it.

// hashingReader remembers the hash of every frame it reads: what the
// source sends, before its signature.
type hashingReader struct {
	media.FrameReader
	sent *frameHashes
}

func (r hashingReader) ReadFrame() (media.Frame, error) {
	f, err := r.FrameReader.ReadFrame()
	if err == nil {
		r.sent.add(f.Data)
	}
	return f, err
}

// startSignedSource publishes the demo clip from a Go source that signs
// every frame with a key of its own.
func startSignedSource(t *testing.T, server, stream string, capacity int) *testSource {
	t.Helper()
	video, audio, err := demo.Open()
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := framesig.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	node, err := mesh.Dial(ctx, mesh.Config{
		Server: server, Stream: stream, Role: protocol.RoleSource, Capacity: capacity, SignKey: key,
		Tracks: mesh.TracksFor(video, audio), LoopbackOnly: true, Logger: testLogger(),
	})
	if err != nil {
		cancel()
		t.Fatalf("source: %v", err)
	}
	s := &testSource{node: node, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = node.Play(ctx, hashingReader{video, &s.sent}, audio)
	}()
	t.Cleanup(s.stop)
	return s
}

// verifyingPeer plays what its node verified, and counts a video frame the
// source never sent as forged.
type verifyingPeer struct {
	node *mesh.Node
	src  *testSource

	mu     sync.Mutex
	video  int
	audio  int
	forged int
}

// underTamperer starts an honest relay of capacity goodCap under src, then
// two verifying viewers, each waited for until it plays below bad.
func underTamperer(t *testing.T, url, stream string, src *testSource, bad *tamperRelay, goodCap int) (*testViewer, []*verifyingPeer) {
	t.Helper()
	good := startPeer(t, url, stream, protocol.RoleRelay, goodCap, nil)
	waitFor(t, 20*time.Second, "the honest relay under the source", func() bool { return good.node.Parent() == src.node.ID() })
	viewers := make([]*verifyingPeer, 2)
	for i := range viewers {
		viewers[i] = startVerifyingPeer(t, url, stream, protocol.RoleViewer, 0, src)
		v := viewers[i]
		waitFor(t, 30*time.Second, "the viewer under the tampering relay", func() bool { return v.node.Parent() == bad.id })
		waitFor(t, 30*time.Second, "the viewer plays", func() bool { n, _, _ := v.counts(); return n >= 10 })
	}
	return good, viewers
}

func startVerifyingPeer(t *testing.T, server, stream string, role protocol.Role, capacity int, src *testSource) *verifyingPeer {
	t.Helper()
	v := &verifyingPeer{src: src}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	node, err := mesh.Dial(ctx, mesh.Config{
		Server: server, Stream: stream, Role: role, Capacity: capacity,
		LoopbackOnly: true, Logger: testLogger(), OnFrame: v.onFrame,
	})
	if err != nil {
		t.Fatalf("%s: %v", role, err)
	}
	v.node = node
	t.Cleanup(func() { _ = node.Close() })
	return v
}

func (v *verifyingPeer) onFrame(t protocol.Track, f media.Frame) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if t.Kind == "audio" {
		v.audio++
		return
	}
	v.video++
	if !v.src.sent.has(f.Data) {
		v.forged++
	}
}

func (v *verifyingPeer) counts() (video, audio, forged int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.video, v.audio, v.forged
}

func treeNode(t *testing.T, url, stream, id string) (tree.NodeInfo, bool) {
	t.Helper()
	var tr treeResponse
	getJSON(t, url+"/api/streams/"+stream+"/tree", &tr)
	for _, n := range tr.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return tree.NodeInfo{}, false
}

// TestSignedTreeVerifiesEveryFrame: Go source → Go relay → Go viewer. The
// relay forwards the signed frames untouched; the viewer verifies every
// one (none rejected), and what it plays is byte for byte what the source
// read, without the signature.
func TestSignedTreeVerifiesEveryFrame(t *testing.T) {
	lightTest(t)
	_, url := startServer(t, tree.Config{})
	src := startSignedSource(t, url, "signed", 1)
	relay := startPeer(t, url, "signed", protocol.RoleRelay, 4, nil)
	waitFor(t, 20*time.Second, "the relay under the source", func() bool { return relay.node.Parent() == src.node.ID() })
	v := startVerifyingPeer(t, url, "signed", protocol.RoleViewer, 0, src)
	waitFor(t, 60*time.Second, "150 verified video frames", func() bool { n, _, _ := v.counts(); return n >= 150 })

	if p := v.node.Parent(); p != relay.node.ID() {
		t.Fatalf("viewer's parent is %q, want the relay %s", p, relay.node.ID())
	}
	video, audio, forged := v.counts()
	st := v.node.FrameStats()
	t.Logf("viewer: %d video and %d audio frames played; %+v", video, audio, st)
	if !v.node.Verifies() {
		t.Error("the viewer does not verify")
	}
	if st.Rejected != 0 || forged != 0 {
		t.Errorf("clean tree: %d frames rejected, %d played that the source never sent", st.Rejected, forged)
	}
	if st.Unverified != 0 || st.Verified < uint64(video+audio) {
		t.Errorf("%d frames verified, %d unverified, for %d played", st.Verified, st.Unverified, video+audio)
	}
	if audio == 0 {
		t.Error("no audio frame verified")
	}
	if n, ok := treeNode(t, url, "signed", v.node.ID()); !ok || n.Unverified {
		t.Errorf("tree API: viewer %+v, want verified", n)
	}
	// Its stats reports carry the counts to the stats API (the dashboard's).
	s := waitVerifiedStats(t, url, "signed", v.node.ID(), 150)
	if s.FramesRejected != 0 || s.FramesVerified > v.node.FrameStats().Verified {
		t.Errorf("stats API: %+v, want at most the node's %+v and nothing rejected", s, v.node.FrameStats())
	}
}

// waitVerifiedStats waits until the stats API shows peer id's last report
// saying its frames are verified, at least least of them.
func waitVerifiedStats(t *testing.T, url, stream, id string, least uint64) protocol.Stats {
	t.Helper()
	var last protocol.Stats
	waitFor(t, 30*time.Second, "the stats API shows "+id+"'s verified frames", func() bool {
		var r statsResponse
		getJSON(t, url+"/api/streams/"+stream+"/stats", &r)
		for _, n := range r.Nodes {
			if n.ID == id && n.Stats != nil {
				last = *n.Stats
			}
		}
		return last.Verification == protocol.VerificationVerified && last.FramesVerified >= least
	})
	t.Logf("stats API: %s reports %d frames verified, %d rejected (%s)", id, last.FramesVerified, last.FramesRejected, last.Verification)
	return last
}

// TestTamperingRelayIsBarred: a Go relay that flips bits in frames,
// replays old ones, or injects its own. Go viewers under it play nothing
// forged, report it, and are moved to an honest relay at once; two reports
// bar it from relaying.
func TestTamperingRelayIsBarred(t *testing.T) {
	lightTest(t)
	for _, tc := range []struct {
		name string
		mode tamperMode
	}{{"flip", flipBits}, {"replay", replayOld}, {"inject", injectOwn}} {
		t.Run(tc.name, func(t *testing.T) {
			_, url := startServer(t, tree.Config{})
			stream := "tamper-" + tc.name
			src := startSignedSource(t, url, stream, 2)
			bad := startTamperRelay(t, url, stream, 4, tc.mode)
			waitFor(t, 20*time.Second, "the tampering relay plays", func() bool { return bad.live.Load() })
			// Both viewers under the tampering relay (it forwards honestly
			// until armed, and earns its capacity), then it turns.
			_, viewers := underTamperer(t, url, stream, src, bad, 4)
			bad.armed.Store(true)
			waitFor(t, 60*time.Second, "the tampering relay barred", func() bool {
				n, ok := treeNode(t, url, stream, bad.id)
				return ok && n.Tampering && n.Trust == tree.TrustBarred
			})
			if bad.forged.Load() == 0 {
				t.Fatal("the relay forged nothing")
			}
			rejected := uint64(0)
			for i, v := range viewers {
				waitFor(t, 30*time.Second, "the viewer away from the tampering relay", func() bool { return v.node.Parent() != bad.id })
				before, _, _ := v.counts()
				waitFor(t, 60*time.Second, "the viewer plays on", func() bool { n, _, _ := v.counts(); return n >= before+60 })
				video, _, forged := v.counts()
				st := v.node.FrameStats()
				t.Logf("viewer %d (parent %s): %d video frames played, %+v", i, v.node.Parent(), video, st)
				if forged != 0 {
					t.Errorf("viewer %d played %d frames the source never sent", i, forged)
				}
				rejected += st.Rejected
			}
			if rejected == 0 {
				t.Error("no viewer rejected a frame")
			}
			if n, _ := treeNode(t, url, stream, bad.id); n.Usable != 0 || len(n.Children) != 0 {
				t.Errorf("barred relay: usable %d, children %v", n.Usable, n.Children)
			}
		})
	}
}

// TestWHEPPlayerGetsFramesWithoutSignatures: a plain pion WHEP player (it
// knows nothing of Canopy) of a signed VP8 + Opus stream gets every frame
// without its trailer from the server's relay node, byte for byte what the
// source read, while a Go viewer of the same stream verifies them.
func TestWHEPPlayerGetsFramesWithoutSignatures(t *testing.T) {
	lightTest(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	src := startSignedSource(t, url, "signed-whep", 2)
	v := startVerifyingPeer(t, url, "signed-whep", protocol.RoleViewer, 0, src)
	p := newWHEPClient(t, src)
	if code, body := p.watch(url, "signed-whep", ""); code != http.StatusCreated {
		t.Fatalf("POST /whep: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "the WHEP player plays", func() bool { f, _, a := p.counts(); return f >= 90 && a >= 100 })
	waitFor(t, 30*time.Second, "the Go viewer verifies", func() bool { n, _, _ := v.counts(); return n >= 90 })
	frames, mismatch, audio := p.counts()
	p.mu.Lock()
	trailers := p.trailers
	p.mu.Unlock()
	// No trailer left and every frame one the source read: byte for byte.
	if mismatch != 0 {
		t.Errorf("WHEP player: %d of %d frames differ from the source's", mismatch, frames)
	}
	if trailers != 0 {
		t.Errorf("WHEP player: %d of %d frames and %d audio packets still carry a signature trailer", trailers, frames, audio)
	}
	if st := v.node.FrameStats(); st.Rejected != 0 || st.Verified == 0 {
		t.Errorf("Go viewer of the same stream: %+v", st)
	}
}

// TestFalseTamperReportsAreRefuted: a child that reports its parent with
// the evidence of a genuine frame (its signature verifies under the
// source's key) moves nowhere and costs the parent nothing; after three
// such reports it may relay for nobody. The key reaches every peer in its
// welcome.
func TestFalseTamperReportsAreRefuted(t *testing.T) {
	lightTest(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 1})
	pub, priv, err := framesig.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	src := dialLive(t, url, nil)
	src.send(mustEncode(t, &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: protocol.RoleSource,
		Kind: protocol.KindGo, Stream: "liar", Capacity: 1, Tracks: hostileTracks, SignKey: framesig.EncodeKey(pub)}))
	src.next(protocol.TypeWelcome)
	relay := dialLive(t, url, nil)
	relay.send(`{"type":"hello","v":1,"role":"relay","kind":"go","stream":"liar","capacity":2}`)
	relayID := relay.next(protocol.TypeWelcome).ID
	child := dialLive(t, url, nil)
	child.send(`{"type":"hello","v":1,"role":"viewer","kind":"go","stream":"liar"}`)
	w := child.next(protocol.TypeWelcome)
	if w.SourceKey != framesig.EncodeKey(pub) {
		t.Fatalf("welcome sourceKey %q, want the source's", w.SourceKey)
	}
	if p := child.next(protocol.TypeParent); p.Peer != relayID || p.Verify != nil {
		t.Fatalf("parent %+v, want the relay %s with a verifiable path", p, relayID)
	}
	hash := [32]byte{1, 2, 3}
	for i := range falseReportLimit {
		counter := uint64(1000 + i)
		m := framesig.Message(framesig.Video, counter, hash)
		ev := framesig.Evidence{Kind: framesig.Video, Counter: counter, Hash: hash, Sig: ed25519.Sign(priv, m[:]), Last: 999}
		child.send(mustEncode(t, &protocol.Message{Type: protocol.TypeTampered, Peer: relayID, Evidence: meshEvidence(ev)}))
	}
	childID := w.ID
	waitFor(t, 10*time.Second, "the liar barred", func() bool {
		n, ok := treeNode(t, url, "liar", childID)
		return ok && n.Trust == tree.TrustBarred
	})
	n, _ := treeNode(t, url, "liar", childID)
	r, _ := treeNode(t, url, "liar", relayID)
	if n.Parent != relayID || r.Tampering || r.Trust == tree.TrustBarred {
		t.Errorf("after false reports: child under %q, relay %+v; want the child where it was and the relay untouched", n.Parent, r)
	}
}

func mustEncode(t *testing.T, m *protocol.Message) string {
	t.Helper()
	b, err := protocol.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// meshEvidence writes evidence as a Go viewer's report carries it.
func meshEvidence(ev framesig.Evidence) *protocol.Evidence {
	return &protocol.Evidence{Track: string(rune(ev.Kind)), Counter: ev.Counter, Last: ev.Last,
		Hash: base64.RawURLEncoding.EncodeToString(ev.Hash[:]), Sig: base64.RawURLEncoding.EncodeToString(ev.Sig)}
}

// TestWHIPIngestSignsFrames: the server signs for a WHIP publisher (its
// ingest node gathers each H264 access unit, signs it with a key of the
// server's, packetizes it again); a Go viewer verifies every frame and
// plays the publisher's bytes.
func TestWHIPIngestSignsFrames(t *testing.T) {
	lightTest(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	obs := newWHIPClient(t)
	if code, body := obs.publish(url, "whip-signed", ""); code != http.StatusCreated {
		t.Fatalf("POST /whip: %d %s", code, body)
	}
	obs.play(h264Clip)
	v := startVerifyingPeer(t, url, "whip-signed", protocol.RoleViewer, 0, obs.src)
	waitFor(t, 30*time.Second, "the viewer verifies 60 frames", func() bool { n, _, _ := v.counts(); return n >= 60 })
	video, audio, forged := v.counts()
	st := v.node.FrameStats()
	t.Logf("viewer of a WHIP stream: %d video, %d audio frames; %+v", video, audio, st)
	if !v.node.Verifies() || st.Rejected != 0 || forged != 0 || audio == 0 {
		t.Errorf("verifies %v, %d frames the publisher never sent, %+v", v.node.Verifies(), forged, st)
	}
}
