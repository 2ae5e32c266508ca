package main

import (
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
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
	Logger         *slog.Logger
	// Auth says who may publish, relay and watch; the zero value is dev
	// mode (open). See auth.go.
	Auth AuthConfig
	// Limits bounds connections, messages and timeouts; zero fields take
	// defaults. See limits.go.
	Limits Limits
	// TURN, if set, issues each peer short-lived TURN credentials in its
	// welcome. See turn.go.
	TURN *TURNCredentials

	// onMessage, if set, sees every decoded message before it is handled;
	// tests use it to make one peer's handling panic.
	onMessage func(*protocol.Message)
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
	guard    *guard // auth and limits for /ws (ws.go)
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
		upgrader: websocket.Upgrader{
			ReadBufferSize:  4096,
			WriteBufferSize: 4096,
		},
	}
	s.upgrader.CheckOrigin = s.originOK
	s.guard = newGuard(cfg)
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	// Trust no forwarding headers: limits and logs use the connection's own
	// address, which a client cannot forge.
	_ = r.SetTrustedProxies(nil)
	r.Use(s.recoverer())
	s.routes(r)
	s.engine = r
	return s
}

// routes registers every handler; one line per feature.
func (s *Server) routes(r *gin.Engine) {
	s.embedRoutes(r) // first: its CORS middleware covers /static below (embed.go)
	r.GET("/ws", s.handleWS)
	r.GET("/api/streams", s.listStreams)
	r.GET("/api/streams/:id/tree", s.streamTree)
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"ok": true}) })
	s.observe(r) // /metrics, /readyz, /stats/:stream, /api/streams/:id/stats (metrics.go)
	r.GET("/", s.page("index.html"))
	r.GET("/watch/:stream", s.page("watch.html"))
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
		c.Data(http.StatusOK, "text/html; charset=utf-8", data)
	}
}

func (s *Server) listStreams(c *gin.Context) {
	c.JSON(http.StatusOK, s.hub.list())
}

// treeResponse is GET /api/streams/:id/tree.
type treeResponse struct {
	Stream string          `json:"stream"`
	Live   bool            `json:"live"`
	Nodes  []tree.NodeInfo `json:"nodes"`
}

func (s *Server) streamTree(c *gin.Context) {
	co := s.hub.get(c.Param("id"))
	if co == nil {
		writeError(c, http.StatusNotFound, errNotFound)
		return
	}
	c.JSON(http.StatusOK, treeResponse{Stream: co.id, Live: co.info().Live, Nodes: co.snapshot()})
}
