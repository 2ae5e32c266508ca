package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"canopy/mesh/load"
)

// errMediaFailed means a real viewer of a load run did not get its frames.
var errMediaFailed = errors.New("a media viewer did not get its frames")

// loadTest runs `client load`: a simulated audience (mesh/load).
func loadTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, 1)
	fs.Lookup("capacity").Usage = "children each media viewer claims (1: relay-class, so nothing takes its place; 0: a leaf)"
	viewers := fs.Int("viewers", 1000, "simulated signaling-level peers, relays included")
	rate := fs.Float64("rate", 1000, "joins per second offered (0: as fast as -concurrency allows)")
	concurrency := fs.Int("concurrency", 1000, "joins in flight at most")
	churn := fs.String("churn", "0", "share of the simulated peers replaced per minute while holding, as P/min or a fraction (30%/min, 0.3)")
	mediaN := fs.Int("media", 2, "real pion viewers that must get complete frames throughout")
	frames := fs.Int("frames", 30, "complete frames each media viewer must get")
	duration := fs.Duration("duration", 10*time.Second, "how long to hold the audience after the ramp (with churn)")
	relayShare := fs.Float64("relay-share", 0.02, "share of simulated peers that join as relays")
	relayCap := fs.Int("relay-capacity", 64, "children of each simulated relay")
	statsEvery := fs.Duration("stats-every", 5*time.Second, "stats report interval of each simulated peer (negative: none)")
	joinTimeout := fs.Duration("join-timeout", 60*time.Second, "how long the ramp waits for every peer to get a parent")
	debug := fs.String("debug", "", "comma-separated -debug-addr URLs of the servers, in -server's order: memory is read after a full GC")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	cpuProfile := fs.String("cpuprofile", "", "write the harness's own CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	share, err := parseChurn(*churn)
	if err != nil {
		return err
	}
	cfg := load.Config{
		Servers: splitList(c.server), Debug: splitList(*debug), Stream: c.stream,
		Viewers: *viewers, Rate: *rate, Concurrency: *concurrency, Churn: share, Duration: *duration,
		Media: *mediaN, MediaCapacity: c.capacity, MediaFrames: *frames,
		RelayShare: *relayShare, RelayCapacity: *relayCap, StatsEvery: *statsEvery, JoinTimeout: *joinTimeout,
		Token: c.token, LoopbackOnly: c.loopback, Logger: log,
	}
	if c.capacity == 0 {
		cfg.MediaCapacity = -1 // load.Config: negative means a leaf
	}
	rep, err := load.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := rep.JSON(stdout); err != nil {
			return err
		}
	} else {
		rep.Print(stdout)
	}
	if !rep.MediaOK() {
		return errMediaFailed
	}
	return nil
}

// parseChurn reads "30%/min", "30%", "30/min" (percent) or "0.3".
func parseChurn(s string) (float64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "/min")
	percent := strings.HasSuffix(t, "%") || strings.HasSuffix(s, "/min")
	t = strings.TrimSuffix(t, "%")
	var v float64
	if _, err := fmt.Sscanf(t, "%g", &v); err != nil || v < 0 {
		return 0, fmt.Errorf("-churn: %q is not a share per minute (30%%/min, 0.3)", s)
	}
	if percent {
		v /= 100
	}
	return v, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
