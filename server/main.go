// Command server is Canopy's directory: WebSocket signaling, one tree
// coordinator per stream, the browser client and the JSON API. It serves a
// demo stream out of the box.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "canopy server:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	addr := fs.String("addr", ":8080", "listen address")
	demo := fs.Bool("demo", true, "serve the built-in demo stream \"demo\"")
	demoStream := fs.String("demo-stream", "demo", "name of the demo stream")
	sourceCap := fs.Int("source-capacity", 4, "children a source feeds directly")
	stun := fs.String("stun", "", "comma-separated STUN/TURN URLs handed to peers (none by default)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	loopback := fs.Bool("loopback-only", false, "restrict the in-process peers' ICE to loopback (tests, demos without a network)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	cfg := Config{Policy: tree.Config{SourceCapacity: *sourceCap}, Logger: log}
	if *stun != "" {
		cfg.ICEServers = append(cfg.ICEServers, iceServerList(*stun)...)
	}
	srv := NewServer(cfg)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	httpSrv := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()
	log.Info("canopy listening", "addr", ln.Addr().String(), "url", "http://"+localURLHost(ln.Addr()))

	if *demo {
		go runDemo(ctx, demoConfig{
			server:       "http://" + localURLHost(ln.Addr()),
			stream:       *demoStream,
			capacity:     *sourceCap,
			loopbackOnly: *loopback,
			log:          log.With("demo", *demoStream),
		})
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := httpSrv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// localURLHost is an address the server's own in-process peers can dial:
// a wildcard listen address becomes loopback.
func localURLHost(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || tcp.IP == nil || tcp.IP.IsUnspecified() {
		if ok {
			return fmt.Sprintf("localhost:%d", tcp.Port)
		}
		return a.String()
	}
	return tcp.AddrPort().String()
}

func iceServerList(s string) []protocol.ICEServer {
	var out []protocol.ICEServer
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, protocol.ICEServer{URLs: []string{u}})
		}
	}
	return out
}
