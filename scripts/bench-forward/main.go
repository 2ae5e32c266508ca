//go:build unix

// Command bench-forward measures a relay in its own process fanning a
// 2.5 Mbps VP8 stream out to N children in other processes (one per
// -per-proc children, so the receivers are not what limits the relay), with
// Canopy's Forwarder and, in the same run, with the naive pion fan-out (one
// TrackLocalStaticRTP added to every child, as pion's broadcast example
// does). It prints relay CPU per forwarded packet, packets out per CPU
// second, loss, source-to-child latency of each frame's last packet, the
// receivers' CPU, and the ratio of each variant to naive. Variants:
// forwarder (one socket per child, as Canopy runs), forwarder-mux (one UDP
// port for all, peer.NewUDPMuxFromPort, as the server's -udp-port),
// forwarder-icemux (one socket from ice.NewUDPMuxDefault, unbatched); whip
// and whep measure a Canopy server process instead (server.go): a pion
// publisher in another process publishes over WHIP, and the children
// receive from the server's WHIP source node (Go viewers) or its WHEP
// relay (WHEP players). Run those from the repository root (the server is
// built with go build ./server).
//
//	go run ./scripts/bench-forward -n 10,50,100 -t 8s -runs 3
//	go run ./scripts/bench-forward -n 100 -variants naive,forwarder,forwarder-mux,forwarder-icemux
//	go run ./scripts/bench-forward -n 50 -variants naive,whip,whep
//
// BENCH_RELAY_PROFILE=<file> writes a CPU profile of the forwarder relay.
// The relay and the children talk signaling over the parent's pipes (JSON
// lines); media goes over loopback UDP.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"canopy/mesh/protocol"
)

// msg is one line between the orchestrator and a relay or children process.
type msg struct {
	Child string           `json:"child,omitempty"`
	Sig   *protocol.Signal `json:"sig,omitempty"`
	Cmd   string           `json:"cmd,omitempty"` // "mark": reply with counters
	Stats *stats           `json:"stats,omitempty"`
}

// stats is what a process reports at a mark.
type stats struct {
	CPU      time.Duration `json:"cpu"`      // user+system CPU of the process so far
	Sent     uint64        `json:"sent"`     // relay: packets written to children
	In       uint64        `json:"in"`       // relay: packets from the source
	Received uint64        `json:"received"` // children: packets received
	Ready    int           `json:"ready"`    // children: children that received anything
	P50      float64       `json:"p50"`      // children: source→child delay of frames since the last mark, ms
	P99      float64       `json:"p99"`
	// Children: the delays' quantiles (every 0.5 %) and how many there
	// were, so the orchestrator can merge several children processes.
	Quantiles []float64 `json:"q,omitempty"`
	Delays    int       `json:"delays"`
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// lines reads JSON lines from r into ch.
func lines(r io.Reader, ch chan<- msg) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m msg
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			ch <- m
		}
	}
	close(ch)
}

// out writes JSON lines to stdout, one writer at a time.
type out struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (o *out) send(m msg) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.enc.Encode(m)
}

func main() {
	mode := flag.String("mode", "", "relay | children (internal); empty runs the benchmark")
	variant := flag.String("variant", "forwarder", "forwarder | naive (relay mode)")
	n := flag.Int("children", 10, "children (relay and children modes)")
	ns := flag.String("n", "10,50,100", "children counts to run")
	window := flag.Duration("t", 10*time.Second, "measurement window per run")
	runs := flag.Int("runs", 1, "runs per configuration, interleaved")
	flag.IntVar(&perProc, "per-proc", 25, "children per receiving process: the children are split across processes so that the receiving side is not what limits the relay")
	variants := flag.String("variants", "naive,forwarder", "relay variants to compare: naive, forwarder, forwarder-mux (one UDP port, batched), forwarder-icemux (one socket, unbatched), whip (a Canopy server: WHIP publisher → its source node → Go viewers), whep (WHIP publisher → the server's WHEP relay → WHEP players), whip-mux and whep-mux (the server with -udp-port)")
	server := flag.String("server", "", "the Canopy server's URL (publisher and viewers modes)")
	kind := flag.String("kind", "whip", "whip: Go mesh viewers; whep: WHEP players (viewers mode)")
	first := flag.Int("first", 0, "number of the first viewer (viewers mode)")
	flag.Parse()
	switch *mode {
	case "relay":
		runRelay(*variant, *n)
	case "children":
		runChildren()
	case "publisher":
		runPublisher(*server)
	case "viewers":
		runViewers(*server, *kind, *first, *n)
	default:
		orchestrate(*ns, strings.Split(*variants, ","), *window, *runs)
	}
}

// result is one run's figures.
type result struct {
	childCPU   float64 // receiving processes' CPU, percent of one core
	cpuPerPkt  float64 // µs of relay CPU per forwarded packet
	pktsPerSec float64 // forwarded packets per relay CPU second
	loss       float64 // percent of forwarded packets not received
	p50, p99   float64 // ms
}

// perProc is the -per-proc flag.
var perProc int

func orchestrate(ns string, variants []string, window time.Duration, runs int) {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var counts []int
	for _, s := range strings.Split(ns, ",") {
		if v, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
			counts = append(counts, v)
		}
	}
	fmt.Printf("relay: 2.5 Mbps VP8 (300 pkt/s, 1040 B payload), window %v, %d run(s) per row, medians\n", window, runs)
	fmt.Printf("%-9s %-16s %12s %14s %8s %9s %9s %12s\n", "children", "variant", "cpu µs/pkt", "pkt/s per core", "loss %", "p50 ms", "p99 ms", "recv cpu %")
	for _, c := range counts {
		res := map[string][]result{}
		for range runs {
			for _, v := range variants {
				run := oneRun
				if strings.HasPrefix(v, "whip") || strings.HasPrefix(v, "whep") {
					run = oneServerRun
				}
				r, err := run(self, v, c, window)
				if err != nil {
					fmt.Fprintf(os.Stderr, "%s n=%d: %v\n", v, c, err)
					continue
				}
				res[v] = append(res[v], r)
			}
		}
		med := map[string]result{}
		for _, v := range variants {
			if len(res[v]) == 0 {
				continue
			}
			m := median(res[v])
			med[v] = m
			fmt.Printf("%-9d %-16s %12.2f %14.0f %8.2f %9.2f %9.2f %12.0f\n", c, v, m.cpuPerPkt, m.pktsPerSec, m.loss, m.p50, m.p99, m.childCPU)
		}
		for _, v := range variants {
			if a, b := med[v], med["naive"]; v != "naive" && a.cpuPerPkt > 0 && b.cpuPerPkt > 0 {
				fmt.Printf("%-9d %-16s %12.2f  (%s / naive CPU per packet)\n", c, "ratio", a.cpuPerPkt/b.cpuPerPkt, v)
			}
		}
	}
}

func median(rs []result) result {
	pick := func(get func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	return result{
		cpuPerPkt:  pick(func(r result) float64 { return r.cpuPerPkt }),
		pktsPerSec: pick(func(r result) float64 { return r.pktsPerSec }),
		loss:       pick(func(r result) float64 { return r.loss }),
		p50:        pick(func(r result) float64 { return r.p50 }),
		p99:        pick(func(r result) float64 { return r.p99 }),
		childCPU:   pick(func(r result) float64 { return r.childCPU }),
	}
}

// proc is a child process speaking JSON lines.
type proc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	enc *json.Encoder
	mu  sync.Mutex
	out chan msg
	// stats replies, in order
	replies chan *stats
}

func start(self string, args ...string) (*proc, error) {
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, in: in, enc: json.NewEncoder(in), out: make(chan msg, 1024), replies: make(chan *stats, 4)}
	go lines(stdout, p.out)
	return p, nil
}

func (p *proc) send(m msg) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.enc.Encode(m)
}

func (p *proc) mark() (*stats, error) {
	p.send(msg{Cmd: "mark"})
	select {
	case s := <-p.replies:
		return s, nil
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("no stats from %s", p.cmd.Args[1])
	}
}

func (p *proc) stop() {
	_ = p.in.Close()
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// route passes signals from one process to the other and stats replies to
// their waiters.
func route(from, to *proc) {
	for m := range from.out {
		if m.Stats != nil {
			from.replies <- m.Stats
			continue
		}
		to.send(m)
	}
}

// group is the receiving processes of one run, children spread over them.
type group []*proc

func (g group) of(child string) *proc {
	i, _ := strconv.Atoi(strings.TrimPrefix(child, "c"))
	return g[i%len(g)]
}

// mark collects every process's counters and merges them.
func (g group) mark() (*stats, error) {
	total := &stats{}
	var q []float64 // pooled quantiles, each standing for Delays/len(Quantiles) delays
	var w []float64
	for _, p := range g {
		s, err := p.mark()
		if err != nil {
			return nil, err
		}
		total.CPU += s.CPU
		total.Received += s.Received
		total.Ready += s.Ready
		for _, v := range s.Quantiles {
			q = append(q, v)
			w = append(w, float64(s.Delays)/float64(len(s.Quantiles)))
		}
		total.Delays += s.Delays
	}
	if len(q) > 0 {
		idx := make([]int, len(q))
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool { return q[idx[a]] < q[idx[b]] })
		at := func(frac float64) float64 {
			want, acc := frac*float64(total.Delays), 0.0
			for _, i := range idx {
				acc += w[i]
				if acc >= want {
					return q[i]
				}
			}
			return q[idx[len(idx)-1]]
		}
		total.P50, total.P99 = at(0.5), at(0.99)
	}
	return total, nil
}

func oneRun(self, variant string, n int, window time.Duration) (result, error) {
	procs := max(1, (n+perProc-1)/perProc)
	children := make(group, 0, procs)
	defer func() {
		for _, c := range children {
			c.stop()
		}
	}()
	for range procs {
		c, err := start(self, "-mode=children")
		if err != nil {
			return result{}, err
		}
		children = append(children, c)
	}
	relay, err := start(self, "-mode=relay", "-variant="+variant, "-children="+strconv.Itoa(n))
	if err != nil {
		return result{}, err
	}
	defer relay.stop()
	go func() {
		for m := range relay.out {
			if m.Stats != nil {
				relay.replies <- m.Stats
				continue
			}
			children.of(m.Child).send(m)
		}
	}()
	for _, c := range children {
		go route(c, relay)
	}

	deadline := time.Now().Add(60 * time.Second)
	for {
		s, err := children.mark()
		if err != nil {
			return result{}, err
		}
		if s.Ready == n {
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("only %d of %d children receive", s.Ready, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // warm-up: joins and their bursts are over
	r0, err := relay.mark()
	if err != nil {
		return result{}, err
	}
	c0, err := children.mark()
	if err != nil {
		return result{}, err
	}
	time.Sleep(window)
	r1, err := relay.mark()
	if err != nil {
		return result{}, err
	}
	time.Sleep(300 * time.Millisecond) // packets in flight
	c1, err := children.mark()
	if err != nil {
		return result{}, err
	}
	fwd := float64(r1.In-r0.In) * float64(n) // what the relay should forward in the window
	cpu := (r1.CPU - r0.CPU).Seconds()
	got := float64(c1.Received - c0.Received)
	return result{
		cpuPerPkt:  cpu * 1e6 / fwd,
		pktsPerSec: fwd / cpu,
		loss:       max(0, 100*(1-got/fwd)),
		p50:        c1.P50,
		p99:        c1.P99,
		childCPU:   100 * (c1.CPU - c0.CPU).Seconds() / (window + 300*time.Millisecond).Seconds(),
	}, nil
}
