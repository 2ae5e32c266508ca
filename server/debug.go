package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"
)

// serveDebug serves Go's profiler (net/http/pprof) on its own listener,
// apart from the public routes: CPU and heap profiles of a loaded server,
// and /debug/pprof/heap?gc=1, which runs a full collection first (the load
// harness reads the live heap per connection after it). Give it a loopback
// address; it has no auth.
func serveDebug(addr string, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	// One contended lock in 100 is sampled for /debug/pprof/mutex: the
	// per-stream coordinator lock is the first suspect under load.
	runtime.SetMutexProfileFraction(100)
	srv := &http.Server{Handler: debugMux(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("profiler listening", "addr", ln.Addr().String())
	return srv, nil
}

// debugMux routes net/http/pprof's handlers.
func debugMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
