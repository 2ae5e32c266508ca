package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"canopy/mesh/soak"
)

// errSoakFailed means a soak ran and broke one of its bounds.
var errSoakFailed = errors.New("the soak broke its bounds")

// soakTest runs `client soak` (mesh/soak): the peers are this binary's
// watch command, the servers -server-bin.
func soakTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	d := soak.Defaults
	serverBin := fs.String("server-bin", os.Getenv("CANOPY_SERVER_BIN"), "the canopy server binary (CANOPY_SERVER_BIN)")
	dir := fs.String("dir", "", "keep logs and stores here (default: a temporary directory, removed when the soak passes)")
	servers := fs.Int("servers", d.Servers, "servers in the cluster")
	peers := fs.Int("peers", d.Peers, "real media peers (client watch processes) held at once")
	relayShare := fs.Float64("relay-share", d.RelayShare, "share of the peers that forward to -relay-capacity children")
	relayCap := fs.Int("relay-capacity", d.RelayCapacity, "children of a forwarding peer")
	sourceCap := fs.Int("source-capacity", d.SourceCapacity, "children of the source")
	duration := fs.Duration("duration", d.Duration, "churn time, after the ramp")
	churn := fs.String("churn", "30%/min", "share of the peers replaced per minute (P/min or a fraction)")
	crash := fs.Float64("crash-share", d.CrashShare, "share of departures that are SIGKILL; the rest leave gracefully")
	sim := fs.Int("sim", 0, "simulated signaling-only viewers (client load) on a second stream")
	simRate := fs.Float64("sim-rate", d.SimRate, "their joins per second")
	maxStall := fs.Duration("max-stall", d.MaxStall, "fail when a viewer gets no frame for longer")
	firstFrame := fs.Duration("first-frame", d.FirstFrame, "fail when a new viewer has not played by then")
	settle := fs.Duration("settle", d.Settle, "fail when, after the churn, a peer has no parent for longer")
	goGrowth := fs.Int("max-goroutine-growth", d.MaxGoGrowth, "fail when a server has more goroutines idle after the soak than before, by more")
	rssRatio := fs.Float64("max-rss-ratio", d.MaxRSSRatio, "fail when a server's RSS at the end of the churn exceeds its RSS at the end of the ramp times this")
	sampleEvery := fs.Duration("sample-every", d.SampleEvery, "how often the servers' goroutines and RSS are read")
	serverFlags := fs.String("server-flags", "", "extra flags for every server, space-separated (-server-flags '-log-level info')")
	seed := fs.Uint64("seed", 0, "the schedule's seed (0: from the clock)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	share, err := parseChurn(*churn)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if *serverBin == "" {
		return errors.New("soak: -server-bin is needed (go build -o /tmp/server ./server)")
	}
	cfg := soak.Config{
		ServerBin: *serverBin, ClientBin: self, Dir: *dir, Keep: *dir != "",
		Servers: *servers, Peers: *peers, RelayShare: *relayShare, RelayCapacity: *relayCap, SourceCapacity: *sourceCap,
		Duration: *duration, Churn: share, CrashShare: *crash, Sim: *sim, SimRate: *simRate,
		MaxStall: *maxStall, FirstFrame: *firstFrame, Settle: *settle, MaxGoGrowth: *goGrowth, MaxRSSRatio: *rssRatio,
		SampleEvery: *sampleEvery, Seed: *seed, Log: stderr, ServerFlags: strings.Fields(*serverFlags),
	}
	if *quiet {
		cfg.Log = io.Discard
	}
	start := time.Now()
	rep, err := soak.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			return err
		}
	} else {
		rep.Print(stdout)
		fmt.Fprintf(stdout, "took %s\n", time.Since(start).Round(time.Second))
	}
	if len(rep.Violations) > 0 {
		return fmt.Errorf("%w: %d violations", errSoakFailed, len(rep.Violations))
	}
	return nil
}
