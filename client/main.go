// Command client is Canopy's Go peer: it broadcasts a stream (the tree's
// source), relays one (receives once, forwards to its children without
// re-encoding) or watches one headless.
//
//	client broadcast -server URL -stream NAME [-video FILE|-] [-audio FILE] [-capacity N]
//	client broadcast -server URL -stream NAME (-rtp ADDR [-codec h264|vp8] [-rtp-audio ADDR] | -sdp FILE)
//	client relay     -server URL -stream NAME [-capacity N]
//	client watch     -server URL -stream NAME [-frames N] [-timeout D] [-json] [-capacity N]
//	client load      -server URL[,URL…] -stream NAME -viewers N -rate R [-churn P/min] [-media M] [-duration D]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const usage = `usage: client <broadcast|relay|watch|load|soak> [flags]

  broadcast  publish a stream: the demo clip, or -video FILE (.ivf VP8, .h264 Annex-B)
             and/or -audio FILE (.ogg Opus), looped; or live: -video - (IVF/H264
             on standard input), -rtp ADDR / -rtp-audio ADDR / -sdp FILE (RTP
             from ffmpeg or GStreamer)
  relay      join a stream as a Go relay that forwards to -capacity children
  watch      watch headless; exits 0 after -frames complete video frames
  load       simulate an audience: -viewers signaling-level peers at -rate joins/s
             with -churn, and -media real viewers that must get complete frames;
             prints joins/s, latencies, errors, the servers' memory and CPU
  soak       run a churn soak: a cluster of -server-bin processes, a source and
             -peers real viewers that join, leave and crash for -duration; fails
             on a stall, a peer without a parent, or goroutines or memory growing

Run 'client <command> -h' for the command's flags.`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "broadcast":
		err = broadcast(ctx, os.Args[2:], os.Stderr)
	case "relay":
		err = relay(ctx, os.Args[2:], os.Stderr)
	case "watch":
		err = watch(ctx, os.Args[2:], os.Stdout, os.Stderr)
	case "load":
		err = loadTest(ctx, os.Args[2:], os.Stdout, os.Stderr)
	case "soak":
		err = soakTest(ctx, os.Args[2:], os.Stdout, os.Stderr)
	case "-h", "-help", "--help", "help":
		fmt.Println(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "client: unknown command %q\n\n%s\n", os.Args[1], usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

// common are the flags every command takes.
type common struct {
	server   string
	stream   string
	capacity int
	token    string
	loopback bool
	logLevel string
}

func (c *common) register(fs *flag.FlagSet, defaultCapacity int) {
	fs.StringVar(&c.server, "server", "http://localhost:8080", "Canopy server address, or several separated by commas: tried in turn on connect and when resuming after a drop")
	fs.StringVar(&c.stream, "stream", "demo", "stream name")
	fs.IntVar(&c.capacity, "capacity", defaultCapacity, "how many children this peer feeds (the server may clamp it)")
	fs.StringVar(&c.token, "token", "", "credential for the stream, if it needs one")
	fs.BoolVar(&c.loopback, "loopback-only", false, "restrict ICE to loopback (tests)")
	fs.StringVar(&c.logLevel, "log-level", "warn", "debug, info, warn or error")
}

func (c *common) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), nil
}

// waitOrTimeout is a context that ends at timeout (if positive).
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
