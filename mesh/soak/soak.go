// Package soak runs a churn soak of real processes: a cluster of canopy
// servers on embedded NATS, a Go source, and real media peers (`client
// watch` processes: pion, ICE on loopback) that join, leave and crash
// (SIGKILL) on a schedule, optionally beside a simulated signaling-only
// audience (`client load`) on a second stream. It watches every viewer
// while it runs and, at the end, checks what must hold: no viewer went
// without frames for longer than a bound, every peer has a parent once the
// churn stops, and the servers' goroutines and memory did not grow (see
// README "Many servers", churn soak).
package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config is a soak run's shape and bounds; zero fields take Defaults' (so
// a share of 0, say no crashes, is not expressible: use a tiny one).
type Config struct {
	ServerBin string // the canopy server binary
	ClientBin string // the client binary (its broadcast, watch and load commands)
	Dir       string // where logs and stores go; a temporary directory when ""
	Keep      bool   // keep Dir's logs after a passing run

	Servers        int           // servers in the cluster
	Peers          int           // real media peers held at once
	RelayShare     float64       // share of the peers that forward (watch with RelayCapacity), kept through the churn
	RelayCapacity  int           // children of a forwarding peer
	SourceCapacity int           // children of the source
	Duration       time.Duration // churn time, after the ramp
	Churn          float64       // share of the peers replaced per minute
	CrashShare     float64       // share of departures that are SIGKILL (the rest leave gracefully), exactly: see depart
	MinAge         time.Duration // a peer this young is not chosen to go
	Sim            int           // simulated signaling-only viewers (client load) on a second stream; 0: none
	SimRate        float64       // their joins per second

	MaxStall    time.Duration // a viewer without a new frame for longer fails the run
	FirstFrame  time.Duration // a new viewer must play within this
	Settle      time.Duration // once the churn stops, every peer has a parent within this
	MaxGoGrowth int           // goroutines per server, idle after the run over idle before, at most
	MaxRSSRatio float64       // RSS per server, end of churn over end of ramp, at most
	SampleEvery time.Duration
	FPS         float64 // the source's frame rate, for frames expected

	ServerFlags []string  // extra server flags
	Log         io.Writer // progress lines; nil: none
	Seed        uint64    // the schedule's seed; 0: from the clock
}

// Defaults are the 10-minute soak's.
var Defaults = Config{
	Servers: 3, Peers: 50, RelayShare: 0.4, RelayCapacity: 3, SourceCapacity: 4,
	Duration: 10 * time.Minute, Churn: 0.3, CrashShare: 0.5, MinAge: 5 * time.Second, SimRate: 200,
	MaxStall: 10 * time.Second, FirstFrame: 20 * time.Second, Settle: 30 * time.Second,
	MaxGoGrowth: 50, MaxRSSRatio: 1.5, SampleEvery: 10 * time.Second, FPS: 30,
}

func (c *Config) fill() {
	d := Defaults
	set := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setf := func(v *float64, def float64) {
		if *v == 0 {
			*v = def
		}
	}
	setd := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	set(&c.Servers, d.Servers)
	set(&c.Peers, d.Peers)
	setf(&c.RelayShare, d.RelayShare)
	set(&c.RelayCapacity, d.RelayCapacity)
	set(&c.SourceCapacity, d.SourceCapacity)
	setd(&c.Duration, d.Duration)
	setf(&c.Churn, d.Churn)
	setf(&c.CrashShare, d.CrashShare)
	setd(&c.MinAge, d.MinAge)
	setf(&c.SimRate, d.SimRate)
	setd(&c.MaxStall, d.MaxStall)
	setd(&c.FirstFrame, d.FirstFrame)
	setd(&c.Settle, d.Settle)
	set(&c.MaxGoGrowth, d.MaxGoGrowth)
	setf(&c.MaxRSSRatio, d.MaxRSSRatio)
	setd(&c.SampleEvery, d.SampleEvery)
	setf(&c.FPS, d.FPS)
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
}

// The streams the soak runs.
const (
	stream    = "soak"
	simStream = "soak-sim"
)

// progress is a line of `client watch -progress`, or the fields of its
// final report that carry the same names (peer.onLine).
type progress struct {
	Peer          string    `json:"peer"`
	Parent        string    `json:"parent"`
	Frames        int       `json:"frames"`
	FirstFrameMs  float64   `json:"firstFrameMs"`
	SinceLastMs   float64   `json:"sinceLastFrameMs"`
	MaxGapMs      float64   `json:"maxGapMs"`
	GapsMs        []float64 `json:"-"`
	ParentChanges int       `json:"parentChanges"`
	Seconds       float64   `json:"seconds"`
}

// peer is one `client watch` process.
type peer struct {
	*proc
	capacity int
	started  time.Time

	mu       sync.Mutex
	last     progress // the latest progress line
	final    *progress
	fate     string // "", "left", "crashed", "stopped" (at the end)
	violated bool   // a stall or missing first frame was recorded
}

func (p *peer) onLine(line []byte) {
	switch {
	case strings.HasPrefix(string(line), `{"progress"`):
		var pr progress
		if json.Unmarshal(line, &pr) == nil {
			p.mu.Lock()
			p.last = pr
			p.mu.Unlock()
		}
	case strings.HasPrefix(string(line), `{"stream"`):
		var r struct {
			progress
			Gaps []float64 `json:"gapsMs"`
		}
		if json.Unmarshal(line, &r) == nil {
			r.progress.GapsMs = r.Gaps
			for _, g := range r.Gaps {
				r.progress.MaxGapMs = max(r.progress.MaxGapMs, g)
			}
			p.mu.Lock()
			p.final = &r.progress
			p.mu.Unlock()
		}
	}
}

// figures is what the peer measured: its final report if it printed one,
// else its last progress line (a killed peer).
func (p *peer) figures() progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.final != nil {
		f := *p.final
		f.Parent = p.last.Parent
		if f.Peer == "" {
			f.Peer = p.last.Peer
		}
		return f
	}
	return p.last
}

// run is one soak in progress.
type run struct {
	cfg     Config
	dir     string
	rng     *rand.Rand
	servers []*server
	urls    []string
	started time.Time

	mu         sync.Mutex
	extra      []*proc // the sources and client load (main goroutine only)
	peers      []*peer // every peer started, in order
	live       []*peer // not yet told to go
	violations []string
	joins      int
	leaves     int
	crashes    int
	// owed is the crashes CrashShare calls for that are not made yet
	// (from a random start in [0, 1)): depart crashes a peer when it
	// reaches 1, so any n departures hold within one of n×CrashShare
	// crashes, and a short run has both kinds (a coin per departure
	// gave a 30 s run 4 graceful leaves and no crash, 1 run in 16).
	owed float64
}

func (r *run) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, "soak %6.1fs: %s\n", time.Since(r.started).Seconds(), fmt.Sprintf(format, args...))
}

func (r *run) violate(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.violations = append(r.violations, msg)
	r.mu.Unlock()
	r.logf("FAIL: %s", msg)
}

// serverList is the -server list of the n-th peer: every server, starting
// at a different one, so peers spread over the edges and resume on the
// next.
func (r *run) serverList(n int) string {
	k := len(r.urls)
	out := make([]string, k)
	for i := range out {
		out[i] = r.urls[(n+i)%k]
	}
	return strings.Join(out, ",")
}

func (r *run) startPeer(ctx context.Context) error {
	r.mu.Lock()
	n := len(r.peers)
	r.mu.Unlock()
	// Forwarding peers are kept at RelayShare of the target, the ramp's
	// first ones included: drawn at random, a ramp whose first few are all
	// leaves fills the source's slots and leaves the rest, forwarders too,
	// with no place (seen: 4 of 8 never placed).
	r.mu.Lock()
	forwarding := 0
	for _, p := range r.live {
		if p.capacity > 0 {
			forwarding++
		}
	}
	r.mu.Unlock()
	capacity := 0
	if float64(forwarding) < math.Ceil(r.cfg.RelayShare*float64(r.cfg.Peers)) {
		capacity = r.cfg.RelayCapacity
	}
	p := &peer{capacity: capacity, started: time.Now()}
	out := &lineWriter{fn: p.onLine}
	pr, err := startProc(filepath.Join(r.dir, "peers"), fmt.Sprintf("peer%03d", n), r.cfg.ClientBin, out,
		"watch", "-server", r.serverList(n), "-stream", stream, "-frames", "0", "-timeout", "0",
		"-json", "-progress", "1s", "-loopback-only", "-capacity", fmt.Sprint(capacity))
	if err != nil {
		return err
	}
	p.proc = pr
	r.mu.Lock()
	r.peers = append(r.peers, p)
	r.live = append(r.live, p)
	r.joins++
	r.mu.Unlock()
	return nil
}

// nextCrashes reports whether the next departure is a crash (owed).
// Called with r.mu held.
func (r *run) nextCrashes() bool {
	r.owed += r.cfg.CrashShare
	if r.owed < 1 {
		return false
	}
	r.owed--
	return true
}

// depart makes one live peer old enough go: SIGKILL (a crash) or SIGINT
// (a graceful leave); false when none is old enough.
func (r *run) depart() bool {
	r.mu.Lock()
	var old []int
	for i, p := range r.live {
		if time.Since(p.started) >= r.cfg.MinAge {
			old = append(old, i)
		}
	}
	if len(old) == 0 {
		r.mu.Unlock()
		return false
	}
	i := old[r.rng.IntN(len(old))]
	p := r.live[i]
	r.live = append(r.live[:i], r.live[i+1:]...)
	crash := r.nextCrashes()
	if crash {
		r.crashes++
	} else {
		r.leaves++
	}
	r.mu.Unlock()
	p.mu.Lock()
	if crash {
		p.fate = "crashed"
	} else {
		p.fate = "left"
	}
	p.mu.Unlock()
	if crash {
		p.signal(syscall.SIGKILL)
		return true
	}
	p.signal(syscall.SIGINT)
	go func() {
		select {
		case <-p.done:
			if p.err != nil {
				r.violate("%s (%s) ended its leave with %v: %s", p.name, p.figures().Peer, p.err, lastLine(p.logTail(400)))
			}
		case <-time.After(20 * time.Second):
			r.violate("%s (%s) still running 20 s after SIGINT", p.name, p.figures().Peer)
			p.signal(syscall.SIGKILL)
		}
	}()
	return true
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// check looks at every live peer once: a peer that exited by itself, one
// that has not played within FirstFrame, one without a frame for longer
// than MaxStall. Each peer is reported once.
func (r *run) check() {
	r.mu.Lock()
	live := append([]*peer(nil), r.live...)
	r.mu.Unlock()
	for _, p := range live {
		f := p.figures()
		p.mu.Lock()
		violated := p.violated
		p.mu.Unlock()
		if violated {
			continue
		}
		var msg string
		switch {
		case p.exited():
			msg = fmt.Sprintf("%s (%s) exited by itself: %v: %s", p.name, f.Peer, p.err, lastLine(p.logTail(400)))
		case f.FirstFrameMs == 0 && time.Since(p.started) > r.cfg.FirstFrame:
			msg = fmt.Sprintf("%s (%s) has not played %s after it started (parent %q)", p.name, f.Peer, r.cfg.FirstFrame, f.Parent)
		case f.SinceLastMs > float64(r.cfg.MaxStall.Milliseconds()):
			msg = fmt.Sprintf("%s (%s) got no frame for %.1f s (parent %q)", p.name, f.Peer, f.SinceLastMs/1000, f.Parent)
		default:
			continue
		}
		p.mu.Lock()
		p.violated = true
		p.mu.Unlock()
		r.violate("%s", msg)
	}
}

// Run runs one soak and returns its report; the report's Violations say
// whether it passed. The error is for a soak that could not run at all.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.fill()
	if cfg.ServerBin == "" || cfg.ClientBin == "" {
		return nil, fmt.Errorf("soak: ServerBin and ClientBin are needed")
	}
	dir := cfg.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "canopy-soak-"); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "peers"), 0o755); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, dir: dir, rng: rand.New(rand.NewPCG(cfg.Seed, 0x50a4)), started: time.Now()}
	r.owed = r.rng.Float64()
	rep, err := r.soak(ctx)
	if rep != nil {
		rep.Dir = dir
	}
	if err == nil && rep != nil && len(rep.Violations) == 0 && !cfg.Keep && cfg.Dir == "" {
		_ = os.RemoveAll(dir)
		rep.Dir = ""
	}
	return rep, err
}
