// Command bench-forward measures a relay in its own process fanning a
// 2.5 Mbps VP8 stream out to N children in another process, with Canopy's
// Forwarder and, in the same run, with the naive pion fan-out (one
// TrackLocalStaticRTP added to every child, as pion's broadcast example
// does). It prints relay CPU per forwarded packet, packets out per CPU
// second, loss and source-to-child latency, and the forwarder/naive ratio.
//
//	go run ./scripts/bench-forward -n 10,50,100 -t 10s -runs 1
//
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
	flag.Parse()
	switch *mode {
	case "relay":
		runRelay(*variant, *n)
	case "children":
		runChildren()
	default:
		orchestrate(*ns, *window, *runs)
	}
}

// result is one run's figures.
type result struct {
	cpuPerPkt  float64 // µs of relay CPU per forwarded packet
	pktsPerSec float64 // forwarded packets per relay CPU second
	loss       float64 // percent of forwarded packets not received
	p50, p99   float64 // ms
}

func orchestrate(ns string, window time.Duration, runs int) {
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
	fmt.Printf("%-9s %-10s %12s %14s %8s %9s %9s\n", "children", "variant", "cpu µs/pkt", "pkt/s per core", "loss %", "p50 ms", "p99 ms")
	for _, c := range counts {
		res := map[string][]result{}
		for range runs {
			for _, v := range []string{"naive", "forwarder"} {
				r, err := oneRun(self, v, c, window)
				if err != nil {
					fmt.Fprintf(os.Stderr, "%s n=%d: %v\n", v, c, err)
					continue
				}
				res[v] = append(res[v], r)
			}
		}
		med := map[string]result{}
		for _, v := range []string{"naive", "forwarder"} {
			if len(res[v]) == 0 {
				continue
			}
			m := median(res[v])
			med[v] = m
			fmt.Printf("%-9d %-10s %12.2f %14.0f %8.2f %9.2f %9.2f\n", c, v, m.cpuPerPkt, m.pktsPerSec, m.loss, m.p50, m.p99)
		}
		if a, b := med["forwarder"], med["naive"]; a.cpuPerPkt > 0 && b.cpuPerPkt > 0 {
			fmt.Printf("%-9d ratio      %12.2f  (forwarder / naive CPU per packet)\n", c, a.cpuPerPkt/b.cpuPerPkt)
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

func oneRun(self, variant string, n int, window time.Duration) (result, error) {
	children, err := start(self, "-mode=children")
	if err != nil {
		return result{}, err
	}
	defer children.stop()
	relay, err := start(self, "-mode=relay", "-variant="+variant, "-children="+strconv.Itoa(n))
	if err != nil {
		return result{}, err
	}
	defer relay.stop()
	go route(relay, children)
	go route(children, relay)

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
	}, nil
}
