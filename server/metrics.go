package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"canopy/mesh/protocol"
)

// observe registers the measurement routes: /metrics (this server's own
// Prometheus registry), /readyz, the dashboard page and its JSON API.
func (s *Server) observe(r *gin.Engine) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newTreeCollector(s.hub),
		newConnCollector(s.conns),
		newResumeCollector(s.hub.resumer), // resume.go
	)
	reg.MustRegister(s.cfg.Collectors...)
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})))
	r.GET("/readyz", s.ready)
	r.GET("/stats/:stream", s.streamPage("stream", "stats.html"))
	r.GET("/api/streams/:id/stats", s.streamStats)
}

// ready answers 200 once the routes serve. With ?stream=NAME it answers 503
// until that stream has a source, so a deployment can wait for its demo.
func (s *Server) ready(c *gin.Context) {
	if id := c.Query("stream"); id != "" {
		// A private stream reads as absent without its token; the stream
		// may be owned by another server (clusterapi.go).
		if s.Allow(c.Request, id, ActionView) != nil || !s.streamLive(id) {
			c.JSON(http.StatusServiceUnavailable, gin.H{"ready": false, "waiting": "stream " + id})
			return
		}
	}
	c.JSON(http.StatusOK, gin.H{"ready": true})
}

// streamStats answers from any server: the owner's figures (clusterapi.go).
func (s *Server) streamStats(c *gin.Context) { s.serveAnswer(c, askStats) }

// census returns the present coordinators and the totals of the streams
// that ended, together, so no stream is counted twice or missed.
func (h *hub) census() ([]*coordinator, streamTotals) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*coordinator, 0, len(h.streams))
	for _, c := range h.streams {
		out = append(out, c)
	}
	ended := newStreamTotals()
	ended.add(h.ended)
	return out, ended
}

// shape is what the collector reads from a coordinator under its lock.
func (c *coordinator) shape() (live bool, depth int, peers map[[2]string]int, queued int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	peers = make(map[[2]string]int)
	for _, n := range c.treeView() {
		if n.ID == "" {
			continue
		}
		peers[[2]string{string(n.Role), string(n.Kind)}]++
		if n.Queued {
			queued++
		}
	}
	return c.source != nil, c.tree.MaxDepth(), peers, queued
}

// treeCollector turns the streams' measurements into canopy_* metrics at
// scrape time. Counters sum every present stream's totals and those the hub
// kept of streams that ended, so they never go backwards.
type treeCollector struct {
	hub *hub

	streams, liveStreams, peers, queued, depth, efficiency *prometheus.Desc
	joins, sourceBytes, relayedBytes, deliveredBytes       *prometheus.Desc
	stallSeconds, stalls, reparents, reports               *prometheus.Desc
	firstFrame, recovery                                   *prometheus.Desc
	rejected                                               *prometheus.Desc
}

func newTreeCollector(h *hub) *treeCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("canopy_"+name, help, labels, nil)
	}
	return &treeCollector{
		hub:            h,
		streams:        d("streams", "Streams that exist (have at least one peer)."),
		liveStreams:    d("live_streams", "Streams whose source is connected."),
		peers:          d("peers", "Peers in a tree, sources included, by role and kind.", "role", "kind"),
		queued:         d("peers_queued", "Peers waiting for a free slot."),
		depth:          d("tree_depth", "Depth of the deepest tree (edges from a source to its farthest peer)."),
		efficiency:     d("peer_efficiency_ratio", "Share of delivered bytes sent by peers rather than sources, since start."),
		joins:          d("joins_total", "Hellos by role and outcome (ok, queued, stream_taken, not_found, refused).", "role", "outcome"),
		sourceBytes:    d("source_bytes_total", "Bytes sources sent to their children, as reported."),
		relayedBytes:   d("relayed_bytes_total", "Bytes non-source peers relayed to their children, as reported."),
		deliveredBytes: d("delivered_bytes_total", "Bytes non-source peers received, as reported."),
		stallSeconds:   d("stall_seconds_total", "Time peers reported playing nothing while they should have."),
		stalls:         d("stalls_total", "Stalled-parent reports."),
		reparents:      d("reparents_total", "Peers moved from one parent to another."),
		reports:        d("stats_reports_total", "Stats reports received."),
		rejected:       d("stats_rejected_total", "Figures of stats reports dropped as beyond what the peer could have measured, by figure.", "figure"),
		firstFrame:     d("time_to_first_frame_seconds", "Join to first frame: the peer's own firstFrameMs, or hello to its first live report, whichever the server gets first."),
		recovery:       d("recovery_seconds", "From a peer losing its parent (re-parent or stalled report) to its live report from the new parent."),
	}
}

// Describe implements prometheus.Collector.
func (tc *treeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		tc.streams, tc.liveStreams, tc.peers, tc.queued, tc.depth, tc.efficiency,
		tc.joins, tc.sourceBytes, tc.relayedBytes, tc.deliveredBytes,
		tc.stallSeconds, tc.stalls, tc.reparents, tc.reports, tc.firstFrame, tc.recovery, tc.rejected,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (tc *treeCollector) Collect(ch chan<- prometheus.Metric) {
	cs, totals := tc.hub.census()
	live, depth, queued := 0, 0, 0
	peers := make(map[[2]string]int)
	for _, role := range []protocol.Role{protocol.RoleSource, protocol.RoleRelay, protocol.RoleViewer} {
		for _, kind := range []protocol.Kind{protocol.KindGo, protocol.KindBrowser} {
			peers[[2]string{string(role), string(kind)}] = 0
		}
	}
	for _, c := range cs {
		totals.add(c.obs.snapshot())
	}
	for _, c := range cs {
		l, d, ps, q := c.shape()
		if l {
			live++
		}
		depth = max(depth, d)
		queued += q
		for k, n := range ps {
			peers[k] += n
		}
	}

	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(tc.streams, float64(len(cs)))
	gauge(tc.liveStreams, float64(live))
	for k, n := range peers {
		gauge(tc.peers, float64(n), k[0], k[1])
	}
	gauge(tc.queued, float64(queued))
	gauge(tc.depth, float64(depth))
	gauge(tc.efficiency, efficiency(totals))
	for _, role := range []protocol.Role{protocol.RoleSource, protocol.RoleRelay, protocol.RoleViewer} {
		for _, o := range []string{outcomeOK, outcomeQueued, outcomeStreamTaken, outcomeNotFound, outcomeRefused} {
			counter(tc.joins, float64(totals.Joins[joinKey{role, o}]), string(role), o)
		}
	}
	counter(tc.sourceBytes, float64(totals.SourceBytes))
	counter(tc.relayedBytes, float64(totals.RelayedBytes))
	counter(tc.deliveredBytes, float64(totals.DeliveredBytes))
	counter(tc.stallSeconds, totals.StallSeconds)
	counter(tc.stalls, float64(totals.Stalls))
	counter(tc.reparents, float64(totals.Reparents))
	counter(tc.reports, float64(totals.Reports))
	for f, n := range totals.Rejected {
		counter(tc.rejected, float64(n), figureNames[f])
	}
	for _, h := range []struct {
		d *prometheus.Desc
		h histogram
	}{{tc.firstFrame, totals.FirstFrame}, {tc.recovery, totals.Recovery}} {
		ch <- prometheus.MustNewConstHistogram(h.d, h.h.count, h.h.sum, h.h.cumulative())
	}
}

// newLogHandler builds the server's slog handler for -log-format.
func newLogHandler(format string, w io.Writer, level slog.Level) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, fmt.Errorf("-log-format: %q is neither json nor text", format)
}
