package soak

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// soak runs the phases: cluster and source, an idle sample, the ramp, the
// churn (sampled), the settle check, every peer's leave, the idle sample
// again.
func (r *run) soak(ctx context.Context) (*Report, error) {
	cfg := r.cfg
	rep := &Report{Config: reportConfig(cfg), LoadStart: loadAvg()}
	defer func() {
		for _, p := range r.allProcs() {
			p.signal(syscall.SIGKILL)
		}
		for _, s := range r.servers {
			if s.proc != nil {
				s.stop(5 * time.Second)
			}
		}
	}()
	servers, err := startCluster(ctx, cfg, r.dir)
	r.servers = servers
	if err != nil {
		return nil, err
	}
	for _, s := range servers {
		r.urls = append(r.urls, s.url)
	}
	r.logf("%d servers up", len(servers))
	all := r.serverList(0)
	src, err := startProc(r.dir, "source", cfg.ClientBin, nil, "broadcast", "-server", all, "-stream", stream,
		"-capacity", fmt.Sprint(cfg.SourceCapacity), "-loopback-only")
	if err != nil {
		return nil, err
	}
	r.extra = append(r.extra, src)
	if err := waitUntil(ctx, 60*time.Second, func() bool {
		n, ok := TreeAt(r.urls[0], stream)
		return ok && len(n) == 1
	}); err != nil {
		return nil, fmt.Errorf("the source never joined: %w\n%s", err, src.logTail(1000))
	}
	var sim *proc
	if cfg.Sim > 0 {
		if sim, err = r.startSim(ctx); err != nil {
			return nil, err
		}
	}
	rep.IdleBefore = r.sample("idle before")
	rep.Samples = append(rep.Samples, rep.IdleBefore)

	// Ramp: one peer every 200 ms, so the machine is not asked for 50
	// pion stacks at once.
	for range cfg.Peers {
		if err := r.startPeer(ctx); err != nil {
			return nil, err
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	if err := waitUntil(ctx, cfg.FirstFrame+10*time.Second, func() bool { return r.playing() == cfg.Peers }); err != nil {
		r.violate("ramp: %d of %d peers playing after %s", r.playing(), cfg.Peers, cfg.FirstFrame+10*time.Second)
	}
	rep.RampEnd = r.sample("ramp end")
	rep.Samples = append(rep.Samples, rep.RampEnd)
	r.logf("ramp done: %d peers playing", r.playing())

	// Churn.
	every := time.Duration(float64(time.Minute) / (float64(cfg.Peers) * cfg.Churn))
	churnStart := time.Now()
	next, nextSample := churnStart.Add(every), churnStart.Add(cfg.SampleEvery)
	tick := time.NewTicker(250 * time.Millisecond)
	for time.Since(churnStart) < cfg.Duration {
		select {
		case <-ctx.Done():
			tick.Stop()
			return nil, ctx.Err()
		case <-tick.C:
		}
		r.check()
		if now := time.Now(); !now.Before(next) {
			next = next.Add(every)
			if r.depart() {
				if err := r.startPeer(ctx); err != nil {
					tick.Stop()
					return nil, err
				}
			}
		}
		if now := time.Now(); !now.Before(nextSample) {
			nextSample = nextSample.Add(cfg.SampleEvery)
			s := r.sample("churn")
			rep.Samples = append(rep.Samples, s)
			r.logf("%d live peers, tree %d, goroutines %v, RSS %v MB, load %s", s.Peers, s.Tree, s.Goroutines, s.RSSMB, s.Load)
		}
	}
	tick.Stop()

	// Settle: every live peer in the tree with a parent, no place left of
	// a peer that went, every live peer playing.
	settleStart := time.Now()
	var lastNodes []TreeNode
	err = waitUntil(ctx, cfg.Settle, func() bool {
		r.check()
		n, ok := TreeAt(r.urls[0], stream)
		if !ok {
			return false
		}
		lastNodes = n
		return r.settled(n)
	})
	rep.SettleSeconds = time.Since(settleStart).Seconds()
	rep.WithoutParent, rep.Ghosts, rep.Missing = r.treeFaults(lastNodes)
	if err != nil {
		r.violate("not settled %s after the churn: %d peers without a parent, %d places of peers gone, %d live peers not in the tree",
			cfg.Settle, rep.WithoutParent, rep.Ghosts, rep.Missing)
	}
	rep.ChurnEnd = r.sample("churn end")
	rep.Samples = append(rep.Samples, rep.ChurnEnd)

	// Every live peer leaves; their reports come.
	r.stopAll()
	if err := waitUntil(ctx, 30*time.Second, func() bool {
		n, ok := TreeAt(r.urls[0], stream)
		return ok && len(n) == 1
	}); err != nil {
		n, _ := TreeAt(r.urls[0], stream)
		r.violate("%d places left in the tree 30 s after every peer left", len(n)-1)
	}
	if sim != nil {
		select {
		case <-sim.done:
		case <-time.After(time.Minute):
			sim.signal(syscall.SIGINT)
			<-sim.done
		}
		rep.Sim = lastLine(sim.logTail(4000))
		if sim.err != nil {
			r.violate("client load (simulated audience) ended with %v: %s", sim.err, lastLine(sim.logTail(400)))
		}
	}
	// Idle again: the goroutines go back (connections' goroutines end with
	// them; allow the GC and timers a few seconds).
	var idle Sample
	_ = waitUntil(ctx, 20*time.Second, func() bool {
		idle = r.sample("idle after")
		for i, g := range idle.Goroutines {
			if g > rep.IdleBefore.Goroutines[i]+cfg.MaxGoGrowth {
				return false
			}
		}
		return true
	})
	rep.IdleAfter = idle
	rep.Samples = append(rep.Samples, idle)
	rep.LoadEnd = loadAvg()
	r.figures(rep)
	return rep, nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// playing counts the live peers that have played.
func (r *run) playing() int {
	r.mu.Lock()
	live := append([]*peer(nil), r.live...)
	r.mu.Unlock()
	n := 0
	for _, p := range live {
		if p.figures().FirstFrameMs > 0 {
			n++
		}
	}
	return n
}

// liveIDs is the ids of the live peers that know theirs.
func (r *run) liveIDs() (map[string]bool, int) {
	r.mu.Lock()
	live := append([]*peer(nil), r.live...)
	r.mu.Unlock()
	ids := make(map[string]bool, len(live))
	for _, p := range live {
		if id := p.figures().Peer; id != "" {
			ids[id] = true
		}
	}
	return ids, len(live)
}

// treeFaults counts, in the tree, non-source nodes without a parent, nodes
// that are no live peer's (a place kept for one that went), and live peers
// missing from it.
func (r *run) treeFaults(nodes []TreeNode) (noParent, ghosts, missing int) {
	ids, _ := r.liveIDs()
	in := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		in[n.ID] = true
		if n.Role == "source" {
			continue
		}
		if n.Parent == "" {
			noParent++
		}
		if !ids[n.ID] {
			ghosts++
		}
	}
	for id := range ids {
		if !in[id] {
			missing++
		}
	}
	return noParent, ghosts, missing
}

func (r *run) settled(nodes []TreeNode) bool {
	ids, live := r.liveIDs()
	if len(ids) != live {
		return false
	}
	noParent, ghosts, missing := r.treeFaults(nodes)
	if noParent+ghosts+missing > 0 {
		return false
	}
	r.mu.Lock()
	peers := append([]*peer(nil), r.live...)
	r.mu.Unlock()
	for _, p := range peers {
		if f := p.figures(); f.FirstFrameMs == 0 || f.SinceLastMs > 2000 {
			return false
		}
	}
	return true
}

// stopAll makes every live peer leave (SIGINT) at once and waits for
// their reports.
func (r *run) stopAll() {
	r.mu.Lock()
	live := r.live
	r.live = nil
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range live {
		p.mu.Lock()
		p.fate = "stopped"
		p.mu.Unlock()
		p.signal(syscall.SIGINT)
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-p.done:
				if p.err != nil {
					r.violate("%s (%s) ended with %v at the end: %s", p.name, p.figures().Peer, p.err, lastLine(p.logTail(400)))
				}
			case <-time.After(30 * time.Second):
				r.violate("%s (%s) still running 30 s after SIGINT at the end", p.name, p.figures().Peer)
				p.signal(syscall.SIGKILL)
			}
		}()
	}
	wg.Wait()
}

// startSim starts the simulated audience: a second source and `client
// load` against every server, for as long as the churn runs.
func (r *run) startSim(ctx context.Context) (*proc, error) {
	src, err := startProc(r.dir, "sim-source", r.cfg.ClientBin, nil, "broadcast", "-server", r.serverList(1),
		"-stream", simStream, "-capacity", "4", "-loopback-only")
	if err != nil {
		return nil, err
	}
	r.extra = append(r.extra, src)
	if err := waitUntil(ctx, 60*time.Second, func() bool {
		n, ok := TreeAt(r.urls[0], simStream)
		return ok && len(n) == 1
	}); err != nil {
		return nil, fmt.Errorf("the simulated stream's source never joined: %w", err)
	}
	// The ramp takes Sim/SimRate, the real peers' ramp about Peers/5 s.
	hold := r.cfg.Duration + time.Duration(r.cfg.Peers)*200*time.Millisecond + 10*time.Second
	p, err := startProc(r.dir, "sim-load", r.cfg.ClientBin, nil, "load", "-server", r.serverList(1), "-stream", simStream,
		"-viewers", fmt.Sprint(r.cfg.Sim), "-rate", fmt.Sprint(r.cfg.SimRate), "-churn", "30%/min",
		"-duration", hold.String(), "-media", "0", "-loopback-only")
	if err != nil {
		return nil, err
	}
	r.extra = append(r.extra, p)
	return p, nil
}

func (r *run) allProcs() []*proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]*proc(nil), r.extra...)
	for _, p := range r.peers {
		out = append(out, p.proc)
	}
	return out
}

// sample reads each server's goroutines and RSS, the tree's size and
// the live peers.
func (r *run) sample(what string) Sample {
	s := Sample{What: what, At: time.Since(r.started).Seconds(), Load: loadAvg()}
	for _, srv := range r.servers {
		g, _ := goroutines(srv.url)
		m, _ := rssMB(srv.cmd.Process.Pid)
		s.Goroutines = append(s.Goroutines, g)
		s.RSSMB = append(s.RSSMB, round1(m))
	}
	if n, ok := TreeAt(r.urls[0], stream); ok {
		s.Tree = len(n)
	}
	r.mu.Lock()
	s.Peers = len(r.live)
	r.mu.Unlock()
	return s
}
