package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"canopy/mesh/peer"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
	"canopy/server/cluster"
	"canopy/server/whip"
	"canopy/static"
)

// Config is everything the server is built from; main fills it from flags.
type Config struct {
	// Policy bounds the tree: source capacity, per-kind capacity clamps.
	Policy tree.Config
	// ICEServers are handed to every peer in its welcome.
	ICEServers []protocol.ICEServer
	// AllowedOrigins are other sites whose pages may open the signaling
	// WebSocket (an embedded player); "*" allows any.
	AllowedOrigins []string
	// EmbedOrigins, if set, are the only other sites where the player may
	// be embedded (the iframe's frame-ancestors, the component's WebSocket
	// Origin); empty means any site. See gate.go.
	EmbedOrigins []string
	Logger       *slog.Logger
	// Auth says who may publish, relay and watch; the zero value is dev
	// mode (open). See auth.go.
	Auth AuthConfig
	// Limits bounds connections, messages and timeouts; zero fields take
	// defaults. See limits.go.
	Limits Limits
	// TURN, if set, issues each peer short-lived TURN credentials in its
	// welcome. See turn.go.
	TURN *TURNCredentials
	// Hosted is the network of the nodes the server hosts itself (WHIP
	// sources, WHEP relays): loopback for tests, a UDP mux, public IPs,
	// STUN servers. See hosted.go.
	Hosted peer.Config
	// WHIPSessionsPerIP bounds WHIP plus WHEP sessions per client address
	// (0: whip.DefaultMaxSessionsPerAddr).
	WHIPSessionsPerIP int
	// HTTP bounds TCP connections and plain HTTP requests; zero fields
	// take defaults. See listener.go.
	HTTP HTTPLimits
	// Privacy makes private mode (relay-only ICE, no children) the
	// default for some or all viewers. See privacy.go.
	Privacy PrivacyConfig
	// Resume says how long the place of a peer whose signaling dropped is
	// kept for its resume, and the secret its token is signed with. See
	// resume.go.
	Resume ResumeConfig
	// P2PMin has the server's relay feed small audiences itself
	// (-p2p-min-viewers). See p2pmin.go.
	P2PMin P2PMinConfig
	// Collectors are more Prometheus collectors for /metrics (the embedded
	// TURN relay's).
	Collectors []prometheus.Collector
	// Cluster is this server's membership of a cluster (cluster.Start);
	// nil starts single mode, an in-process NATS of its own, closed with
	// the server.
	Cluster *cluster.Node

	// onMessage, if set, sees every decoded message before it is handled;
	// tests use it to make one peer's handling panic.
	onMessage func(*protocol.Message)
	// onForward, if set, sees every signal the server forwards, as it
	// forwards it (after privacy.go's filter); called under the stream's lock.
	onForward func(from, to string, sig *protocol.Signal)
}

// Server is the directory: signaling, the per-stream coordinators, the
// JSON API and the static browser client.
type Server struct {
	cfg      Config
	log      *slog.Logger
	hub      *hub
	upgrader websocket.Upgrader
	engine   *gin.Engine
	started  time.Time
	guard    *guard        // auth and limits for /ws (ws.go)
	gate     *gate         // the one admission decision of every entry point (gate.go)
	peers    *peerSlots    // signaling connections against -max-peers (caps.go)
	http     *http.Server  // what Serve serves with (listener.go)
	conns    *connTracker  // open TCP connections per address and in all
	whip     *whip.Handler // WHIP and WHEP (hosted.go); nil if they could not start
	hosted   sync.Map      // ids of the peers on in-process connections (local.go)

	privacy *privacyPolicy // private mode (privacy.go)

	node     *cluster.Node // how peers reach their stream's owner (owner.go)
	ownNode  bool          // node is single mode's own, closed with the server
	owner    ownerHandler
	nodeOnce sync.Once
}

// errNotFound is the API's answer for an unknown stream.
var errNotFound = errors.New("not found")

// NewServer builds the server and its routes.
func NewServer(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		hub:     newHub(cfg.Policy, cfg.Logger),
		started: time.Now(),
		// A small read buffer (a larger message is read through it in
		// pieces) and a write buffer lent per write (sendq.go): an idle
		// connection held 8 KiB of gorilla's buffers before.
		upgrader: websocket.Upgrader{
			ReadBufferSize:  1024,
			WriteBufferSize: 4096,
			WriteBufferPool: newWriteBufferPool(),
		},
	}
	s.upgrader.CheckOrigin = s.originOK
	s.cfg.HTTP = cfg.HTTP.withDefaults()
	s.conns = newConnTracker(s.cfg.HTTP, cfg.Logger)
	s.http = s.newHTTPServer()
	s.guard = newGuard(cfg)
	s.gate = newGate(s.guard.auth, cfg)
	s.privacy = newPrivacyPolicy(cfg)
	s.peers = &peerSlots{max: s.guard.lim.MaxPeers}
	s.hub.maxStreams = s.guard.lim.MaxStreams
	s.node = cfg.Cluster
	if s.node == nil {
		node, err := cluster.Start(cluster.Config{Log: cfg.Logger})
		if err != nil {
			// Single mode's NATS opens no port and writes no file: it fails
			// only when the process cannot run at all.
			panic(fmt.Sprintf("canopy: in-process NATS: %v", err))
		}
		s.node, s.ownNode = node, true
	}
	s.owner = ownerHandler{s: s}
	s.node.SetTakeover(s.takeover)
	if err := s.node.ServeList(s.ownStreams); err != nil { // the cluster's /api/streams (clusterapi.go)
		s.log.Warn("cannot answer the cluster's stream lists", "err", err)
	}
	s.hub.owns = s.node.Owns
	s.hub.onRemoved = s.node.Release
	s.hub.names = newNameHolds(s.guard.lim.ReclaimGrace)
	s.hub.resumer = newResumer(cfg.Resume)
	s.hub.keepRelay = s.keepRelay
	if cfg.P2PMin.Viewers > 0 {
		s.hub.gate = func(stream string) *p2pGate {
			if !cfg.P2PMin.covers(stream) {
				return nil
			}
			return newP2PGate(cfg.P2PMin.Viewers, s.keepRelay)
		}
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	// Trust no forwarding headers: limits and logs use the connection's own
	// address, which a client cannot forge.
	_ = r.SetTrustedProxies(nil)
	r.Use(s.recoverer(), securityHeaders)
	s.routes(r)
	s.engine = r
	return s
}

// routes registers every handler; one line per feature.
func (s *Server) routes(r *gin.Engine) {
	s.embedRoutes(r) // first: its CORS middleware covers /static below (embed.go)
	r.GET("/ws", s.handleWS)
	s.whipRoutes(r) // /whip, /whep (hosted.go)
	r.GET("/api/streams", s.listStreams)
	r.GET("/api/streams/:id/tree", s.streamTree)
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"ok": true}) })
	s.observe(r) // /metrics, /readyz, /stats/:stream, /api/streams/:id/stats (metrics.go)
	r.GET("/", s.page("index.html"))
	r.GET("/watch/:stream", s.streamPage("stream", "watch.html"))
	// The publish page shows nothing of a stream until its WHIP request
	// succeeds, which carries the publisher's token: no gate on the page.
	r.GET("/publish/:stream", s.page("publish.html"))
	r.StaticFS("/static", http.FS(static.FS))
	r.NoRoute(func(c *gin.Context) { writeError(c, http.StatusNotFound, errNotFound) })
}

// ServeHTTP makes the server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.engine.ServeHTTP(w, r) }

func (s *Server) recoverer() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("panic in handler", "path", c.Request.URL.Path, "panic", r)
				writeError(c, http.StatusInternalServerError, errors.New("internal error"))
			}
		}()
		c.Next()
	}
}

func writeError(c *gin.Context, status int, err error) {
	c.AbortWithStatusJSON(status, gin.H{"error": err.Error()})
}

func (s *Server) page(name string) gin.HandlerFunc {
	return func(c *gin.Context) {
		data, err := fs.ReadFile(static.FS, name)
		if err != nil {
			writeError(c, http.StatusNotFound, errNotFound)
			return
		}
		c.Header("Cache-Control", "no-cache")
		s.pageHeaders(c, name)
		c.Data(http.StatusOK, "text/html; charset=utf-8", data)
	}
}

// listStreams lists the streams the caller may view: private ones only
// with a token for them. A bad token is refused (401).
func (s *Server) listStreams(c *gin.Context) {
	who, err := s.gate.caller(c.Request)
	if err != nil {
		s.answerRefusal(c, err)
		return
	}
	all := s.clusterStreams() // every server's, not only this one's (clusterapi.go)
	out := all[:0]
	for _, st := range all {
		if s.gate.visible(who, st.ID) {
			out = append(out, st)
		}
	}
	c.JSON(http.StatusOK, out)
}

// treeResponse is GET /api/streams/:id/tree.
type treeResponse struct {
	Stream string `json:"stream"`
	// Owner is the id of the server that runs the stream's coordinator.
	Owner string          `json:"owner"`
	Live  bool            `json:"live"`
	Nodes []tree.NodeInfo `json:"nodes"`
}

// streamTree answers from any server: the owner's tree (clusterapi.go).
func (s *Server) streamTree(c *gin.Context) { s.serveAnswer(c, askTree) }
