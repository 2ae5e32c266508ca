package load

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// sample is what the harness reads from one server's /metrics.
type sample struct {
	at         time.Time
	rss        float64 // process_resident_memory_bytes
	heap       float64 // go_memstats_heap_inuse_bytes
	stack      float64 // go_memstats_stack_inuse_bytes
	cpu        float64 // process_cpu_seconds_total
	goroutines float64
	peers      float64 // canopy_peers summed over roles and kinds
	conns      float64 // canopy_http_conns: open TCP connections, any client's
	gcForced   bool    // the heap figure is right after a collection
}

// scrape reads server's /metrics. With debug (the server's -debug-addr
// URL) it first asks for a heap profile with gc=1, which runs a full
// collection, so heap_inuse is the live heap rather than live + garbage.
func scrape(ctx context.Context, server, debug string) (sample, error) {
	s := sample{}
	if debug != "" {
		if err := get(ctx, strings.TrimSuffix(debug, "/")+"/debug/pprof/heap?gc=1", io.Discard); err != nil {
			return s, fmt.Errorf("force a collection: %w", err)
		}
		s.gcForced = true
	}
	var body strings.Builder
	if err := get(ctx, strings.TrimSuffix(httpURL(server), "/")+"/metrics", &body); err != nil {
		return s, err
	}
	s.at = time.Now()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body.String()))
	if err != nil {
		return s, fmt.Errorf("parse /metrics: %w", err)
	}
	val := func(name string) float64 {
		f := fams[name]
		if f == nil {
			return 0
		}
		sum := 0.0
		for _, m := range f.Metric {
			sum += metricValue(m)
		}
		return sum
	}
	s.rss = val("process_resident_memory_bytes")
	s.heap = val("go_memstats_heap_inuse_bytes")
	s.stack = val("go_memstats_stack_inuse_bytes")
	s.cpu = val("process_cpu_seconds_total")
	s.goroutines = val("go_goroutines")
	s.peers = val("canopy_peers")
	s.conns = val("canopy_http_conns")
	return s, nil
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func httpURL(server string) string {
	if !strings.Contains(server, "://") {
		return "http://" + server
	}
	return server
}

func get(ctx context.Context, url string, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// ServerFigures is one server's footprint as the harness measured it.
type ServerFigures struct {
	Server string `json:"server"`
	// Conns is how many connections the memory figures are divided by:
	// the growth of the server's open connections (canopy_http_conns)
	// from before the ramp to when the harness's own were all up and idle,
	// so harnesses running side by side against one server each divide
	// the growth they saw by every connection behind it; the harness's own
	// on this server when the server does not report it.
	Conns int `json:"conns"`
	// HeapStackPerConnKB is the growth of the Go heap in use plus
	// goroutine stacks per connection (after a forced collection when
	// GCForced); RSSPerConnKB the growth of resident memory.
	HeapStackPerConnKB float64 `json:"heapStackPerConnKB"`
	RSSPerConnKB       float64 `json:"rssPerConnKB"`
	GCForced           bool    `json:"gcForced"`
	GoroutinesPerConn  float64 `json:"goroutinesPerConn"`
	// RampCPU is the server's CPU while peers joined, in cores;
	// CPUPerJoinMicros that CPU per connection it took over the ramp (the
	// same growth; the harness's own joins without it). HoldCPU is its CPU
	// afterwards (idle peers, their stats, churn), in cores.
	RampCPU          float64 `json:"rampCPUCores"`
	CPUPerJoinMicros float64 `json:"cpuPerJoinUs"`
	HoldCPU          float64 `json:"holdCPUCores"`
	PeersReported    float64 `json:"peersReported"` // canopy_peers when idle
}

func figures(server string, conns, joins int, before, ramped, idle, end sample) ServerFigures {
	if grown := int(idle.conns - before.conns); grown > 0 {
		conns = grown
	}
	if grown := int(ramped.conns - before.conns); grown > 0 {
		joins = grown
	}
	f := ServerFigures{Server: server, Conns: conns, GCForced: before.gcForced && idle.gcForced, PeersReported: idle.peers}
	if conns > 0 {
		n := float64(conns)
		f.HeapStackPerConnKB = (idle.heap + idle.stack - before.heap - before.stack) / n / 1024
		f.RSSPerConnKB = (idle.rss - before.rss) / n / 1024
		f.GoroutinesPerConn = (idle.goroutines - before.goroutines) / n
	}
	if d := ramped.at.Sub(before.at).Seconds(); d > 0 {
		f.RampCPU = (ramped.cpu - before.cpu) / d
	}
	if joins > 0 {
		f.CPUPerJoinMicros = (ramped.cpu - before.cpu) / float64(joins) * 1e6
	}
	if d := end.at.Sub(idle.at).Seconds(); d > 0 {
		f.HoldCPU = (end.cpu - idle.cpu) / d
	}
	return f
}
