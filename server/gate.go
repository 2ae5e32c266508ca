package main

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"canopy/mesh/protocol"
)

// The gate is the one decision every entry point asks before it lets a
// caller touch a stream: the JSON API, the pages, a /ws hello and the
// WHIP/WHEP endpoints. It weighs the same three facts everywhere: the
// credential (a token from Authorization: Bearer, ?token= or the hello),
// the page the request comes from (its Origin) and the stream's policy
// (private or not; auth on or not). Roles and capacity are the
// authenticator's (auth.go); the gate adds privacy and origins around it.
//
// Private streams are invisible to callers without a grant for them: every
// entry point answers exactly as for a stream that does not exist (HTTP 404
// with the same body, the same not_found error on /ws), so their names
// cannot be probed. A caller with a valid token that does not cover the
// action gets 403; no or an invalid token where one is needed, 401.

// Action is what an entry point asks the gate to let a caller do.
type Action string

// Actions.
const (
	// ActionView is watching a stream, or reading its tree and figures.
	ActionView Action = "view"
	// ActionRelay is feeding other peers of a stream.
	ActionRelay Action = "relay"
	// ActionPublish is being a stream's source.
	ActionPublish Action = "publish"
)

// Gate refusals, beyond the authenticator's errUnauthorized and errBadToken.
var (
	// ErrHidden means the stream is private and the caller holds no grant
	// for it. It reads like errNoStream on purpose and is answered as 404.
	ErrHidden = errors.New("stream not found")
	// ErrOrigin means the request comes from a page on another site that
	// may not do this: publish, relay, watch a private stream (those need
	// -allow-origin), or embed the player at all (-embed-origins). 403.
	ErrOrigin = errors.New("not allowed from this site")
	// errForbidden marks a refusal of a caller whose token is valid but does
	// not grant what it asked for (403 rather than 401).
	errForbidden = errors.New("forbidden")
)

// originClass is what the gate makes of a request's Origin header.
type originClass int

const (
	// originOwn: no Origin (not a browser: tokens are its only authority),
	// or this server's own pages.
	originOwn originClass = iota
	// originListed: a site in -allow-origin, trusted like the server's own pages.
	originListed
	// originEmbedder: another site where the player may be embedded (any
	// site, unless -embed-origins lists them). It may watch public streams,
	// as a leaf of the tree: it never relays.
	originEmbedder
	// originRefused: another site not in -embed-origins.
	originRefused
)

// caller is who knocks: the credential it presented (nil: none) and the
// page it comes from.
type caller struct {
	grant  *grant
	origin originClass
}

// gate holds the policy; it has no mutable state.
type gate struct {
	auth    *authenticator
	allowed []string // Config.AllowedOrigins; "*" allows any
	embed   []string // Config.EmbedOrigins; empty allows any
}

func newGate(auth *authenticator, cfg Config) *gate {
	return &gate{auth: auth, allowed: cfg.AllowedOrigins, embed: cfg.EmbedOrigins}
}

func originIn(list []string, origin string) bool {
	for _, o := range list {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// classify places a request's Origin. The server's own origin is the
// request's Host, as the browser sent it.
func (g *gate) classify(r *http.Request) originClass {
	origin := r.Header.Get("Origin")
	switch {
	case origin == "" || origin == "http://"+r.Host || origin == "https://"+r.Host:
		return originOwn
	case originIn(g.allowed, origin):
		return originListed
	case len(g.embed) == 0 || originIn(g.embed, origin):
		return originEmbedder
	}
	return originRefused
}

// caller reads a request's credential and origin. A token that is present
// and invalid is errBadToken, whatever it was presented for.
func (g *gate) caller(r *http.Request) (caller, error) {
	c := caller{origin: g.classify(r)}
	if tok, ok := requestToken(r); ok {
		gr, err := g.auth.verify(tok)
		if err != nil {
			return c, err
		}
		c.grant = gr
	}
	return c, nil
}

// check is the decision: may c join as hello says? It returns the capacity
// c may claim and the grant to hold it to for the rest of its session (for
// a caller from another site, one that caps its capacity at 0). Every entry
// point ends here: /ws with the peer's own hello, the others with one made
// from their Action (helloFor).
func (g *gate) check(c caller, hello *protocol.Message) (int, *grant, error) {
	stream := hello.Stream
	private := g.auth.private[stream]
	if private && !c.grant.covers(stream) {
		return 0, nil, ErrHidden
	}
	gr := c.grant
	switch c.origin {
	case originRefused:
		return 0, nil, fmt.Errorf("%w: this site may not embed the player (-embed-origins)", ErrOrigin)
	case originEmbedder:
		if private {
			return 0, nil, fmt.Errorf("%w: a private stream is watched from the server's own pages or an -allow-origin site", ErrOrigin)
		}
		if hello.Role != protocol.RoleViewer {
			return 0, nil, fmt.Errorf("%w: %s from another site needs -allow-origin", ErrOrigin, hello.Role)
		}
		gr = leafGrant(stream)
	}
	capacity, err := g.auth.authorize(hello, gr)
	if err != nil {
		if c.grant != nil {
			err = fmt.Errorf("%w: %w", errForbidden, err)
		}
		return 0, nil, err
	}
	return capacity, gr, nil
}

// visible reports whether a listing shows stream to c: if c may view it
// with its credential, or without one (a token for another stream does not
// hide the public ones).
func (g *gate) visible(c caller, stream string) bool {
	hello := helloFor(stream, ActionView)
	if _, _, err := g.check(c, hello); err == nil {
		return true
	}
	_, _, err := g.check(caller{origin: c.origin}, hello)
	return err == nil
}

// leafGrant is what a viewer from another site holds, whatever token it
// presented: the one stream, watching, and no children. A page of any site
// can open the WebSocket, so nothing it claims may give it a place in the
// tree that others depend on.
func leafGrant(stream string) *grant {
	return &grant{stream: stream, maxChildren: 0}
}

// helloFor is the hello an HTTP entry point's action stands for.
func helloFor(stream string, act Action) *protocol.Message {
	role := protocol.RoleViewer
	switch act {
	case ActionPublish:
		role = protocol.RoleSource
	case ActionRelay:
		role = protocol.RoleRelay
	}
	return &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role, Kind: protocol.KindBrowser, Stream: stream}
}

// Allow is the gate for an HTTP entry point (the API, the pages, WHIP and
// WHEP): may the caller of r do act to stream? nil means yes; otherwise
// StatusOf(err) is the status to answer (a 404 for a private stream reads
// exactly like a 404 for a missing one: answer it so).
func (s *Server) Allow(r *http.Request, stream string, act Action) error {
	c, err := s.gate.caller(r)
	if err != nil {
		return err
	}
	_, _, err = s.gate.check(c, helloFor(stream, act))
	return err
}

// StatusOf is the HTTP status for a gate refusal.
func StatusOf(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrHidden):
		return http.StatusNotFound
	case errors.Is(err, ErrOrigin), errors.Is(err, errForbidden):
		return http.StatusForbidden
	case errors.Is(err, errUnauthorized), errors.Is(err, errBadToken):
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

// allowed runs the gate for a Gin handler and, on refusal, answers it: 404
// with the body of any unknown stream, or the refusal's status and reason.
func (s *Server) allowed(c *gin.Context, stream string, act Action) bool {
	err := s.Allow(c.Request, stream, act)
	if err == nil {
		return true
	}
	s.answerRefusal(c, err)
	return false
}

func (s *Server) answerRefusal(c *gin.Context, err error) {
	status := StatusOf(err)
	switch status {
	case http.StatusNotFound:
		writeError(c, status, errNotFound)
		return
	case http.StatusUnauthorized:
		c.Header("WWW-Authenticate", `Bearer realm="canopy"`)
		if errors.Is(err, errBadToken) {
			c.Header("WWW-Authenticate", `Bearer realm="canopy", error="invalid_token"`)
		}
	}
	writeError(c, status, err)
}

// streamPage serves a page about one stream (watch, embed, dashboard)
// through the gate. The page holds nothing of the stream (it asks the API
// and /ws, which the gate guards), so a private stream without a grant gets
// what a missing stream gets, the page, which then finds nothing; a bad
// token or a refused origin is refused here.
func (s *Server) streamPage(param, name string) gin.HandlerFunc {
	serve := s.page(name)
	return func(c *gin.Context) {
		if err := s.Allow(c.Request, c.Param(param), ActionView); err != nil && !errors.Is(err, ErrHidden) {
			s.answerRefusal(c, err)
			return
		}
		serve(c)
	}
}

// refused records a hello turned down before its coordinator saw it (by
// the gate: outcome refused), on the stream's own figures if it exists.
func (h *hub) refused(stream string, role protocol.Role, outcome string) {
	h.mu.Lock()
	c := h.streams[stream]
	if c == nil {
		h.ended.Joins[joinKey{role, outcome}]++
	}
	h.mu.Unlock()
	if c != nil {
		c.obs.refused(role, outcome)
	}
}
