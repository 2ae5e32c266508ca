package main

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"canopy/mesh/protocol"
)

// Authentication errors; all of them map to HTTP 401 before the upgrade and
// to protocol.CodeUnauthorized after it.
var (
	// errUnauthorized means a token is missing where one is needed, or does
	// not grant what the peer asked for.
	errUnauthorized = errors.New("unauthorized")
	// errBadToken means a token was presented and is not valid: malformed,
	// wrong algorithm, bad signature, expired or not yet valid.
	errBadToken = errors.New("invalid token")
)

// AuthConfig says who may publish, relay and watch. With neither StreamKeys
// nor JWTSecret set the server runs in dev mode: anyone may publish, relay
// and watch any stream (what `go run ./server` and the tests use).
type AuthConfig struct {
	// StreamKeys maps a stream to its publishing key: a source presenting
	// the key as its token may publish that stream, and relay or watch it.
	StreamKeys map[string]string
	// JWTSecret verifies HS256 tokens carrying Claims.
	JWTSecret []byte
	// PrivateStreams need a token naming the stream (a JWT or its key) even
	// to watch. Every other stream can be watched without one.
	PrivateStreams []string
	// Leeway tolerates clock skew on exp and nbf; 0 means none.
	Leeway time.Duration
}

// Claims are the grants of a Canopy JWT.
type Claims struct {
	// Stream the token is for; "*" means any stream.
	Stream string `json:"stream"`
	// Publish allows the source role.
	Publish bool `json:"publish,omitempty"`
	// Relay allows the relay role once auth is on.
	Relay bool `json:"relay,omitempty"`
	// MaxChildren, if present, caps the capacity the peer may claim.
	MaxChildren *int `json:"maxChildren,omitempty"`
	jwt.RegisteredClaims
}

// grant is what a verified credential allows.
type grant struct {
	stream      string // "*" for any
	publish     bool
	relay       bool
	maxChildren int // -1 for no cap from the token
}

func (g *grant) covers(stream string) bool {
	return g != nil && (g.stream == "*" || g.stream == stream)
}

// authenticator checks tokens. It has no mutable state.
type authenticator struct {
	cfg     AuthConfig
	private map[string]bool
	parser  *jwt.Parser
}

func newAuthenticator(cfg AuthConfig) *authenticator {
	a := &authenticator{cfg: cfg, private: make(map[string]bool)}
	for _, s := range cfg.PrivateStreams {
		a.private[s] = true
	}
	a.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
	)
	return a
}

// enabled reports whether publishing needs a credential (not dev mode).
func (a *authenticator) enabled() bool {
	return len(a.cfg.StreamKeys) > 0 || len(a.cfg.JWTSecret) > 0
}

// verify checks a presented token and returns what it grants. It rejects
// anything that cannot be a valid credential before parsing, so a hostile
// token costs a length check, not a decode: at most MaxTokenLength bytes and,
// for a JWT, exactly two dots.
func (a *authenticator) verify(token string) (*grant, error) {
	if token == "" || len(token) > protocol.MaxTokenLength {
		return nil, errBadToken
	}
	for stream, key := range a.cfg.StreamKeys {
		if len(key) == len(token) && subtle.ConstantTimeCompare([]byte(key), []byte(token)) == 1 {
			return &grant{stream: stream, publish: true, relay: true, maxChildren: -1}, nil
		}
	}
	if len(a.cfg.JWTSecret) == 0 || strings.Count(token, ".") != 2 {
		return nil, errBadToken
	}
	var c Claims
	_, err := a.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.cfg.JWTSecret, nil })
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadToken, err)
	}
	if c.Stream != "*" && !protocol.ValidID(c.Stream) {
		return nil, fmt.Errorf("%w: no stream grant", errBadToken)
	}
	g := &grant{stream: c.Stream, publish: c.Publish, relay: c.Relay, maxChildren: -1}
	if c.MaxChildren != nil {
		g.maxChildren = max(*c.MaxChildren, 0)
	}
	return g, nil
}

// authorize decides whether a hello may join: g is the credential verified
// at the upgrade or from the hello's token (nil when none). It returns the
// capacity the peer may claim.
func (a *authenticator) authorize(hello *protocol.Message, g *grant) (int, error) {
	if g != nil && !g.covers(hello.Stream) {
		return 0, fmt.Errorf("%w: the token is not for stream %q", errUnauthorized, hello.Stream)
	}
	capacity := hello.Capacity
	if g != nil && g.maxChildren >= 0 {
		capacity = min(capacity, g.maxChildren)
	}
	if !a.enabled() {
		if a.private[hello.Stream] && !g.covers(hello.Stream) {
			return 0, fmt.Errorf("%w: stream %q is private", errUnauthorized, hello.Stream)
		}
		return capacity, nil
	}
	switch hello.Role {
	case protocol.RoleSource:
		if !g.covers(hello.Stream) || !g.publish {
			return 0, fmt.Errorf("%w: publishing %q needs a publish token", errUnauthorized, hello.Stream)
		}
	case protocol.RoleRelay:
		if !g.covers(hello.Stream) || !g.relay {
			return 0, fmt.Errorf("%w: relaying %q needs a relay token", errUnauthorized, hello.Stream)
		}
	default:
		if a.private[hello.Stream] && !g.covers(hello.Stream) {
			return 0, fmt.Errorf("%w: stream %q is private", errUnauthorized, hello.Stream)
		}
		// A viewer's capacity obeys the relay grant too: a Go viewer feeds
		// children only with one (else "kind go" would be a relay without
		// a grant); a browser relays within the browser clamp (README
		// "Browsers help carry the stream"), earning it like everyone.
		if hello.Kind == protocol.KindGo && !(g.covers(hello.Stream) && g.relay) {
			capacity = 0
		}
	}
	return capacity, nil
}

// maxQueryLength bounds the /ws query string that is parsed for a token.
const maxQueryLength = 2 * protocol.MaxTokenLength

// requestToken is the token on the upgrade request, if any: an
// Authorization: Bearer header or a ?token= query parameter.
func requestToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return "", true // present but not a bearer token: invalid
		}
		return strings.TrimSpace(tok), true
	}
	if r.URL.RawQuery != "" {
		if len(r.URL.RawQuery) > maxQueryLength {
			return "", true // too long to hold a valid token: do not parse it
		}
		if tok := r.URL.Query().Get("token"); tok != "" {
			return tok, true
		}
	}
	return "", false
}
