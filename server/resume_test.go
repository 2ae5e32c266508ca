package main

import (
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"canopy/mesh"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// cutSignaling drops peer id's WebSocket from the server's side, as a
// proxy or a network fault would: the TCP connection closes, no close
// frame. Its PeerConnections are not touched. It returns the connection
// that was cut.
func cutSignaling(t *testing.T, s *Server, stream, id string) *peerConn {
	return cutSignalingTB(t, s, stream, id)
}

func cutSignalingTB(t testing.TB, s *Server, stream, id string) *peerConn {
	t.Helper()
	co := s.hub.get(stream)
	co.mu.Lock()
	p := co.peers[id]
	co.mu.Unlock()
	ws, ok := s.socketOf(p).(*websocket.Conn) // at its edge (owner.go)
	if !ok {
		t.Fatalf("peer %s has no WebSocket", id)
	}
	_ = ws.NetConn().Close()
	return p
}

// resumedFrom reports whether peer id is connected again on another
// connection than old, not suspended.
func resumedFrom(s *Server, stream, id string, old *peerConn) bool {
	co := s.hub.get(stream)
	co.mu.Lock()
	defer co.mu.Unlock()
	p := co.peers[id]
	return p != nil && p != old && co.suspended[id] == nil
}

// waitSuspended waits until the server has noticed that peer id's
// connection dropped.
func waitSuspended(t *testing.T, s *Server, stream, id string) {
	t.Helper()
	waitFor(t, 10*time.Second, id+" suspended", func() bool {
		co := s.hub.get(stream)
		co.mu.Lock()
		defer co.mu.Unlock()
		return co.suspended[id] != nil
	})
}

// edgesOf is the stream's tree as child → parent.
func edgesOf(s *Server, stream string) map[string]string {
	out := map[string]string{}
	for _, n := range s.hub.get(stream).snapshot() {
		out[n.ID] = n.Parent
	}
	return out
}

func sameEdges(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestResumeKeepsTheTree cuts the signaling of the source, a relay and
// one of the relay's two viewers at once (the server closes their
// WebSockets); the relay's other viewer keeps its. Each resumes within the
// grace period with its id: the tree API shows the same edges, nobody was
// told of a new parent or that the stream went offline, and the viewers'
// frames go on.
func TestResumeKeepsTheTree(t *testing.T) {
	lightTest(t)
	s, url := startServer(t, tree.Config{SourceCapacity: 1})
	src := startSource(t, url, "resume", 1)
	relay := startPeer(t, url, "resume", protocol.RoleRelay, 2, nil)
	waitFor(t, 10*time.Second, "relay under the source", func() bool { return relay.node.Parent() == src.node.ID() })
	v1 := startPeer(t, url, "resume", protocol.RoleViewer, 0, src)
	v2 := startPeer(t, url, "resume", protocol.RoleViewer, 0, src)
	for _, v := range []*testViewer{v1, v2} {
		waitFor(t, 30*time.Second, "viewer plays from the relay", func() bool {
			f, _, _ := v.counts()
			return f >= 60 && v.node.Parent() == relay.node.ID()
		})
	}
	before := edgesOf(s, "resume")
	parentsBefore := [2]int{len(v1.parents()), len(v2.parents())}
	framesBefore := [2]int{}
	framesBefore[0], _, _ = v1.counts()
	framesBefore[1], _, _ = v2.counts()

	cut := time.Now()
	ids := []string{src.node.ID(), relay.node.ID(), v1.node.ID()}
	var old []*peerConn
	for _, id := range ids {
		old = append(old, cutSignaling(t, s, "resume", id))
	}
	var resumedIn []time.Duration
	for i, id := range ids {
		waitFor(t, 15*time.Second, id+" resumes", func() bool { return resumedFrom(s, "resume", id, old[i]) })
		resumedIn = append(resumedIn, time.Since(cut))
	}
	for i, v := range []*testViewer{v1, v2} {
		waitFor(t, 30*time.Second, "viewer plays on", func() bool { f, _, _ := v.counts(); return f >= framesBefore[i]+60 })
	}

	if after := edgesOf(s, "resume"); !sameEdges(before, after) {
		t.Errorf("the tree moved:\nbefore %v\nafter  %v", before, after)
	}
	for i, v := range []*testViewer{v1, v2} {
		if n := len(v.parents()); n != parentsBefore[i] {
			t.Errorf("viewer %d was given %d new parents: %v", i, n-parentsBefore[i], v.parents())
		}
		if v.offlineCount() != 0 {
			t.Errorf("viewer %d was told the stream went offline", i)
		}
		if _, mismatch, _ := v.counts(); mismatch != 0 {
			t.Errorf("viewer %d: %d corrupted frames", i, mismatch)
		}
	}
	for _, n := range []*mesh.Node{src.node, relay.node, v1.node} {
		select {
		case <-n.Done():
			t.Errorf("node %s stopped: %v", n.ID(), n.Err())
		default:
		}
	}
	gaps := []time.Duration{v1.longestGapAfter(cut), v2.longestGapAfter(cut)}
	t.Logf("resumed after %v (source, relay, viewer); largest frame gap since the cut: cut viewer %v, other viewer %v",
		resumedIn, gaps[0].Round(time.Millisecond), gaps[1].Round(time.Millisecond))
	for i, g := range gaps {
		if g > time.Second { // 30 fps: 33 ms a frame; a second is a visible stall
			t.Errorf("viewer %d: a frame gap of %v across the resume", i, g)
		}
	}
}

// TestQuietEndsWhenTheParentResumes: a relay's signaling drops, and its
// child is told (quiet: a short silence is then enough to switch to its
// standby); the relay resumes, and the child is told it is back (quiet,
// resumed), so a gap in a live parent's media on a loaded machine no
// longer moves it (TestResumeKeepsTheTree saw a 370 ms one in CI).
func TestQuietEndsWhenTheParentResumes(t *testing.T) {
	lightTest(t)
	const stream = "quiet-back"
	s, url := startServer(t, tree.Config{SourceCapacity: 1})
	src := startSource(t, url, stream, 1)
	relay := startPeer(t, url, stream, protocol.RoleRelay, 2, nil)
	waitFor(t, 10*time.Second, "relay under the source", func() bool { return relay.node.Parent() == src.node.ID() })
	child := dialLive(t, url, nil)
	child.sendMsg(&protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: protocol.RoleViewer, Kind: protocol.KindGo, Stream: stream})
	id := child.next(protocol.TypeWelcome).ID
	if p := parentOf(s, stream, id); p != relay.node.ID() {
		t.Fatalf("the child's parent is %q, want the relay", p)
	}
	old := cutSignaling(t, s, stream, relay.node.ID())
	if m := child.next(protocol.TypeQuiet); m.Peer != relay.node.ID() || m.Resumed {
		t.Fatalf("after the cut: %+v, want quiet for the relay", m)
	}
	waitFor(t, 15*time.Second, "the relay resumes", func() bool { return resumedFrom(s, stream, relay.node.ID(), old) })
	if m := child.next(protocol.TypeQuiet); m.Peer != relay.node.ID() || !m.Resumed {
		t.Fatalf("after the resume: %+v, want quiet with resumed for the relay", m)
	}
}

// TestSuspendedPeerRemovedAfterGrace cuts a relay off the server for good
// (its proxy stops listening): its place is kept for the grace period,
// then it is removed, and its viewer re-attaches to the source and plays.
// The relay's node gives up resuming and says so.
func TestSuspendedPeerRemovedAfterGrace(t *testing.T) {
	lightTest(t)
	const grace = 1500 * time.Millisecond
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 1}, Resume: ResumeConfig{Grace: grace}})
	src := startSource(t, url, "gone", 1)
	proxy, cut := cuttableProxy(t, url)
	relay := startPeer(t, proxy, "gone", protocol.RoleRelay, 2, nil)
	waitFor(t, 10*time.Second, "relay under the source", func() bool { return relay.node.Parent() == src.node.ID() })
	v := startPeer(t, url, "gone", protocol.RoleViewer, 0, src)
	waitFor(t, 30*time.Second, "viewer plays from the relay", func() bool {
		f, _, _ := v.counts()
		return f >= 30 && v.node.Parent() == relay.node.ID()
	})
	relayID := relay.node.ID()

	cut(true)
	at := time.Now()
	waitSuspended(t, s, "gone", relayID)
	if _, ok := nodeOf(s, "gone", relayID); !ok {
		t.Fatal("the relay left the tree at once; its place should be kept")
	}
	waitFor(t, 30*time.Second, "the relay is removed", func() bool { _, ok := nodeOf(s, "gone", relayID); return !ok })
	removed := time.Since(at)
	// Removed by its grace period ending, or sooner only on evidence: its
	// viewer's stall report (a loaded machine can stall a viewer).
	byMedia := s.hub.resumer.counts.mediaLost.Load()
	if removed < grace-100*time.Millisecond && byMedia == 0 {
		t.Errorf("removed %v after the cut, before the %v grace period, with no stall report", removed, grace)
	}
	waitFor(t, 30*time.Second, "the viewer re-attaches to the source", func() bool { return v.node.Parent() == src.node.ID() })
	f0, _, _ := v.counts()
	waitFor(t, 30*time.Second, "the viewer plays again", func() bool { f, _, _ := v.counts(); return f >= f0+30 })
	waitFor(t, 30*time.Second, "the relay's node gives up", func() bool {
		select {
		case <-relay.node.Done():
			return true
		default:
			return false
		}
	})
	if err := relay.node.Err(); !errors.Is(err, mesh.ErrResumeFailed) {
		t.Errorf("relay node ended with %v, want ErrResumeFailed", err)
	}
	t.Logf("relay removed %v after the cut (grace %v; by its viewer's report: %v); node: %v", removed.Round(time.Millisecond), grace, byMedia != 0, relay.node.Err())
}

// TestBrowserResumesWithoutNewPeerConnection: a Chromium viewer under a Go
// relay whose WebSocket the server cuts resumes its place: the same id,
// the same RTCPeerConnection (none is created after the cut), the tree
// unmoved, and frames keep being decoded.
func TestBrowserResumesWithoutNewPeerConnection(t *testing.T) {
	browserTest(t)
	s, url := startServer(t, tree.Config{SourceCapacity: 1})
	src := startSource(t, url, "bresume", 1)
	relay := startPeer(t, url, "bresume", protocol.RoleRelay, 4, nil)
	waitFor(t, 10*time.Second, "relay placed", func() bool { return relay.node.Parent() == src.node.ID() })

	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"/watch/bresume")); err != nil {
		t.Fatal(err)
	}
	first := waitPlaying(t, ctx, 10, 45*time.Second)
	var browserID string
	waitFor(t, 10*time.Second, "the browser in the tree", func() bool {
		for _, n := range s.hub.get("bresume").snapshot() {
			if string(n.Kind) == string(protocol.KindBrowser) && n.Parent == relay.node.ID() {
				browserID = n.ID
				return true
			}
		}
		return false
	})
	// Count the RTCPeerConnections the page makes from now on.
	const mark = `(() => {
	  const c = window.canopy.client;
	  window.__pc = c.pc; window.__id = c.id; window.__pcs = 0; window.__resumed = 0;
	  c.addEventListener('resumed', () => { window.__resumed++; });
	  const Orig = window.RTCPeerConnection;
	  window.RTCPeerConnection = class extends Orig { constructor(...a) { super(...a); window.__pcs++; } };
	  return c.id;
	})()`
	id, err := chromedp.Run(ctx, chromedp.Evaluate[string](mark))
	if err != nil || id != browserID {
		t.Fatalf("marking the page: id %q (tree says %q): %v", id, browserID, err)
	}
	before := edgesOf(s, "bresume")
	old := cutSignaling(t, s, "bresume", browserID)
	cut := time.Now()
	waitFor(t, 15*time.Second, "the browser resumes", func() bool { return resumedFrom(s, "bresume", browserID, old) })
	resumedIn := time.Since(cut)
	later := waitPlaying(t, ctx, first.FramesDecoded+60, 30*time.Second)

	type check struct {
		SamePC  bool    `json:"samePC"`
		SameID  bool    `json:"sameID"`
		NewPCs  float64 `json:"newPCs"`
		Resumed float64 `json:"resumed"`
		State   string  `json:"state"`
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[check](`(() => { const c = window.canopy.client;
	  return {samePC: c.pc === window.__pc, sameID: c.id === window.__id, newPCs: window.__pcs, resumed: window.__resumed, state: c.state}; })()`))
	if err != nil {
		t.Fatal(err)
	}
	if !got.SamePC || !got.SameID || got.NewPCs != 0 || got.Resumed != 1 || got.State != "live" {
		t.Errorf("after the cut: %+v; want the same RTCPeerConnection and id, no new one, one resume, live", got)
	}
	if after := edgesOf(s, "bresume"); !sameEdges(before, after) {
		t.Errorf("the tree moved: %v → %v", before, after)
	}
	t.Logf("browser resumed %v after the cut; frames %v → %v", resumedIn.Round(time.Millisecond), first.FramesDecoded, later.FramesDecoded)
}

// TestResumeReplaysWhatMoved: while a relay is away, its viewer leaves and
// a new viewer is placed under it (the server keeps neither the attach nor
// the detach for it). When it resumes, its resumed welcome lists its
// children as they are now: it drops the link to the viewer that left and
// offers to the new one, which plays; its own place is unchanged.
func TestResumeReplaysWhatMoved(t *testing.T) {
	lightTest(t)
	s, url := startServer(t, tree.Config{SourceCapacity: 1})
	src := startSource(t, url, "moved", 1)
	proxy, cut, pause := pausableProxy(t, url)
	relay := startPeer(t, proxy, "moved", protocol.RoleRelay, 2, nil)
	waitFor(t, 10*time.Second, "relay under the source", func() bool { return relay.node.Parent() == src.node.ID() })
	v1 := startPeer(t, url, "moved", protocol.RoleViewer, 0, src)
	waitFor(t, 30*time.Second, "v1 plays from the relay", func() bool {
		f, _, _ := v1.counts()
		return f >= 30 && v1.node.Parent() == relay.node.ID() && relay.node.Children() == 1
	})
	waitFor(t, 10*time.Second, "the relay proven", func() bool { n, _ := nodeOf(s, "moved", relay.node.ID()); return n.Usable == 2 })

	pause.Store(true)
	cut(false)
	waitSuspended(t, s, "moved", relay.node.ID())
	_ = v1.node.Close() // its leave: the relay is not told
	v2 := startPeer(t, url, "moved", protocol.RoleViewer, 0, src)
	waitFor(t, 10*time.Second, "v2 placed under the suspended relay", func() bool { return parentOf(s, "moved", v2.node.ID()) == relay.node.ID() })
	waitFor(t, 10*time.Second, "v1 gone", func() bool { _, ok := nodeOf(s, "moved", v1.node.ID()); return !ok })
	if relay.node.Children() != 1 {
		t.Fatalf("the relay feeds %d children while away, want its old link to v1 only", relay.node.Children())
	}
	pause.Store(false)
	waitFor(t, 15*time.Second, "the relay resumes", func() bool {
		co := s.hub.get("moved")
		co.mu.Lock()
		defer co.mu.Unlock()
		return co.suspended[relay.node.ID()] == nil && co.peers[relay.node.ID()] != nil
	})
	waitFor(t, 30*time.Second, "v2 plays from the relay", func() bool {
		f, _, _ := v2.counts()
		return f >= 30 && v2.node.Parent() == relay.node.ID()
	})
	if relay.node.Parent() != src.node.ID() || parentOf(s, "moved", relay.node.ID()) != src.node.ID() {
		t.Errorf("the relay moved: parent %s", relay.node.Parent())
	}
	waitFor(t, 10*time.Second, "the relay feeds v2 only", func() bool { return relay.node.Children() == 1 })
}

// BenchmarkResumeCut cuts a relay's WebSocket b.N times (the server closes
// it) while its two viewers play, and reports how long the relay took to
// resume and the largest gap between two frames at its viewers across
// each cut, p50 and max, beside the largest gap in a second without a cut
// just before. Every cut must resume with the tree unmoved.
// go test ./server -run X -bench ResumeCut -benchtime=20x
func BenchmarkResumeCut(b *testing.B) {
	s, url := startServer(b, tree.Config{SourceCapacity: 1})
	src := startSource(b, url, "rbench", 1)
	relay := startPeer(b, url, "rbench", protocol.RoleRelay, 2, nil)
	waitFor(b, 10*time.Second, "relay under the source", func() bool { return relay.node.Parent() == src.node.ID() })
	viewers := []*testViewer{startPeer(b, url, "rbench", protocol.RoleViewer, 0, src), startPeer(b, url, "rbench", protocol.RoleViewer, 0, src)}
	for _, v := range viewers {
		waitFor(b, 30*time.Second, "viewer plays from the relay", func() bool {
			f, _, _ := v.counts()
			return f >= 30 && v.node.Parent() == relay.node.ID()
		})
	}
	edges := edgesOf(s, "rbench")
	var resumeMs, gapMs, baseMs []float64
	b.ResetTimer()
	for range b.N {
		// The same second of playing without a cut, for comparison: on a
		// loaded machine frames arrive late without any help from a cut.
		quiet := time.Now()
		f0, _, _ := viewers[0].counts()
		waitFor(b, 15*time.Second, "a quiet second", func() bool { f, _, _ := viewers[0].counts(); return f >= f0+30 })
		var base time.Duration
		for _, v := range viewers {
			base = max(base, v.longestGapAfter(quiet))
		}
		baseMs = append(baseMs, float64(base.Microseconds())/1000)
		f0, _, _ = viewers[0].counts()
		cut := time.Now()
		old := cutSignalingTB(b, s, "rbench", relay.node.ID())
		waitFor(b, 15*time.Second, "the relay resumes", func() bool { return resumedFrom(s, "rbench", relay.node.ID(), old) })
		resumeMs = append(resumeMs, float64(time.Since(cut).Microseconds())/1000)
		waitFor(b, 15*time.Second, "a second of frames after the cut", func() bool { f, _, _ := viewers[0].counts(); return f >= f0+30 })
		var gap time.Duration
		for _, v := range viewers {
			gap = max(gap, v.longestGapAfter(cut))
		}
		gapMs = append(gapMs, float64(gap.Microseconds())/1000)
		if !sameEdges(edges, edgesOf(s, "rbench")) {
			b.Fatalf("cut %d moved the tree", len(resumeMs))
		}
	}
	b.StopTimer()
	sort.Float64s(resumeMs)
	sort.Float64s(gapMs)
	sort.Float64s(baseMs)
	b.ReportMetric(baseMs[len(baseMs)/2], "nocut-gap-p50-ms")
	b.ReportMetric(baseMs[len(baseMs)-1], "nocut-gap-max-ms")
	b.ReportMetric(resumeMs[len(resumeMs)/2], "resume-p50-ms")
	b.ReportMetric(resumeMs[len(resumeMs)-1], "resume-max-ms")
	b.ReportMetric(gapMs[len(gapMs)/2], "gap-p50-ms")
	b.ReportMetric(gapMs[len(gapMs)-1], "gap-max-ms")
	b.Logf("%d cuts: resume ms %v; largest frame gap ms %v; the same without a cut %v", len(resumeMs), resumeMs, gapMs, baseMs)
}

// TestQueuedPeerResumes: a peer waiting in the queue (the stream is full)
// resumes too: its resumed welcome says it has no parent, and it is still
// queued, placed as soon as a slot frees up.
func TestQueuedPeerResumes(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 1}, Resume: ResumeConfig{Grace: 2 * time.Second}})
	_, srcID := join(t, url, protocol.RoleSource, protocol.KindGo, "queue", 1)
	first, firstID := join(t, url, protocol.RoleViewer, protocol.KindGo, "queue", 0)
	waitFor(t, 10*time.Second, "the first viewer placed", func() bool { return parentOf(s, "queue", firstID) == srcID })
	q := dialLive(t, url, nil)
	q.send(hello(protocol.RoleViewer, protocol.KindGo, "queue", 0, ""))
	w := q.next(protocol.TypeWelcome)
	if n, ok := nodeOf(s, "queue", w.ID); !ok || n.Parent != "" {
		t.Fatalf("second viewer %+v: want it queued", n)
	}
	q.drop()
	waitSuspended(t, s, "queue", w.ID)
	again := dialLive(t, url, nil)
	m := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: protocol.RoleViewer, Kind: protocol.KindGo,
		Stream: "queue", Resume: w.Resume}
	data, _ := protocol.Encode(m)
	again.send(string(data))
	rw := again.next(protocol.TypeWelcome)
	if !rw.Resumed || rw.ID != w.ID || rw.Peer != "" || rw.Depth != 0 {
		t.Fatalf("resumed welcome of a queued peer: %+v", rw)
	}
	first.drop() // its slot frees up once its grace ends
	again.next(protocol.TypeParent)
	if got := parentOf(s, "queue", w.ID); got != srcID {
		t.Fatalf("resumed queued viewer placed under %q, want the source", got)
	}
}
