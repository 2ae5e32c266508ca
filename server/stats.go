package main

import (
	"log/slog"
	"slices"
	"sync"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Join outcomes counted by canopy_joins_total and the dashboard.
const (
	outcomeOK          = "ok"           // placed under a parent (or the source's own publish)
	outcomeQueued      = "queued"       // accepted, waiting for a free slot
	outcomeStreamTaken = "stream_taken" // a second source for a live stream
	outcomeNotFound    = "not_found"    // no such stream (counted by the hub)
	outcomeRefused     = "refused"      // any other refusal
)

// Node health as the dashboard colours it.
const (
	stateSource     = "source"
	stateJoining    = "joining"    // placed, nothing playing yet
	stateLive       = "live"       // said live, or its counters advance
	stateStalled    = "stalled"    // reported a stalled parent
	stateQueued     = "queued"     // no parent: waiting for a slot or a source
	stateRecovering = "recovering" // lost its parent, re-attached, not live yet
)

// Histogram bounds in seconds. Time to first frame includes ICE and the wait
// for a keyframe; recovery is a re-parent plus a new offer/answer.
var (
	firstFrameBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30}
	recoveryBuckets   = []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30}
)

const (
	keepFirstFrames = 512 // samples kept for the dashboard's median
	keepRecoveries  = 20  // recoveries listed on the dashboard
)

// histogram is a fixed-bucket histogram that can be summed across streams
// and handed to prometheus.MustNewConstHistogram.
type histogram struct {
	bounds []float64
	counts []uint64 // per bucket, not cumulative; len(bounds)+1 with +Inf
	sum    float64
	count  uint64
}

func newHistogram(bounds []float64) histogram {
	return histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i, _ := slices.BinarySearch(h.bounds, v)
	h.counts[i]++
	h.sum += v
	h.count++
}

func (h *histogram) add(o histogram) {
	if h.counts == nil {
		*h = newHistogram(o.bounds)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.sum += o.sum
	h.count += o.count
}

// cumulative returns upper bound → observations at or below it.
func (h histogram) cumulative() map[float64]uint64 {
	out := make(map[float64]uint64, len(h.bounds))
	var n uint64
	for i, b := range h.bounds {
		n += h.counts[i]
		out[b] = n
	}
	return out
}

// joinKey labels one join counter.
type joinKey struct {
	Role    protocol.Role
	Outcome string
}

// streamTotals are one stream's cumulative figures. Every field only grows
// while the stream exists, so totals of several streams can be summed into
// Prometheus counters.
type streamTotals struct {
	Joins          map[joinKey]uint64
	SourceBytes    uint64 // sent by the source to its children
	RelayedBytes   uint64 // sent by non-source peers to their children
	DeliveredBytes uint64 // received by non-source peers
	StallSeconds   float64
	PeerSeconds    float64 // time non-source peers spent in the stream
	Stalls         uint64  // stalled reports
	Reparents      uint64
	Reports        uint64     // stats reports
	Rejected       rejections // figures dropped as beyond physical bounds (statsbound.go)
	FirstFrame     histogram
	Recovery       histogram
}

// newStreamTotals is an empty total, ready to add to.
func newStreamTotals() streamTotals {
	return streamTotals{
		Joins:      make(map[joinKey]uint64),
		FirstFrame: newHistogram(firstFrameBuckets),
		Recovery:   newHistogram(recoveryBuckets),
	}
}

func (t *streamTotals) add(o streamTotals) {
	if t.Joins == nil {
		t.Joins = make(map[joinKey]uint64)
	}
	for k, v := range o.Joins {
		t.Joins[k] += v
	}
	t.SourceBytes += o.SourceBytes
	t.RelayedBytes += o.RelayedBytes
	t.DeliveredBytes += o.DeliveredBytes
	t.StallSeconds += o.StallSeconds
	t.PeerSeconds += o.PeerSeconds
	t.Stalls += o.Stalls
	t.Reparents += o.Reparents
	t.Reports += o.Reports
	for i, n := range o.Rejected {
		t.Rejected[i] += n
	}
	t.FirstFrame.add(o.FirstFrame)
	t.Recovery.add(o.Recovery)
}

// recovery is one re-attachment the dashboard lists.
type recovery struct {
	Peer string    `json:"peer"`
	From string    `json:"from"`
	To   string    `json:"to"`
	Ms   float64   `json:"ms"`
	At   time.Time `json:"at"`
}

// peerObs is what the server knows of one peer's health.
type peerObs struct {
	role   protocol.Role
	kind   protocol.Kind
	joined time.Time
	parent string
	state  string
	// lostAt is when the peer lost its parent (a re-parent or a stalled
	// report); zero when it is not recovering. lostFrom is that parent.
	lostAt   time.Time
	lostFrom string
	// firstFrame is set once its time to first frame is counted.
	firstFrame bool

	// last and prev are the last two reports as credited (see budget).
	last, prev     protocol.Stats
	lastAt, prevAt time.Time
	budget         peerBudget
}

// streamObs is the system of measurement of one stream: the coordinator
// tells it what happens (under the coordinator's lock, through the hooks
// join, refused, changed, report and left), and /metrics and the dashboard
// API read it. It has its own lock so that a scrape never waits on the tree.
type streamObs struct {
	log *slog.Logger
	now func() time.Time

	mu          sync.Mutex
	source      string
	peers       map[string]*peerObs
	totals      streamTotals // events, and the counters of peers that left
	firstFrames []float64    // last keepFirstFrames, ms
	recoveries  []recovery   // last keepRecoveries, oldest first
}

func newStreamObs(log *slog.Logger) *streamObs {
	return &streamObs{
		log:   log,
		now:   time.Now,
		peers: make(map[string]*peerObs),
		totals: streamTotals{
			Joins:      make(map[joinKey]uint64),
			FirstFrame: newHistogram(firstFrameBuckets),
			Recovery:   newHistogram(recoveryBuckets),
		},
	}
}

// joined records an accepted hello.
func (o *streamObs) joined(id string, hello *protocol.Message, queued bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	outcome := outcomeOK
	state := stateJoining
	if queued {
		outcome, state = outcomeQueued, stateQueued
	}
	if hello.Role == protocol.RoleSource {
		o.source, state = id, stateSource
	}
	o.totals.Joins[joinKey{hello.Role, outcome}]++
	now := o.now()
	p := &peerObs{role: hello.Role, kind: hello.Kind, joined: now, state: state}
	p.budget.refill(now)
	o.peers[id] = p
}

// refused records a hello the coordinator turned down.
func (o *streamObs) refused(role protocol.Role, outcome string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.totals.Joins[joinKey{role, outcome}]++
}

// changed records one tree change. A change away from a live parent starts
// a recovery, which ends at the peer's live report; losing the source is an
// outage, not a recovery, and is not timed.
func (o *streamObs) changed(ch tree.Change) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.peers[ch.Node]
	if p == nil {
		return
	}
	if ch.From != "" && ch.To != "" {
		o.totals.Reparents++
	}
	o.childMoved(ch.From, -1)
	o.childMoved(ch.To, +1)
	if ch.From != "" && p.lostAt.IsZero() && !(ch.To == "" && ch.From == o.source) {
		p.lostAt, p.lostFrom = o.now(), ch.From
	}
	p.parent = ch.To
	switch {
	case ch.To == "":
		p.state = stateQueued
	case !p.lostAt.IsZero():
		p.state = stateRecovering
	default:
		p.state = stateJoining
	}
}

// report records a peer's live, stalled or stats message.
func (o *streamObs) report(id string, m *protocol.Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.peers[id]
	if p == nil {
		return
	}
	now := o.now()
	switch m.Type {
	case protocol.TypeLive:
		if m.Peer != "" && m.Peer != p.parent {
			return // about a parent it no longer has
		}
		p.state = stateLive
		if !p.firstFrame {
			p.firstFrame = true
			o.firstFrameAt(now.Sub(p.joined).Seconds())
		}
		if !p.lostAt.IsZero() {
			if p.parent != p.lostFrom {
				d := now.Sub(p.lostAt)
				o.totals.Recovery.observe(d.Seconds())
				o.recoveries = append(o.recoveries, recovery{Peer: id, From: p.lostFrom, To: p.parent, Ms: ms(d), At: now})
				if len(o.recoveries) > keepRecoveries {
					o.recoveries = slices.Delete(o.recoveries, 0, len(o.recoveries)-keepRecoveries)
				}
				o.log.Info("peer recovered", "peer", id, "from", p.lostFrom, "to", p.parent, "ms", ms(d))
			}
			p.lostAt, p.lostFrom = time.Time{}, ""
		}
	case protocol.TypeStalled:
		o.totals.Stalls++
		p.state = stateStalled
		if p.lostAt.IsZero() {
			p.lostAt, p.lostFrom = now, p.parent
		}
	case protocol.TypeStats:
		s := p.budget.bound(*m.Stats, now, p.joined, &o.totals.Rejected)
		p.prev, p.prevAt = p.last, p.lastAt
		p.last, p.lastAt = s, now
		o.totals.Reports++
		if s.FirstFrameMs > 0 && !p.firstFrame {
			p.firstFrame = true
			o.firstFrameAt(s.FirstFrameMs / 1000)
		}
		if (p.state == stateJoining || p.state == stateRecovering) && p.lostAt.IsZero() && p.advancing() {
			p.state = stateLive
		}
	}
}

// childMoved adds delta to parent's children, which bound what it may
// claim to relay.
func (o *streamObs) childMoved(parent string, delta int) {
	if q := o.peers[parent]; parent != "" && q != nil {
		q.budget.setChildren(o.now(), q.budget.children+delta)
	}
}

func (o *streamObs) firstFrameAt(seconds float64) {
	o.totals.FirstFrame.observe(seconds)
	o.firstFrames = append(o.firstFrames, seconds*1000)
	if len(o.firstFrames) > keepFirstFrames {
		o.firstFrames = slices.Delete(o.firstFrames, 0, len(o.firstFrames)-keepFirstFrames)
	}
}

// left folds a departing peer's counters into the stream's totals.
func (o *streamObs) left(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.peers[id]
	if p == nil {
		return
	}
	delete(o.peers, id)
	o.childMoved(p.parent, -1)
	o.fold(&o.totals, p, o.now())
	if id == o.source {
		o.source = ""
	}
}

// fold adds p's counters to t.
func (o *streamObs) fold(t *streamTotals, p *peerObs, now time.Time) {
	if p.role == protocol.RoleSource {
		t.SourceBytes += p.last.BytesRelayed
		return
	}
	t.RelayedBytes += p.last.BytesRelayed
	t.DeliveredBytes += p.last.BytesReceived
	t.StallSeconds += p.last.StallMs / 1000
	t.PeerSeconds += now.Sub(p.joined).Seconds()
}

// snapshot returns the stream's totals, present peers included.
func (o *streamObs) snapshot() streamTotals {
	o.mu.Lock()
	defer o.mu.Unlock()
	var t streamTotals
	t.add(o.totals) // copies the maps and histograms
	now := o.now()
	for _, p := range o.peers {
		o.fold(&t, p, now)
	}
	return t
}

// advancing reports whether the last two stats reports show media arriving.
func (p *peerObs) advancing() bool {
	if p.prevAt.IsZero() {
		return p.last.FramesDecoded > 0 || p.last.BytesReceived > 0 && p.last.BitrateKbps > 0
	}
	return p.last.BytesReceived > p.prev.BytesReceived || p.last.FramesDecoded > p.prev.FramesDecoded
}

// rates derives what the last interval looked like: received and relayed
// kbit/s (the peer's own figure when it sent one) and the fraction of
// packets lost.
func (p *peerObs) rates() (recvKbps, relayKbps, loss float64) {
	recvKbps, relayKbps = p.last.BitrateKbps, p.last.RelayBitrateKbps
	lost, got := float64(p.last.PacketsLost), float64(p.last.PacketsReceived)
	if !p.prevAt.IsZero() {
		if dt := p.lastAt.Sub(p.prevAt).Seconds(); dt > 0 {
			if recvKbps == 0 {
				recvKbps = float64(p.last.BytesReceived-p.prev.BytesReceived) * 8 / 1000 / dt
			}
			if relayKbps == 0 {
				relayKbps = float64(p.last.BytesRelayed-p.prev.BytesRelayed) * 8 / 1000 / dt
			}
		}
		if p.last.PacketsLost >= p.prev.PacketsLost && p.last.PacketsReceived >= p.prev.PacketsReceived {
			lost -= float64(p.prev.PacketsLost)
			got -= float64(p.prev.PacketsReceived)
		}
	}
	if lost+got > 0 {
		loss = lost / (lost + got)
	}
	// Credited counters may catch up on an allowance saved over several
	// intervals; no interval shows more than a peer can carry.
	recvKbps = min(recvKbps, maxReportedKbps)
	relayKbps = min(relayKbps, maxReportedKbps*float64(max(p.budget.children, 1)))
	return recvKbps, relayKbps, loss
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// median of xs (which it sorts); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// nodeView is one node of GET /api/streams/:id/stats: its place in the tree,
// its health and its last report.
type nodeView struct {
	tree.NodeInfo
	State       string          `json:"state"`
	Stats       *protocol.Stats `json:"stats,omitempty"`
	StatsAgeMs  float64         `json:"statsAgeMs,omitempty"` // since its last report
	BitrateKbps float64         `json:"bitrateKbps"`          // received, last interval
	RelayKbps   float64         `json:"relayKbps"`            // sent to children, last interval
	Loss        float64         `json:"loss"`                 // fraction of packets lost, last interval
	UptimeMs    float64         `json:"uptimeMs"`
}

// figures are a stream's aggregate measures.
type figures struct {
	Peers            int               `json:"peers"` // not counting the source
	Queued           int               `json:"queued"`
	Depth            int               `json:"depth"`
	SourceKbps       float64           `json:"sourceKbps"`   // the source's upload
	AudienceKbps     float64           `json:"audienceKbps"` // what all peers receive together
	SourceBytes      uint64            `json:"sourceBytes"`
	RelayedBytes     uint64            `json:"relayedBytes"`
	DeliveredBytes   uint64            `json:"deliveredBytes"`
	PeerEfficiency   float64           `json:"peerEfficiency"`  // relayed by peers / delivered
	Joins            map[string]uint64 `json:"joins"`           // peers' (not sources') hellos by outcome
	JoinSuccessRate  float64           `json:"joinSuccessRate"` // placed at once / all hellos
	MedianFirstFrame float64           `json:"medianFirstFrameMs"`
	FirstFrames      int               `json:"firstFrameSamples"`
	StallSeconds     float64           `json:"stallSeconds"`
	ViewerHours      float64           `json:"viewerHours"`
	StallPerHour     float64           `json:"stallSecondsPerViewerHour"`
	Stalls           uint64            `json:"stalls"`
	Reparents        uint64            `json:"reparents"`
	Reports          uint64            `json:"reports"`
	MedianRecoveryMs float64           `json:"medianRecoveryMs"`
	Recoveries       []recovery        `json:"recoveries"` // newest first
}

// statsResponse is GET /api/streams/:id/stats, what the dashboard draws.
type statsResponse struct {
	Stream  string     `json:"stream"`
	Live    bool       `json:"live"`
	At      time.Time  `json:"at"`
	Nodes   []nodeView `json:"nodes"`
	Figures figures    `json:"figures"`

	P2P *p2pView `json:"p2p,omitempty"` // -p2p-min-viewers (p2pmin.go)
}

// statsView joins the tree with what its peers reported.
func (c *coordinator) statsView() statsResponse {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statsViewOf(func() statsResponse {
		snap := c.treeView()
		r := statsResponse{Stream: c.id, Live: c.source != nil, Nodes: make([]nodeView, 0, len(snap))}
		r.Figures.Depth = c.tree.MaxDepth()
		r.P2P = c.gateView()
		c.obs.view(&r, snap)
		return r
	})
}

// view fills r's nodes and figures; it runs under the coordinator's lock.
func (o *streamObs) view(r *statsResponse, snap []tree.NodeInfo) {
	t := o.snapshot()
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	r.At = now
	f := &r.Figures
	for _, n := range snap {
		v := nodeView{NodeInfo: n, State: stateJoining}
		if p := o.peers[n.ID]; p != nil {
			v.State = p.state
			v.UptimeMs = ms(now.Sub(p.joined))
			if !p.lastAt.IsZero() {
				s := p.last
				v.Stats, v.StatsAgeMs = &s, ms(now.Sub(p.lastAt))
				v.BitrateKbps, v.RelayKbps, v.Loss = p.rates()
			}
		}
		if n.Queued {
			v.State = stateQueued
		}
		if n.Role == protocol.RoleSource {
			v.State = stateSource
			f.SourceKbps += v.RelayKbps
		} else {
			f.Peers++
			f.AudienceKbps += v.BitrateKbps
			if n.Queued {
				f.Queued++
			}
		}
		r.Nodes = append(r.Nodes, v)
	}
	f.SourceBytes, f.RelayedBytes, f.DeliveredBytes = t.SourceBytes, t.RelayedBytes, t.DeliveredBytes
	f.PeerEfficiency = efficiency(t)
	f.Joins = make(map[string]uint64)
	var attempts uint64
	for k, v := range t.Joins {
		if k.Role != protocol.RoleSource {
			f.Joins[k.Outcome] += v
			attempts += v
		}
	}
	if attempts > 0 {
		f.JoinSuccessRate = float64(f.Joins[outcomeOK]) / float64(attempts)
	}
	f.MedianFirstFrame = median(slices.Clone(o.firstFrames))
	f.FirstFrames = len(o.firstFrames)
	f.StallSeconds, f.ViewerHours = t.StallSeconds, t.PeerSeconds/3600
	if f.ViewerHours > 0 {
		f.StallPerHour = f.StallSeconds / f.ViewerHours
	}
	f.Stalls, f.Reparents, f.Reports = t.Stalls, t.Reparents, t.Reports
	f.Recoveries = make([]recovery, 0, len(o.recoveries))
	durations := make([]float64, 0, len(o.recoveries))
	for i := len(o.recoveries) - 1; i >= 0; i-- {
		f.Recoveries = append(f.Recoveries, o.recoveries[i])
		durations = append(durations, o.recoveries[i].Ms)
	}
	f.MedianRecoveryMs = median(durations)
}

// efficiency is the share of delivered bytes that peers, not the source,
// sent. Without receive counters it falls back to what was sent.
func efficiency(t streamTotals) float64 {
	if t.DeliveredBytes > 0 {
		return min(1, float64(t.RelayedBytes)/float64(t.DeliveredBytes))
	}
	if sent := t.SourceBytes + t.RelayedBytes; sent > 0 {
		return float64(t.RelayedBytes) / float64(sent)
	}
	return 0
}
