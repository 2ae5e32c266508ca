// Command server is Canopy's directory: WebSocket signaling, one tree
// coordinator per stream, the browser client and the JSON API. It serves a
// demo stream out of the box.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pion/ice/v4"

	"canopy/mesh"
	"canopy/mesh/peer"
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
	logFormat := fs.String("log-format", "text", "text or json (one object per line, for log collectors)")
	loopback := fs.Bool("loopback-only", false, "restrict the in-process peers' ICE to loopback (tests, demos without a network)")
	udpPort := fs.Int("udp-port", 0, "serve all of the server's in-process peers (the demo source) on this one UDP port (0: any ports)")
	allowOrigin := fs.String("allow-origin", "", "comma-separated origins (https://site.example) trusted like the server's own pages: their pages may publish, relay and watch private streams; * allows any")
	debugAddr := fs.String("debug-addr", "", "serve Go's profiler (/debug/pprof) on this address, e.g. 127.0.0.1:6060 (no auth: keep it private)")
	embedOrigins := fs.String("embed-origins", "", "comma-separated origins where the player may be embedded (iframe frame-ancestors, the component's WebSocket origin); empty: any site, as a viewer that does not relay")
	privacy := fs.String("privacy", "", "private mode by default: relay (every viewer) or relay:stream,… (those streams' viewers) connect through TURN only and relay to nobody; needs TURN")
	resumeGrace := fs.Duration("resume-grace", DefaultResumeGrace, "how long the place of a peer whose signaling connection dropped is kept for it to resume (its media keeps flowing meanwhile); negative: remove it at once")
	resumeSecret := fs.String("resume-secret", os.Getenv("CANOPY_RESUME_SECRET"), "secret that signs resume tokens, shared by the servers of a cluster (env CANOPY_RESUME_SECRET); random per process if unset")
	p2pMin := fs.String("p2p-min-viewers", "", "N or N:stream,…: up to N viewers of a stream (those streams') are all fed by the server's own relay, so they never see each other's addresses; the N+1-th turns the peer-to-peer tree on")
	sec := registerSecurityFlags(fs)
	cl := registerClusterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	handler, err := newLogHandler(*logFormat, os.Stderr, level)
	if err != nil {
		return err
	}
	log := slog.New(handler)

	cfg := Config{Policy: tree.Config{SourceCapacity: *sourceCap}, Logger: log,
		Resume: ResumeConfig{Grace: *resumeGrace, Secret: []byte(*resumeSecret)}}
	if *resumeGrace == 0 {
		cfg.Resume.Grace = -1 // -resume-grace 0 means none, not the default
	}
	if *stun != "" {
		cfg.ICEServers = append(cfg.ICEServers, iceServerList(*stun)...)
	}
	if cfg.AllowedOrigins, err = parseOrigins("allow-origin", *allowOrigin, true); err != nil {
		return err
	}
	if cfg.EmbedOrigins, err = parseOrigins("embed-origins", *embedOrigins, false); err != nil {
		return err
	}
	demoToken, err := sec.apply(&cfg, *demo, *demoStream)
	if err != nil {
		return err
	}
	if cfg.Privacy, err = parsePrivacy(*privacy); err != nil {
		return err
	}
	if cfg.P2PMin, err = parseP2PMin(*p2pMin); err != nil {
		return err
	}
	// A loopback-only server's peers are all on the host: its TURN relay
	// must reach 127.0.0.1, or private viewers reach nobody (turnloopback.go).
	sec.turnLimits.AllowLoopback = *loopback
	// The in-process peers' one ICE port is the only place on the host the
	// relay may reach: a private viewer under the demo source needs it.
	sec.turnLimits.SelfPorts = []int{*udpPort}
	turnSrv, err := sec.startTURN(fs, &cfg, log)
	if err != nil {
		return err
	}
	if cfg.Privacy.enabled() && cfg.TURN == nil {
		return errors.New("-privacy needs TURN: the embedded relay (-turn, its port free) or -turn-url")
	}
	if cfg.Privacy.enabled() && *demo && *udpPort == 0 && !*loopback && turnSrv != nil {
		log.Warn("-privacy without -udp-port: the embedded TURN relay cannot reach the demo source, so private viewers need a Go relay (client relay) to be fed")
	}
	if turnSrv != nil {
		defer turnSrv.Close()
		cfg.Collectors = append(cfg.Collectors, turnSrv.Collector())
	}
	var udpMux ice.UDPMux
	if *udpPort != 0 {
		opts := []ice.UDPMuxFromPortOption{ice.UDPMuxFromPortWithLoopback(), ice.UDPMuxFromPortWithNetworks(ice.NetworkTypeUDP4)}
		if *loopback {
			opts = append(opts, ice.UDPMuxFromPortWithInterfaceFilter(func(n string) bool { return n == "lo" }))
		}
		mux, err := peer.NewUDPMuxFromPort(*udpPort, opts...)
		if err != nil {
			return fmt.Errorf("-udp-port %d: %w", *udpPort, err)
		}
		defer mux.Close()
		udpMux = mux
	}
	var publicIPs []string
	if *sec.publicIP != "" {
		publicIPs = []string{*sec.publicIP}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	// The server's own peers (the demo, WHIP and WHEP nodes) never check
	// candidates that point into the server's network or at its own ports
	// (candidates.go).
	own := []int{portOf(ln.Addr()), *udpPort}
	if turnSrv != nil {
		own = append(own, portOf(turnSrv.Addr()))
	}
	candidates := newCandidatePolicy(*loopback, own...)
	cfg.Hosted = peer.Config{LoopbackOnly: *loopback, UDPMux: udpMux, PublicIPs: publicIPs,
		ICEServers: webrtcICEServers(cfg.ICEServers), RemoteCandidateFilter: candidates.allow}
	node, err := cl.start(log)
	if err != nil {
		return err
	}
	if node != nil {
		// Closed after the HTTP server's shutdown, below: its leases are
		// deleted, so another server takes its streams at once.
		defer node.Close()
		cfg.Cluster = node
	}
	srv := NewServer(cfg)
	if *debugAddr != "" {
		dbg, err := serveDebug(*debugAddr, log)
		if err != nil {
			return fmt.Errorf("-debug-addr: %w", err)
		}
		defer dbg.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("canopy listening", "addr", ln.Addr().String(), "url", "http://"+localURLHost(ln.Addr()))

	if *demo {
		go runDemo(ctx, demoConfig{
			candidates:   candidates,
			udpMux:       udpMux,
			publicIPs:    publicIPs,
			connect:      func() mesh.Transport { return srv.LocalTransport(nil) },
			localPeer:    srv.isHosted,
			stream:       *demoStream,
			capacity:     *sourceCap,
			loopbackOnly: *loopback,
			token:        demoToken,
			log:          log.With("demo", *demoStream),
		})
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	srv.handOver() // first: the streams it owns go on at once at another server
	srv.closeHosted()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// localURLHost is an address to open the server at, for the log:
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

// securityFlags are the flags for auth, limits and TURN. Secrets may come
// from the environment instead, so they stay out of `ps`.
type securityFlags struct {
	jwtSecret  *string
	streamKeys *string
	private    *string
	maxConns   *int
	joinRate   *float64
	joinBurst  *int
	turnOn     *bool
	turnPort   *int
	turnURL    *string
	turnSecret *string
	turnTTL    *time.Duration
	turnLimits TURNConfig // quotas, cap and idle timeout
	publicIP   *string

	httpConnsPerIP *int
	httpConns      *int
	maxStreams     *int
	maxPeers       *int
}

func registerSecurityFlags(fs *flag.FlagSet) *securityFlags {
	f := &securityFlags{
		jwtSecret:  fs.String("jwt-secret", os.Getenv("CANOPY_JWT_SECRET"), "HS256 secret for publish/view/relay tokens (env CANOPY_JWT_SECRET); with -stream-key unset too, publishing is open (dev mode)"),
		streamKeys: fs.String("stream-key", os.Getenv("CANOPY_STREAM_KEYS"), "comma-separated stream=key publishing keys (env CANOPY_STREAM_KEYS)"),
		private:    fs.String("private", "", "comma-separated streams that need a viewer token"),
		maxConns:   fs.Int("max-conns-per-ip", DefaultMaxConnsPerIP, "concurrent signaling connections per client address (-1: no limit)"),
		joinRate:   fs.Float64("join-rate", DefaultJoinRate, "new signaling connections per second per client address (-1: no limit)"),
		joinBurst:  fs.Int("join-burst", DefaultJoinBurst, "burst of new signaling connections per client address"),
		turnOn:     fs.Bool("turn", true, "run the embedded TURN relay and hand peers credentials for it"),
		turnPort:   fs.Int("turn-port", DefaultTURNPort, "UDP port of the embedded TURN relay"),
		turnURL:    fs.String("turn-url", "", "comma-separated URLs of an external TURN server (coturn use-auth-secret) to hand out instead of the embedded one; needs -turn-secret"),
		turnSecret: fs.String("turn-secret", os.Getenv("CANOPY_TURN_SECRET"), "TURN REST shared secret (env CANOPY_TURN_SECRET); random per process for the embedded relay if unset"),
		turnTTL:    fs.Duration("turn-ttl", DefaultTURNTTL, "lifetime of the TURN credentials in a welcome (at most 24h)"),
		publicIP:   fs.String("public-ip", "", "the server's public address: advertised by the TURN relay and in its URL"),

		httpConnsPerIP: fs.Int("max-http-conns-per-ip", DefaultHTTPConnsPerIP, "open TCP connections per client address, WebSockets included (-1: no limit)"),
		httpConns:      fs.Int("max-http-conns", 0, "open TCP connections in all (0: half the process's file limit; -1: no limit)"),
		maxStreams:     fs.Int("max-streams", DefaultMaxStreams, "streams this server hosts at once; a new stream past it is refused (-1: no limit)"),
		maxPeers:       fs.Int("max-peers", DefaultMaxPeers, "signaling connections (peers) in all, about 16 KB each when idle; past it a peer is told the server is full (-1: no limit)"),
	}
	l := &f.turnLimits
	fs.IntVar(&l.MaxAllocations, "turn-max-allocations", 0, "allocations the embedded TURN relay holds in all (0: a quarter of the file limit, within 64-16384)")
	fs.IntVar(&l.UserQuota, "turn-user-quota", DefaultTURNUserQuota, "TURN allocations one peer's credential may hold (-1: no limit)")
	fs.IntVar(&l.AddrQuota, "turn-addr-quota", DefaultTURNAddrQuota, "TURN allocations one client address (IPv6: /64) may hold (-1: no limit)")
	fs.DurationVar(&l.IdleTimeout, "turn-idle-timeout", DefaultTURNIdleTimeout, "release a TURN allocation that relayed nothing for this long")
	return f
}

// apply fills cfg's auth and limits. It returns the token the in-process
// demo source publishes with: its stream key, made up if auth is on and the
// demo stream has none.
func (f *securityFlags) apply(cfg *Config, demo bool, demoStream string) (string, error) {
	cfg.Auth.JWTSecret = []byte(*f.jwtSecret)
	if *f.streamKeys != "" {
		cfg.Auth.StreamKeys = make(map[string]string)
		for _, kv := range strings.Split(*f.streamKeys, ",") {
			stream, key, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if !ok || !protocol.ValidID(stream) || len(key) < 16 || len(key) > protocol.MaxTokenLength {
				return "", fmt.Errorf("-stream-key: want stream=key with a key of at least 16 characters, got %q", kv)
			}
			cfg.Auth.StreamKeys[stream] = key
		}
	}
	if len(cfg.Auth.JWTSecret) > 0 && len(cfg.Auth.JWTSecret) < 32 {
		return "", errors.New("-jwt-secret: use at least 32 bytes")
	}
	for _, s := range strings.Split(*f.private, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Auth.PrivateStreams = append(cfg.Auth.PrivateStreams, s)
		}
	}
	auth := newAuthenticator(cfg.Auth)
	if len(cfg.Auth.PrivateStreams) > 0 && !auth.enabled() {
		return "", errors.New("-private needs -jwt-secret or -stream-key: nobody could watch")
	}
	cfg.Limits.MaxConnsPerIP = *f.maxConns
	cfg.Limits.JoinRate = *f.joinRate
	cfg.Limits.JoinBurst = *f.joinBurst
	cfg.Limits.MaxStreams = *f.maxStreams
	cfg.Limits.MaxPeers = *f.maxPeers
	cfg.HTTP.MaxConnsPerIP = *f.httpConnsPerIP
	cfg.HTTP.MaxConns = *f.httpConns
	if !demo || !auth.enabled() {
		if !auth.enabled() {
			cfg.Logger.Warn("no -jwt-secret or -stream-key: anyone may publish and relay (dev mode)")
		}
		return "", nil
	}
	if key, ok := cfg.Auth.StreamKeys[demoStream]; ok {
		return key, nil
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	key := base64.RawURLEncoding.EncodeToString(b[:])
	if cfg.Auth.StreamKeys == nil {
		cfg.Auth.StreamKeys = make(map[string]string)
	}
	cfg.Auth.StreamKeys[demoStream] = key
	return key, nil
}

// startTURN starts the embedded relay or points peers at an external one.
// If the default port is taken (another TURN server on the host, a second
// instance), the server runs on without TURN and says so; an explicit
// -turn-port that cannot be bound is an error.
func (f *securityFlags) startTURN(fs *flag.FlagSet, cfg *Config, log *slog.Logger) (*TURNServer, error) {
	explicit := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { explicit[fl.Name] = true })
	var publicIP net.IP
	if *f.publicIP != "" {
		if publicIP = net.ParseIP(*f.publicIP); publicIP == nil {
			return nil, fmt.Errorf("-public-ip: %q is not an IP address", *f.publicIP)
		}
	}
	secret := []byte(*f.turnSecret)
	if *f.turnURL != "" {
		if len(secret) == 0 {
			return nil, errors.New("-turn-url needs -turn-secret (the external server's static-auth-secret)")
		}
		cfg.TURN = &TURNCredentials{URLs: strings.Split(*f.turnURL, ","), Secret: secret, TTL: *f.turnTTL}
		return nil, nil
	}
	if !*f.turnOn {
		return nil, nil
	}
	if len(secret) == 0 {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
	}
	tc := f.turnLimits
	tc.Listen, tc.RelayIP, tc.Secret, tc.Logger = net.JoinHostPort("", strconv.Itoa(*f.turnPort)), publicIP, secret, log
	if tc.AllowLoopback && publicIP == nil {
		tc.RelayIP = net.IPv4(127, 0, 0, 1) // relayed candidates a loopback-only host can reach
	}
	ts, err := StartTURN(tc)
	if err != nil {
		if explicit["turn-port"] {
			return nil, err
		}
		log.Warn("embedded TURN relay not started; peers behind strict NATs may not connect", "err", err)
		return nil, nil
	}
	cfg.TURN = &TURNCredentials{Port: ts.Addr().(*net.UDPAddr).Port, Secret: secret, TTL: *f.turnTTL}
	if publicIP != nil {
		cfg.TURN.PublicHost = publicIP.String()
	}
	return ts, nil
}
