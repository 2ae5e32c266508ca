// Package whip serves WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep): a
// publisher's WebRTC session becomes the source node of its stream's tree,
// hosted in the server, and WHEP players are served as the children of a
// relay node the server attaches to the tree. Both kinds of node are
// ordinary mesh.Nodes on an in-process signaling connection (Config.Admit):
// media is forwarded, never re-encoded, and the tree cannot tell them from
// a Go source or relay.
package whip

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"

	"canopy/mesh"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// Errors of the WHIP and WHEP endpoints, each answered with one status
// (see statusOf) and its text as the body.
var (
	// ErrUnauthorized means the request carries no valid credential where one is needed (401).
	ErrUnauthorized = errors.New("a valid bearer token is required")
	// ErrForbidden means the credential is valid but does not grant this stream or role (403).
	ErrForbidden = errors.New("the token does not grant this")
	// errContentType means the body is not of the media type the method takes (415).
	errContentType = errors.New("unsupported content type")
	// errTooLarge means the body exceeds Config.MaxBody (413).
	errTooLarge = errors.New("body too large")
	// errBadSDP means the offer is not parsable SDP or has no audio or video (400).
	errBadSDP = errors.New("bad SDP offer")
	// errBadFragment means a PATCH body is not a trickle-ice-sdpfrag (400).
	errBadFragment = errors.New("bad trickle-ice-sdpfrag")
	// errBadStream means the stream name is not a valid id (400).
	errBadStream = errors.New("invalid stream name")
	// errStreamTaken means the stream already has a source (409).
	errStreamTaken = errors.New("the stream already has a source")
	// errNoCodec means an offered media section has no codec the tree can carry (422).
	errNoCodec = errors.New("no codec in common")
	// errTooManySessions means the client address holds its quota of sessions (429).
	errTooManySessions = errors.New("too many sessions from this address")
	// errArrivalRate means the client address starts sessions faster than
	// Config.Arrive lets it (429).
	errArrivalRate = errors.New("too many new sessions from this address; slow down")
	// errTooManyRestarts means a session restarts ICE faster than
	// restartRate (429).
	errTooManyRestarts = errors.New("too many ICE restarts in this session; slow down")
	// errNoSession means the session resource does not exist (any more) (404).
	errNoSession = errors.New("no such session")
	// errPrecondition means If-Match names another version of the session (412).
	errPrecondition = errors.New("If-Match does not match the session's ETag")
	// errFull means the server is at its cap of streams or peers (503).
	errFull = errors.New("the server is full")
	// ErrNoStream means a WHEP player asked for a stream nobody publishes,
	// or one hidden from it (a private stream without a grant reads the
	// same) (404).
	ErrNoStream = errors.New("stream not found")
)

// statuses maps each error to its HTTP status; anything else is a 500.
var statuses = []struct {
	err    error
	status int
}{
	{ErrUnauthorized, http.StatusUnauthorized},
	{ErrForbidden, http.StatusForbidden},
	{errContentType, http.StatusUnsupportedMediaType},
	{errTooLarge, http.StatusRequestEntityTooLarge},
	{errBadSDP, http.StatusBadRequest},
	{errBadFragment, http.StatusBadRequest},
	{errBadStream, http.StatusBadRequest},
	{errStreamTaken, http.StatusConflict},
	{errNoCodec, http.StatusUnprocessableEntity},
	{errTooManySessions, http.StatusTooManyRequests},
	{errArrivalRate, http.StatusTooManyRequests},
	{errTooManyRestarts, http.StatusTooManyRequests},
	{errNoSession, http.StatusNotFound},
	{ErrNoStream, http.StatusNotFound},
	{errPrecondition, http.StatusPreconditionFailed},
	{errFull, http.StatusServiceUnavailable},
}

func statusOf(err error) int {
	for _, s := range statuses {
		if errors.Is(err, s.err) {
			return s.status
		}
	}
	return http.StatusInternalServerError
}

// Media types of the protocol.
const (
	mimeSDP     = "application/sdp"
	mimeSDPFrag = "application/trickle-ice-sdpfrag"
)

// Defaults of Config.
const (
	// DefaultMaxBody bounds an offer or a trickle fragment. OBS's offer is
	// ~2 KiB and a browser's with every codec ~6 KiB; the signaling's own
	// message limit is the same.
	DefaultMaxBody = protocol.MaxMessageSize
	// DefaultMaxSessionsPerAddr bounds WHIP plus WHEP sessions per client
	// address: a studio with a few encoders, or a few players behind one NAT.
	DefaultMaxSessionsPerAddr = 16
	// DefaultRelayCapacity is how many tree children the server's WHEP relay
	// offers besides its WHEP players: a server relays like a Go relay.
	DefaultRelayCapacity = 4
)

// Connect opens the in-process signaling connection of a node the server
// hosts, admitted with the credential Admit verified.
type Connect func() mesh.Transport

// Config is what the handlers need from the server.
type Config struct {
	// Admit checks the request's credential (Authorization: Bearer) for
	// role on stream: RoleSource for WHIP, RoleViewer for WHEP. It returns
	// how to connect the hosted node, or ErrUnauthorized / ErrForbidden.
	Admit func(r *http.Request, stream string, role protocol.Role) (Connect, error)
	// HasSource reports whether stream has a source now: WHIP answers 409
	// before doing any work, WHEP 404 when there is no stream at all.
	HasSource func(stream string) (exists, live bool)
	// ICEServers are announced in Link headers: STUN and TURN (with
	// credentials issued for this session).
	ICEServers func(r *http.Request, session string) []protocol.ICEServer
	// ClientKey groups requests by client address for MaxSessionsPerAddr.
	ClientKey func(r *http.Request) string
	// Arrive is charged once for every POST, before any work: the rate at
	// which one address may start sessions (the server passes the join
	// bucket /ws pays from). An error refuses the POST with 429. nil: no
	// rate. Without it the quota of sessions bounded what an address held,
	// never how fast it created and DELETEd them, each a PeerConnection.
	Arrive func(r *http.Request) error
	// Slot takes one of the server's peer slots for a WHEP player, whose
	// media the server sends from its own uplink; ok false refuses the
	// player with 503. nil: no cap.
	Slot func() (release func(), ok bool)
	// Peer is the hosted nodes' network (loopback for tests, a UDP mux,
	// public IPs) and their STUN servers.
	Peer peer.Config
	// LocalPeer says which tree peers the server hosts itself (see
	// mesh.Config.LocalPeer); nil means none.
	LocalPeer func(id string) bool
	// SourceCapacity is the capacity a WHIP source claims; the tree's policy
	// clamps it.
	SourceCapacity int
	// RelayCapacity is the tree capacity of the server's WHEP relay (0: the
	// default, negative: none).
	RelayCapacity int
	// MaxSessionsPerAddr and MaxBody: 0 takes the defaults.
	MaxSessionsPerAddr int
	MaxBody            int64
	Logger             *slog.Logger
}

// Handler serves /whip and /whep.
type Handler struct {
	cfg Config
	log *slog.Logger
	api *peer.API

	mu       sync.Mutex
	sessions map[string]*session
	perAddr  map[string]int
	relays   map[string]*relay // the WHEP relay of each stream (play.go)
}

// New builds the handlers.
func New(cfg Config) (*Handler, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxSessionsPerAddr == 0 {
		cfg.MaxSessionsPerAddr = DefaultMaxSessionsPerAddr
	}
	if cfg.RelayCapacity == 0 {
		cfg.RelayCapacity = DefaultRelayCapacity
	}
	cfg.RelayCapacity = max(cfg.RelayCapacity, 0)
	if cfg.ClientKey == nil {
		cfg.ClientKey = func(r *http.Request) string { return r.RemoteAddr }
	}
	pc := cfg.Peer
	pc.Logger = cfg.Logger
	api, err := peer.NewAPI(pc)
	if err != nil {
		return nil, err
	}
	return &Handler{
		cfg: cfg, log: cfg.Logger, api: api,
		sessions: make(map[string]*session),
		perAddr:  make(map[string]int),
		relays:   make(map[string]*relay),
	}, nil
}

// Routes registers the endpoints: POST creates a session, PATCH trickles
// or restarts ICE, DELETE ends it, OPTIONS answers CORS preflights.
func (h *Handler) Routes(r gin.IRoutes) {
	for _, kind := range []string{"whip", "whep"} {
		base := "/" + kind + "/:stream"
		r.OPTIONS(base, h.options)
		r.OPTIONS(base+"/:session", h.options)
		r.PATCH(base+"/:session", h.patch)
		r.DELETE(base+"/:session", h.delete)
	}
	r.POST("/whip/:stream", h.publish)
	r.POST("/whep/:stream", h.play)
}

// cors lets browser publishers and players on any site use the endpoints:
// credentials are bearer tokens, never cookies, so "*" exposes nothing.
func cors(c *gin.Context) {
	c.Header("Access-Control-Allow-Origin", "*")
	c.Header("Access-Control-Expose-Headers", "Location, ETag, Link, Accept-Post, Accept-Patch")
}

// options answers a CORS preflight, and tells WHIP clients what POST and
// PATCH take.
func (h *Handler) options(c *gin.Context) {
	cors(c)
	c.Header("Access-Control-Allow-Methods", "POST, PATCH, DELETE, OPTIONS")
	c.Header("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
	c.Header("Access-Control-Max-Age", "86400")
	if c.Param("session") == "" {
		c.Header("Accept-Post", mimeSDP)
	} else {
		c.Header("Accept-Patch", mimeSDPFrag)
	}
	c.Status(http.StatusNoContent)
}

// writeError answers err with its status and its text.
func (h *Handler) writeError(c *gin.Context, err error) {
	status := statusOf(err)
	cors(c)
	switch status {
	case http.StatusUnsupportedMediaType:
		if c.Request.Method == http.MethodPatch {
			c.Header("Accept-Patch", mimeSDPFrag)
		} else {
			c.Header("Accept-Post", mimeSDP)
		}
	case http.StatusUnauthorized:
		c.Header("WWW-Authenticate", `Bearer realm="canopy"`)
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		c.Header("Retry-After", "5")
	case http.StatusInternalServerError:
		h.log.Warn("whip/whep request failed", "method", c.Request.Method, "path", c.Request.URL.Path, "err", err)
	}
	c.AbortWithStatusJSON(status, gin.H{"error": err.Error()})
}

// readBody checks the content type and reads at most MaxBody bytes.
func (h *Handler) readBody(c *gin.Context, want string) (string, error) {
	ct := c.GetHeader("Content-Type")
	if mt, _, _ := strings.Cut(ct, ";"); !strings.EqualFold(strings.TrimSpace(mt), want) {
		return "", fmt.Errorf("%w %q: want %s", errContentType, ct, want)
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, h.cfg.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", fmt.Errorf("%w: over %d bytes", errTooLarge, h.cfg.MaxBody)
		}
		return "", fmt.Errorf("%w: reading the body: %v", errBadSDP, err)
	}
	return string(body), nil
}

// arrive charges a POST to the client address's rate of new sessions.
func (h *Handler) arrive(r *http.Request) error {
	if h.cfg.Arrive == nil {
		return nil
	}
	if err := h.cfg.Arrive(r); err != nil {
		return fmt.Errorf("%w: %v", errArrivalRate, err)
	}
	return nil
}

// streamParam is the request's stream, if it is a valid id.
func streamParam(c *gin.Context) (string, error) {
	s := c.Param("stream")
	if !protocol.ValidID(s) {
		return "", fmt.Errorf("%w %q", errBadStream, s)
	}
	return s, nil
}

// linkHeaders announces the ICE servers (RFC 9725 section 4.6).
func linkHeaders(c *gin.Context, servers []protocol.ICEServer) {
	for _, s := range servers {
		for _, u := range s.URLs {
			v := "<" + u + `>; rel="ice-server"`
			if s.Username != "" {
				v += fmt.Sprintf(`; username=%q; credential=%q; credential-type="password"`, s.Username, s.Credential)
			}
			c.Writer.Header().Add("Link", v)
		}
	}
}

// readOffer is the common start of a WHIP or WHEP POST, in the order its
// errors are answered: the stream's name, the address's join budget, the
// body, an offer that sends (WHIP) or receives (WHEP).
func (h *Handler) readOffer(c *gin.Context, send bool) (stream, offer string, media []offered, err error) {
	if stream, err = streamParam(c); err != nil {
		return "", "", nil, err
	}
	if err = h.arrive(c.Request); err != nil {
		return "", "", nil, err
	}
	if offer, err = h.readBody(c, mimeSDP); err != nil {
		return "", "", nil, err
	}
	if _, media, err = parseOffer(offer, send); err != nil {
		return "", "", nil, err
	}
	return stream, offer, media, nil
}
