package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"
)

// pageCSP is the Content-Security-Policy of Canopy's pages, before their
// frame-ancestors: everything they run, style and fetch comes from this
// origin (connect-src 'self' covers the same-origin ws:/wss: URL of /ws),
// so an injected script or style has nowhere to come from and nowhere to
// send what it reads. The pages keep no inline script or style for this:
// the player's shadow-DOM style is a constructed stylesheet, which CSP does
// not govern.
const pageCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'"

// securityHeaders is middleware for every response: no content sniffing,
// so a JSON error or an asset is never run as a script or page.
func securityHeaders(c *gin.Context) {
	c.Header("X-Content-Type-Options", "nosniff")
	c.Next()
}

// pageHeaders sets the headers of one of Canopy's HTML pages. The watch
// page, the stream list and the dashboard may not be framed at all
// (clickjacking: a hostile page could overlay the relay switch); the
// iframe player may be framed where -embed-origins says (any site when it
// is empty), and a private stream's player, as everything else about a
// private stream, only by the server's own pages and -allow-origin sites.
// Tokens may ride in these pages' URLs (?token=), so no Referer leaves the
// origin.
func (s *Server) pageHeaders(c *gin.Context, name string) {
	h := c.Writer.Header()
	h.Set("Referrer-Policy", "same-origin")
	if name != "embed.html" {
		h.Set("Content-Security-Policy", pageCSP+"; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		return
	}
	stream := c.Param("stream")
	var ancestors []string // nil: any site
	if s.cfg.EmbedOrigins != nil {
		ancestors = append(append([]string{}, s.cfg.EmbedOrigins...), s.cfg.AllowedOrigins...)
	}
	if s.gate.auth.private[stream] && s.Allow(c.Request, stream, ActionView) == nil {
		// A private stream the caller may watch; for callers that may not,
		// the page reads like a missing public stream's and plays nothing.
		ancestors = append([]string{}, s.cfg.AllowedOrigins...)
	}
	if fa := frameAncestors(ancestors); fa != "" {
		h.Set("Content-Security-Policy", pageCSP+"; frame-ancestors "+fa)
		return
	}
	h.Set("Content-Security-Policy", pageCSP)
}

// frameAncestors is the frame-ancestors source list for origins: "" (no
// restriction) for nil, "*" when they include it, else 'self' and each
// origin. Entries that are not plain origins are left out, so a Config
// built in code cannot smuggle directives into the header.
func frameAncestors(origins []string) string {
	if origins == nil {
		return ""
	}
	out := []string{"'self'"}
	for _, o := range origins {
		if o == "*" {
			return "*"
		}
		if _, err := parseOrigin(o); err == nil {
			out = append(out, o)
		}
	}
	return strings.Join(out, " ")
}

// errBadOrigin means a configured origin is not scheme://host[:port].
var errBadOrigin = errors.New("not an origin (want scheme://host[:port], e.g. https://site.example)")

// parseOrigin checks that o is an origin as browsers send it in the Origin
// header: http or https, a host, an optional port, nothing else.
func parseOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" ||
		strings.ContainsAny(o, " ;,'\"") {
		return "", fmt.Errorf("%q: %w", o, errBadOrigin)
	}
	return u.Scheme + "://" + u.Host, nil
}

// parseOrigins reads a comma-separated flag of origins; "*" is kept when
// star allows it.
func parseOrigins(flagName, list string, star bool) ([]string, error) {
	var out []string
	for _, o := range strings.Split(list, ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		if o == "*" && star {
			out = append(out, o)
			continue
		}
		clean, err := parseOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("-%s: %w", flagName, err)
		}
		out = append(out, clean)
	}
	return out, nil
}
