// Package load simulates a stream's audience against Canopy servers: many
// signaling-level peers that speak the protocol without media (hello, an
// answer to their parent's offer, live, stats, leave; relays offer to their
// children), mixed with a few real pion viewers that must receive complete
// frames throughout, and measures what the servers do: joins per second,
// join → parent latency, re-parent latency under churn, errors, and each
// server's memory per connection and CPU from its /metrics.
//
// The simulated audience is a real tree. Viewers claim capacity 0 and are
// leaves; a share of the simulated peers (Config.RelayShare) are relays
// that pass their parent's offer on to their own children with fresh
// credentials, so the server places, signals and heals a tree as deep as a
// real audience's, while no PeerConnection is made below the real peers.
// The real viewers join first with capacity Config.MediaCapacity (default
// 1), as relays: a Go relay with capacity is relay-class, so no later
// joiner takes its place next to the source, and its media path is source → real viewers
// only (the report says if a real viewer's parent was ever a simulated
// one). A real parent of a simulated child (the source or a real viewer)
// makes a PeerConnection for it that never connects; it is one per free
// slot of the real peers, a handful.
package load

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"time"
)

// ErrConfig means a Config cannot be run.
var ErrConfig = errors.New("load: bad configuration")

// Config is one load run.
type Config struct {
	// Servers are the servers' base URLs (http://host:port); peers are
	// spread over them in turn.
	Servers []string
	// Debug are the servers' -debug-addr URLs, in the same order (or
	// none): with them each memory reading follows a full collection.
	Debug  []string
	Stream string
	// Viewers is the number of simulated peers, relays included.
	Viewers int
	// RelayShare is the share of simulated peers that join as relays of
	// RelayCapacity children (defaults 0.02 and 64, the Go clamp: 1.28
	// slots per peer, so nobody waits in the queue).
	RelayShare    float64
	RelayCapacity int
	// Rate is the joins per second offered (0: as fast as Concurrency joins
	// in flight allow).
	Rate        float64
	Concurrency int
	// Churn is the share of simulated peers replaced per minute while the
	// run holds (0.3: 30 %/min): one leaves gracefully, a new one joins.
	Churn float64
	// Duration is how long the run holds after the ramp, with churn.
	Duration time.Duration
	// Media is the number of real pion viewers; each must get MediaFrames
	// complete frames (default 30). MediaCapacity is what they claim
	// (default 1, see the package doc; negative: 0).
	Media         int
	MediaCapacity int
	MediaFrames   int
	// StatsEvery is how often each simulated peer sends stats (default 5 s,
	// as real peers do; negative: never).
	StatsEvery time.Duration
	// JoinTimeout bounds the wait for every peer to get a parent (60 s).
	JoinTimeout time.Duration
	// LocalAddrs are the source addresses connections are spread over. For
	// loopback servers it defaults to 127.0.0.2…127.0.0.254, so the
	// per-address limits see 253 clients rather than one.
	LocalAddrs   []net.IP
	Token        string
	LoopbackOnly bool
	Logger       *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case len(c.Servers) == 0:
		return c, fmt.Errorf("%w: no server", ErrConfig)
	case len(c.Debug) != 0 && len(c.Debug) != len(c.Servers):
		return c, fmt.Errorf("%w: %d debug URLs for %d servers", ErrConfig, len(c.Debug), len(c.Servers))
	case c.Viewers < 0 || c.Media < 0 || c.Rate < 0 || c.Churn < 0:
		return c, fmt.Errorf("%w: negative count or rate", ErrConfig)
	case c.Stream == "":
		return c, fmt.Errorf("%w: no stream", ErrConfig)
	}
	if c.RelayShare == 0 {
		c.RelayShare = 0.02
	}
	if c.RelayCapacity == 0 {
		c.RelayCapacity = 64
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 1000
	}
	if c.MediaCapacity == 0 {
		c.MediaCapacity = 1
	} else if c.MediaCapacity < 0 {
		c.MediaCapacity = 0
	}
	if c.MediaFrames <= 0 {
		c.MediaFrames = 30
	}
	if c.StatsEvery == 0 {
		c.StatsEvery = 5 * time.Second
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.LocalAddrs == nil && loopback(c.Servers[0]) {
		for i := 2; i <= 254; i++ {
			c.LocalAddrs = append(c.LocalAddrs, net.IPv4(127, 0, 0, byte(i)))
		}
	}
	return c, nil
}

func loopback(server string) bool {
	u, err := url.Parse(httpURL(server))
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// run is one Run's shared state.
type run struct {
	ctx     context.Context
	cfg     Config
	stats   *counters
	answers *answers
	sem     chan struct{}

	mu    sync.Mutex
	byID  map[string]*sim
	live  []*sim // joined and not leaving: churn and stats pick from here
	n     int    // peers started, for spreading over servers and addresses
	every int    // one relay in every `every` simulated peers
}

// register records s's id from its welcome. A peer's id is read by the
// other goroutines only under mu or once ready is set.
func (r *run) register(s *sim, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.id = id
	s.ready.Store(true)
	r.byID[id] = s
}

// forget drops a departed peer's id once its children's re-parent
// messages have surely come.
func (r *run) forget(s *sim) {
	time.AfterFunc(30*time.Second, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.byID[s.id] == s {
			delete(r.byID, s.id)
		}
	})
}

func (r *run) lookup(id string) *sim {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byID[id]
}

// start launches one simulated peer.
func (r *run) start(wg *sync.WaitGroup) {
	r.mu.Lock()
	i := r.n
	r.n++
	s := &sim{r: r, relay: i%r.every == 0, server: r.cfg.Servers[i%len(r.cfg.Servers)], done: make(chan struct{})}
	if len(r.cfg.LocalAddrs) > 0 {
		s.local = r.cfg.LocalAddrs[i%len(r.cfg.LocalAddrs)]
	}
	r.live = append(r.live, s)
	r.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.join(r.ctx)
	}()
}

// pick removes and returns a random live, placed simulated peer.
func (r *run) pick() *sim {
	r.mu.Lock()
	defer r.mu.Unlock()
	for range 8 {
		if len(r.live) == 0 {
			return nil
		}
		i := rand.IntN(len(r.live))
		s := r.live[i]
		if !s.ready.Load() {
			continue // still joining
		}
		r.live[i] = r.live[len(r.live)-1]
		r.live = r.live[:len(r.live)-1]
		return s
	}
	return nil
}

func (r *run) snapshot() []*sim {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*sim(nil), r.live...)
}

// Run runs one load test and reports what it measured. It returns an
// error only when the run could not take place (a bad Config, a server
// that does not answer, a media viewer that cannot join); what went wrong
// during it is in the Report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &run{ctx: ctx, cfg: cfg, stats: newCounters(), answers: newAnswers(),
		sem: make(chan struct{}, cfg.Concurrency), byID: make(map[string]*sim), every: 1 << 30}
	if cfg.RelayShare > 0 && cfg.RelayCapacity > 0 {
		r.every = max(1, int(1/cfg.RelayShare+0.5))
	}
	rep := &Report{cfg: cfg}

	// Real viewers first, one at a time, each playing before the next.
	var watchers []*watcher
	defer func() {
		for _, w := range watchers {
			_ = w.node.Close()
		}
	}()
	for i := range cfg.Media {
		w, err := startWatcher(ctx, &cfg, cfg.Servers[i%len(cfg.Servers)])
		if err != nil {
			return nil, err
		}
		watchers = append(watchers, w)
		if err := waitUntil(ctx, 30*time.Second, func() bool { return w.frameCount() > 0 }); err != nil {
			return nil, fmt.Errorf("media viewer %d played nothing: %w", i, err)
		}
	}

	before, err := scrapeAll(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	defer func() {
		for _, s := range r.snapshot() {
			s.close()
		}
		cancel()
		wg.Wait()
	}()

	// The ramp: Viewers joins at Rate, at most Concurrency unplaced at once.
	go r.statsLoop(ctx)
	rampStart := time.Now()
	for i := range cfg.Viewers {
		if cfg.Rate > 0 {
			if d := time.Until(rampStart.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second)))); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
		}
		select {
		case r.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		r.start(&wg)
	}
	_ = waitUntil(ctx, cfg.JoinTimeout, func() bool {
		return r.stats.placed.Load() >= int64(cfg.Viewers)
	})
	ramped, err := scrapeAll(ctx, cfg)
	if err != nil {
		return nil, err
	}
	rep.fillRamp(r, rampStart)

	// Idle: every connection up; let the last answers and live reports
	// land, then read memory.
	sleep(ctx, time.Second)
	idle, err := scrapeAll(ctx, cfg)
	if err != nil {
		return nil, err
	}

	// Hold, with churn.
	for _, w := range watchers {
		w.markHold()
	}
	churned := r.hold(ctx, &wg)
	end, err := scrapeAll(ctx, cfg)
	if err != nil {
		return nil, err
	}
	_ = waitUntil(ctx, 30*time.Second, func() bool {
		for _, w := range watchers {
			if w.frameCount() < cfg.MediaFrames {
				return false
			}
		}
		return true
	})
	rep.Churned = churned
	// A peer that joined in churn's last moments may still wait in the
	// queue (new relays earn their children first): give placement a
	// bounded while before counting who has no parent.
	_ = waitUntil(ctx, 15*time.Second, func() bool {
		for _, s := range r.snapshot() {
			if !s.attached.Load() {
				return false
			}
		}
		return true
	})
	for _, s := range r.snapshot() {
		if !s.attached.Load() {
			rep.Unplaced++
		}
	}
	rep.fill(r, watchers)
	perServer := cfg.Viewers / len(cfg.Servers)
	for i, srv := range cfg.Servers {
		rep.Servers = append(rep.Servers, figures(srv, perServer, perServer, before[i], ramped[i], idle[i], end[i]))
	}
	return rep, nil
}

// hold keeps the audience for cfg.Duration, replacing cfg.Churn of it per
// minute, and returns how many peers left.
func (r *run) hold(ctx context.Context, wg *sync.WaitGroup) int {
	cfg := r.cfg
	if cfg.Duration <= 0 {
		return 0
	}
	deadline := time.After(cfg.Duration)
	if cfg.Churn <= 0 || cfg.Viewers == 0 {
		select {
		case <-deadline:
		case <-ctx.Done():
		}
		return 0
	}
	perSec := cfg.Churn * float64(cfg.Viewers) / 60
	tick := time.NewTicker(time.Duration(float64(time.Second) / perSec))
	defer tick.Stop()
	churned := 0
	for {
		select {
		case <-deadline:
			return churned
		case <-ctx.Done():
			return churned
		case <-tick.C:
			s := r.pick()
			if s == nil {
				continue
			}
			churned++
			go func() {
				s.leave()
				r.forget(s)
			}()
			select {
			case r.sem <- struct{}{}:
				r.start(wg)
			default: // too many joins in flight: the next tick tries again
			}
		}
	}
}

// statsLoop sends every live peer's stats once per StatsEvery, spread over
// the interval as real peers' timers are.
func (r *run) statsLoop(ctx context.Context) {
	if r.cfg.StatsEvery < 0 {
		return
	}
	const slices = 50
	tick := time.NewTicker(r.cfg.StatsEvery / slices)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i, s := range r.snapshot() {
			if i%slices == n%slices && s.ready.Load() && !s.leaving.Load() {
				_ = s.sendStats()
			}
		}
	}
}

func scrapeAll(ctx context.Context, cfg Config) ([]sample, error) {
	out := make([]sample, len(cfg.Servers))
	for i, srv := range cfg.Servers {
		debug := ""
		if len(cfg.Debug) > 0 {
			debug = cfg.Debug[i]
		}
		s, err := scrape(ctx, srv, debug)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", srv, err)
		}
		out[i] = s
	}
	return out, nil
}

// waitUntil polls cond every 20 ms until it holds or d passes.
func waitUntil(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
