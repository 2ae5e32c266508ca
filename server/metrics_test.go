package main

import (
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// sigPeer is a signaling-only peer: it speaks the protocol over a raw
// WebSocket and never opens a media connection, so a test decides exactly
// which live, stalled and stats messages the server sees.
type sigPeer struct {
	t    *testing.T
	id   string
	conn *websocket.Conn

	mu   sync.Mutex
	got  []*protocol.Message
	wmu  sync.Mutex
	done chan struct{}
}

var sigTracks = []protocol.Track{{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}}

// dialSig joins stream as role/kind and waits for the welcome (or, with
// wantError, for the error that refuses it).
func dialSig(t *testing.T, url, stream string, role protocol.Role, kind protocol.Kind, capacity int) *sigPeer {
	t.Helper()
	p := connectSig(t, url, stream, role, kind, capacity)
	p.waitFor(10*time.Second, "welcome", func(m *protocol.Message) bool { return m.Type == protocol.TypeWelcome })
	for _, m := range p.messages() {
		if m.Type == protocol.TypeWelcome {
			p.id = m.ID
			break
		}
	}
	return p
}

func connectSig(t *testing.T, url, stream string, role protocol.Role, kind protocol.Kind, capacity int) *sigPeer {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(url, "http")+"/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	p := &sigPeer{t: t, conn: conn, done: make(chan struct{})}
	go p.readLoop()
	t.Cleanup(p.close)
	hello := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role, Kind: kind, Stream: stream, Capacity: capacity}
	if role == protocol.RoleSource {
		hello.Tracks = sigTracks
	}
	p.send(hello)
	return p
}

func (p *sigPeer) readLoop() {
	defer close(p.done)
	for {
		_, data, err := p.conn.ReadMessage()
		if err != nil {
			return
		}
		m, err := protocol.Decode(data)
		if err != nil {
			continue
		}
		p.mu.Lock()
		p.got = append(p.got, m)
		p.mu.Unlock()
	}
}

func (p *sigPeer) send(m *protocol.Message) {
	p.t.Helper()
	data, err := protocol.Encode(m)
	if err != nil {
		p.t.Fatalf("encode %s: %v", m.Type, err)
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.conn.WriteMessage(websocket.TextMessage, data); err != nil {
		p.t.Fatalf("send %s: %v", m.Type, err)
	}
}

func (p *sigPeer) stats(s protocol.Stats) {
	p.send(&protocol.Message{Type: protocol.TypeStats, Stats: &s})
}

func (p *sigPeer) live(parent string) {
	p.send(&protocol.Message{Type: protocol.TypeLive, Peer: parent})
}

// close drops the connection without a leave, as a crash would.
func (p *sigPeer) close() {
	_ = p.conn.Close()
	<-p.done
}

func (p *sigPeer) messages() []*protocol.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*protocol.Message(nil), p.got...)
}

func (p *sigPeer) waitFor(timeout time.Duration, what string, match func(*protocol.Message) bool) {
	p.t.Helper()
	waitFor(p.t, timeout, what, func() bool {
		for _, m := range p.messages() {
			if match(m) {
				return true
			}
		}
		return false
	})
}

// parent is the last parent the server assigned p ("" if none).
func (p *sigPeer) parent() string {
	parent := ""
	for _, m := range p.messages() {
		switch {
		case m.Type == protocol.TypeParent:
			parent = m.Peer
		case m.Type == protocol.TypeDetach && m.Peer == parent:
			parent = ""
		}
	}
	return parent
}

// scrape fetches and parses /metrics.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metric is a counter's or gauge's value, or a histogram's sample count,
// for the series with exactly these labels (name=value pairs); -1 if absent.
func metric(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel())*2 != len(labels) {
			continue
		}
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

func expectMetric(t *testing.T, fams map[string]*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	if got := metric(fams, name, labels...); math.Abs(got-want) > 1e-9 {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// TestMetricsCountWhatHappened drives a stream with signaling-only peers so
// that every join, stats report, live report and re-parent is known, then
// checks /metrics and the stats API against it.
func TestMetricsCountWhatHappened(t *testing.T) {
	lightTest(t)
	// A short resume grace: the relay's crash below is a connection that
	// never comes back (suspend.go), and these peers carry no media whose
	// silence would tell the server sooner.
	_, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 1}, Resume: ResumeConfig{Grace: 100 * time.Millisecond}})
	src := dialSig(t, url, "m", protocol.RoleSource, protocol.KindGo, 1)
	relay := dialSig(t, url, "m", protocol.RoleRelay, protocol.KindGo, 2)
	relay.waitFor(10*time.Second, "relay placed", func(m *protocol.Message) bool {
		return m.Type == protocol.TypeParent && m.Peer == src.id
	})
	v1 := dialSig(t, url, "m", protocol.RoleViewer, protocol.KindBrowser, 0)
	v1.waitFor(10*time.Second, "viewer under the relay", func(m *protocol.Message) bool {
		return m.Type == protocol.TypeParent && m.Peer == relay.id
	})
	// The relay's child on trial plays from it: the relay has proven it
	// forwards, and gets its capacity (trust.go).
	v1.live(relay.id) // time to first frame measured by the server
	waitFor(t, 10*time.Second, "the relay trusted with its capacity", func() bool {
		var sr statsResponse
		getJSON(t, url+"/api/streams/m/stats", &sr)
		for _, n := range sr.Nodes {
			if n.ID == relay.id {
				return n.Usable == 2
			}
		}
		return false
	})
	v2 := dialSig(t, url, "m", protocol.RoleViewer, protocol.KindBrowser, 0)
	v2.waitFor(10*time.Second, "viewer under the relay", func(m *protocol.Message) bool {
		return m.Type == protocol.TypeParent && m.Peer == relay.id
	})
	v3 := dialSig(t, url, "m", protocol.RoleViewer, protocol.KindBrowser, 0) // no slot left: queued
	v3.waitFor(10*time.Second, "queued", func(m *protocol.Message) bool { return m.Type == protocol.TypeError && m.Code == protocol.CodeFull })
	taken := connectSig(t, url, "m", protocol.RoleSource, protocol.KindGo, 1)
	taken.waitFor(10*time.Second, "second source refused", func(m *protocol.Message) bool {
		return m.Type == protocol.TypeError && m.Code == protocol.CodeStreamTaken
	})

	// The source sent 1000 bytes; the relay received them and relayed
	// 2000 to its two viewers: peers delivered 2000 of the 3000 received.
	src.stats(protocol.Stats{BytesRelayed: 1000, PacketsRelayed: 10})
	relay.stats(protocol.Stats{BytesReceived: 1000, PacketsReceived: 10, BytesRelayed: 2000})
	v1.stats(protocol.Stats{BytesReceived: 1000, PacketsReceived: 10, StallMs: 1500})
	v2.stats(protocol.Stats{BytesReceived: 1000, PacketsReceived: 9, PacketsLost: 1, FirstFrameMs: 400})
	var sr statsResponse
	waitFor(t, 10*time.Second, "stats reports", func() bool {
		getJSON(t, url+"/api/streams/m/stats", &sr)
		return sr.Figures.Reports == 4
	})
	if want := 2.0 / 3; math.Abs(sr.Figures.PeerEfficiency-want) > 1e-9 {
		t.Errorf("peer efficiency %v, want %v", sr.Figures.PeerEfficiency, want)
	}
	if sr.Figures.FirstFrames != 2 || sr.Figures.Queued != 1 || sr.Figures.Depth != 2 {
		t.Errorf("figures %+v: want 2 first frames, 1 queued, depth 2", sr.Figures)
	}
	states := map[string]string{}
	for _, n := range sr.Nodes {
		states[n.ID] = n.State
	}
	if states[src.id] != stateSource || states[v1.id] != stateLive || states[v3.id] != stateQueued {
		t.Errorf("node states %v: want source, live v1 %s, queued v3 %s", states, v1.id, v3.id)
	}

	// The relay crashes: the source's slot goes to one of its orphans, the
	// re-parent; when that one plays from the source, it has recovered.
	relay.close()
	var moved *sigPeer
	waitFor(t, 10*time.Second, "an orphan re-attached to the source", func() bool {
		for _, v := range []*sigPeer{v1, v2, v3} {
			if v.parent() == src.id {
				moved = v
				return true
			}
		}
		return false
	})
	if moved == v3 {
		t.Fatalf("the queued viewer took the freed slot before the relay's orphans")
	}
	moved.live(src.id)
	waitFor(t, 10*time.Second, "the recovery counted", func() bool {
		getJSON(t, url+"/api/streams/m/stats", &sr)
		return len(sr.Figures.Recoveries) == 1
	})
	if rc := sr.Figures.Recoveries[0]; rc.Peer != moved.id || rc.From != relay.id || rc.To != src.id || rc.Ms <= 0 {
		t.Errorf("recovery %+v, want %s from %s to %s", rc, moved.id, relay.id, src.id)
	}

	fams := scrape(t, url)
	expectMetric(t, fams, 1, "canopy_streams")
	expectMetric(t, fams, 1, "canopy_live_streams")
	expectMetric(t, fams, 1, "canopy_joins_total", "role", "source", "outcome", "ok")
	expectMetric(t, fams, 1, "canopy_joins_total", "role", "source", "outcome", "stream_taken")
	expectMetric(t, fams, 1, "canopy_joins_total", "role", "relay", "outcome", "ok")
	expectMetric(t, fams, 2, "canopy_joins_total", "role", "viewer", "outcome", "ok")
	expectMetric(t, fams, 1, "canopy_joins_total", "role", "viewer", "outcome", "queued")
	expectMetric(t, fams, 1, "canopy_peers", "role", "source", "kind", "go")
	expectMetric(t, fams, 0, "canopy_peers", "role", "relay", "kind", "go")
	expectMetric(t, fams, 3, "canopy_peers", "role", "viewer", "kind", "browser")
	expectMetric(t, fams, 1, "canopy_reparents_total")
	expectMetric(t, fams, 1, "canopy_recovery_seconds")
	expectMetric(t, fams, 2, "canopy_time_to_first_frame_seconds")
	expectMetric(t, fams, 4, "canopy_stats_reports_total")
	expectMetric(t, fams, 1.5, "canopy_stall_seconds_total")
	// The relay has left; what it reported still counts.
	expectMetric(t, fams, 1000, "canopy_source_bytes_total")
	expectMetric(t, fams, 2000, "canopy_relayed_bytes_total")
	expectMetric(t, fams, 3000, "canopy_delivered_bytes_total")
	expectMetric(t, fams, 2.0/3, "canopy_peer_efficiency_ratio")
	expectMetric(t, fams, 1, "canopy_tree_depth")
	for name := range fams {
		if strings.HasPrefix(name, "canopy_") {
			for _, m := range fams[name].GetMetric() {
				for _, l := range m.GetLabel() {
					if n := l.GetName(); n != "role" && n != "kind" && n != "outcome" && n != "figure" && n != "reason" {
						t.Errorf("%s has label %q: only role, kind, outcome, figure and reason are bounded", name, l.GetName())
					}
				}
			}
		}
	}
}

// TestMetricsSurviveStreamEnd checks that counters never go backwards when
// a stream ends and its coordinator is dropped.
func TestMetricsSurviveStreamEnd(t *testing.T) {
	lightTest(t)
	// Closed connections are suspended for their resume first; the stream
	// ends when that grace does.
	_, url := startServerWith(t, Config{Resume: ResumeConfig{Grace: 100 * time.Millisecond}})
	src := dialSig(t, url, "gone", protocol.RoleSource, protocol.KindGo, 2)
	v := dialSig(t, url, "gone", protocol.RoleViewer, protocol.KindGo, 0)
	src.stats(protocol.Stats{BytesRelayed: 500})
	v.stats(protocol.Stats{BytesReceived: 500})
	waitFor(t, 10*time.Second, "reports", func() bool { return metric(scrape(t, url), "canopy_stats_reports_total") == 2 })
	v.close()
	src.close()
	waitFor(t, 10*time.Second, "stream removed", func() bool { return metric(scrape(t, url), "canopy_streams") == 0 })
	fams := scrape(t, url)
	expectMetric(t, fams, 500, "canopy_source_bytes_total")
	expectMetric(t, fams, 500, "canopy_delivered_bytes_total")
	expectMetric(t, fams, 2, "canopy_stats_reports_total")
	expectMetric(t, fams, 1, "canopy_joins_total", "role", "viewer", "outcome", "ok")
	expectMetric(t, fams, 0, "canopy_peers", "role", "viewer", "kind", "go")
}

// TestStreamObsRecoveryAfterStall checks the timing rules without a server:
// a stalled report starts a recovery that a live report from a new parent
// ends; losing the source is an outage, not a recovery.
func TestStreamObsRecoveryAfterStall(t *testing.T) {
	now := time.Unix(1000, 0)
	o := newStreamObs(testLogger())
	o.now = func() time.Time { return now }
	hello := func(role protocol.Role) *protocol.Message {
		return &protocol.Message{Type: protocol.TypeHello, Role: role, Kind: protocol.KindGo}
	}
	o.joined("src", hello(protocol.RoleSource), false)
	o.joined("a", hello(protocol.RoleRelay), false)
	o.joined("b", hello(protocol.RoleViewer), false)
	o.changed(tree.Change{Node: "a", To: "src"})
	o.changed(tree.Change{Node: "b", To: "a"})
	now = now.Add(300 * time.Millisecond)
	o.report("b", &protocol.Message{Type: protocol.TypeLive, Peer: "a"})

	now = now.Add(time.Second)
	o.report("b", &protocol.Message{Type: protocol.TypeStalled, Peer: "a"})
	now = now.Add(200 * time.Millisecond)
	o.changed(tree.Change{Node: "b", From: "a", To: "src"})
	now = now.Add(500 * time.Millisecond)
	o.report("b", &protocol.Message{Type: protocol.TypeLive, Peer: "a"}) // stale: not its parent
	o.report("b", &protocol.Message{Type: protocol.TypeLive, Peer: "src"})

	o.changed(tree.Change{Node: "a", From: "src"}) // the source left
	o.left("src")
	t2 := o.snapshot()
	if t2.Recovery.count != 1 || math.Abs(t2.Recovery.sum-0.7) > 1e-9 {
		t.Errorf("recoveries: %d totalling %vs, want one of 0.7s", t2.Recovery.count, t2.Recovery.sum)
	}
	if t2.FirstFrame.count != 1 || math.Abs(t2.FirstFrame.sum-0.3) > 1e-9 {
		t.Errorf("first frames: %d totalling %vs, want one of 0.3s", t2.FirstFrame.count, t2.FirstFrame.sum)
	}
	if t2.Reparents != 1 || t2.Stalls != 1 {
		t.Errorf("reparents %d, stalls %d; want 1 and 1", t2.Reparents, t2.Stalls)
	}
	if p := o.peers["a"]; p == nil || !p.lostAt.IsZero() || p.state != stateQueued {
		t.Errorf("a source's child waiting for a new source is queued, not recovering: %+v", p)
	}
}

// TestMetricsGoTreeRecovery runs real Go peers: a source, two relays in a
// chain and a viewer. The upper relay leaves; the lower one is re-parented
// to the source and the viewer keeps playing. /metrics counts the joins and
// the re-parent; the Go peers' stats and live reports give relayed bytes,
// peer efficiency, time to first frame and the recovery's duration.
func TestMetricsGoTreeRecovery(t *testing.T) {
	_, url := startServer(t, tree.Config{SourceCapacity: 1})
	src := startSource(t, url, "gm", 1)
	r1 := startPeer(t, url, "gm", protocol.RoleRelay, 1, nil)
	waitFor(t, 10*time.Second, "relay 1 under the source", func() bool { return r1.node.Parent() == src.node.ID() })
	r2 := startPeer(t, url, "gm", protocol.RoleRelay, 1, nil)
	waitFor(t, 10*time.Second, "relay 2 under relay 1", func() bool { return r2.node.Parent() == r1.node.ID() })
	v := startPeer(t, url, "gm", protocol.RoleViewer, 0, src)
	waitFor(t, 10*time.Second, "viewer under relay 2", func() bool { return v.node.Parent() == r2.node.ID() })
	waitFor(t, 45*time.Second, "viewer frames", func() bool { f, _, _ := v.counts(); return f >= 30 })

	before := scrape(t, url)
	expectMetric(t, before, 3, "canopy_tree_depth")
	_ = r1.node.Close()
	waitFor(t, 15*time.Second, "relay 2 re-parented to the source", func() bool { return r2.node.Parent() == src.node.ID() })
	f0, _, _ := v.counts()
	waitFor(t, 30*time.Second, "viewer frames after the move", func() bool { f, _, _ := v.counts(); return f >= f0+30 })

	fams := scrape(t, url)
	expectMetric(t, fams, 1, "canopy_joins_total", "role", "source", "outcome", "ok")
	expectMetric(t, fams, 2, "canopy_joins_total", "role", "relay", "outcome", "ok")
	expectMetric(t, fams, 1, "canopy_joins_total", "role", "viewer", "outcome", "ok")
	expectMetric(t, fams, 1, "canopy_peers", "role", "relay", "kind", "go")
	expectMetric(t, fams, 2, "canopy_tree_depth")
	if n := metric(fams, "canopy_reparents_total"); n < 1 {
		t.Errorf("canopy_reparents_total = %v after relay 2 moved", n)
	}

	// Go peers report stats every 5 s. Of the three peers below the source
	// two received from a relay, so once everyone has reported, about two
	// thirds of what peers received came from peers.
	waitFor(t, 30*time.Second, "peer efficiency near two thirds", func() bool {
		f := scrape(t, url)
		e := metric(f, "canopy_peer_efficiency_ratio")
		return metric(f, "canopy_relayed_bytes_total") > 0 && e > 0.5 && e < 0.85
	})
	fams = scrape(t, url)
	t.Logf("source %v B, relayed %v B, delivered %v B, efficiency %.2f",
		metric(fams, "canopy_source_bytes_total"), metric(fams, "canopy_relayed_bytes_total"),
		metric(fams, "canopy_delivered_bytes_total"), metric(fams, "canopy_peer_efficiency_ratio"))
	if metric(fams, "canopy_time_to_first_frame_seconds") <= 0 {
		t.Error("no time to first frame recorded from the Go peers' live reports")
	}
	{
		waitFor(t, 30*time.Second, "relay 2's recovery timed", func() bool {
			return metric(scrape(t, url), "canopy_recovery_seconds") >= 1
		})
	}
}

// TestMetricsCountRefusedAndShortLivedStreams checks the two joins the
// coordinators never see: a viewer of a stream that does not exist, and a
// stream that starts and ends between two scrapes.
func TestMetricsCountRefusedAndShortLivedStreams(t *testing.T) {
	lightTest(t)
	_, url := startServer(t, tree.Config{})
	q := dialRaw(t, url)
	q.sendText(`{"type":"hello","v":1,"role":"viewer","kind":"browser","stream":"ghost"}`)
	q.next(protocol.TypeError)

	s := dialRaw(t, url)
	s.sendText(`{"type":"hello","v":1,"role":"source","kind":"go","stream":"brief",` +
		`"tracks":[{"id":"video","kind":"video","mimeType":"video/VP8","clockRate":90000}]}`)
	s.next(protocol.TypeWelcome)
	s.sendText(`{"type":"leave"}`)
	s.conn.Close()
	waitFor(t, 10*time.Second, "the brief stream is gone", func() bool {
		var streams []streamInfo
		getJSON(t, url+"/api/streams", &streams)
		return len(streams) == 0
	})

	fams := scrape(t, url)
	expectMetric(t, fams, 1, "canopy_joins_total", "role", "viewer", "outcome", "not_found")
	expectMetric(t, fams, 1, "canopy_joins_total", "role", "source", "outcome", "ok")
	expectMetric(t, fams, 0, "canopy_streams")
}
