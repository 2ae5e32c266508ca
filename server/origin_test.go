package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
)

func originHeader(origin string) http.Header {
	h := http.Header{}
	h.Set("Origin", origin)
	return h
}

// upgradeStatus opens /ws with an Origin and returns the HTTP status.
func upgradeStatus(t *testing.T, url, origin string) int {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(wsURLOf(url), originHeader(origin))
	if conn != nil {
		conn.Close()
	}
	if resp == nil {
		t.Fatalf("origin %q: %v", origin, err)
	}
	return resp.StatusCode
}

// refusedHello sends msg from a page of origin and expects the error that
// refuses it, then the close.
func refusedHello(t *testing.T, url, origin, msg, what string) *protocol.Message {
	t.Helper()
	p := dialLive(t, url, originHeader(origin))
	p.send(msg)
	m := p.next(protocol.TypeError)
	p.waitClosed(what)
	return m
}

// TestEmbedOriginViewsPublicStreamsAsLeaf: by default a page on any other
// site may open the WebSocket and watch a public stream (the embedded
// <canopy-player>), but never relay: its capacity is 0 whatever it claims,
// at hello and later. Publishing and relaying from that page are refused.
func TestEmbedOriginViewsPublicStreamsAsLeaf(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{})
	join(t, url, protocol.RoleSource, protocol.KindGo, "pub", 4)
	const partner = "https://partner.example"

	if got := upgradeStatus(t, url, partner); got != http.StatusSwitchingProtocols {
		t.Fatalf("a page of another site opening /ws: %d, want 101", got)
	}
	v := dialLive(t, url, originHeader(partner))
	v.send(hello(protocol.RoleViewer, protocol.KindBrowser, "pub", 3, ""))
	id := v.next(protocol.TypeWelcome).ID
	v.next(protocol.TypeParent)
	n, _ := nodeOf(s, "pub", id)
	if n.Capacity != 0 {
		t.Errorf("viewer from another site claiming 3 children: capacity %d, want 0", n.Capacity)
	}
	v.send(`{"type":"capacity","capacity":5}`)
	// One connection's messages are handled in order: once a second hello
	// is answered, the capacity message has been handled.
	v.send(hello(protocol.RoleViewer, protocol.KindBrowser, "pub", 3, ""))
	if m := v.next(protocol.TypeError); m.Code != protocol.CodeState {
		t.Fatalf("second hello: %s %q", m.Code, m.Reason)
	}
	own := dialLive(t, url, originHeader(url))
	own.send(hello(protocol.RoleViewer, protocol.KindBrowser, "pub", 2, ""))
	ownID := own.next(protocol.TypeWelcome).ID
	own.next(protocol.TypeParent)
	if n, _ := nodeOf(s, "pub", id); n.Capacity != 0 {
		t.Errorf("viewer from another site asking for 5 children later: capacity %d, want 0", n.Capacity)
	}
	if n, _ := nodeOf(s, "pub", ownID); n.Capacity != 2 {
		t.Errorf("viewer from the server's own page: capacity %d, want its claim 2", n.Capacity)
	}

	for _, c := range []struct{ what, msg string }{
		{"publish from another site", hello(protocol.RoleSource, protocol.KindBrowser, "theirs", 4, "")},
		{"relay from another site", hello(protocol.RoleRelay, protocol.KindGo, "pub", 4, "")},
	} {
		if m := refusedHello(t, url, partner, c.msg, c.what); m.Code != protocol.CodeUnauthorized || !strings.Contains(m.Reason, "-allow-origin") {
			t.Errorf("%s: %s %q, want unauthorized naming -allow-origin", c.what, m.Code, m.Reason)
		}
	}
	if s.hub.get("theirs") != nil {
		t.Error("a page of another site created a stream")
	}
}

// TestEmbedOriginListedIsTrusted: a site in -allow-origin is trusted like
// the server's own pages: it may publish and its viewers relay.
func TestEmbedOriginListedIsTrusted(t *testing.T) {
	lightTest(t)
	const partner = "https://studio.example"
	s, url := startServerWith(t, Config{AllowedOrigins: []string{partner}})
	src := dialLive(t, url, originHeader(partner))
	src.send(hello(protocol.RoleSource, protocol.KindBrowser, "studio", 4, ""))
	src.next(protocol.TypeWelcome)
	v := dialLive(t, url, originHeader(partner))
	v.send(hello(protocol.RoleViewer, protocol.KindBrowser, "studio", 2, ""))
	id := v.next(protocol.TypeWelcome).ID
	if n, _ := nodeOf(s, "studio", id); n.Capacity != 2 {
		t.Errorf("viewer from a listed site: capacity %d, want its claim 2", n.Capacity)
	}
}

// TestEmbedOriginsRestrict: with -embed-origins, only the listed sites (and
// -allow-origin ones) may open the WebSocket from a page; others get 403.
func TestEmbedOriginsRestrict(t *testing.T) {
	lightTest(t)
	_, url := startServerWith(t, Config{EmbedOrigins: []string{"https://ok.example"}, AllowedOrigins: []string{"https://studio.example"}})
	for origin, want := range map[string]int{
		"https://ok.example":     http.StatusSwitchingProtocols,
		"https://studio.example": http.StatusSwitchingProtocols,
		"https://evil.example":   http.StatusForbidden,
		"null":                   http.StatusForbidden,
		"":                       http.StatusSwitchingProtocols, // not a browser: tokens are its authority
	} {
		if got := upgradeStatus(t, url, origin); got != want {
			t.Errorf("origin %q: %d, want %d", origin, got, want)
		}
	}
}

// TestEmbedOriginPrivateStreamNeedsListing: a private stream is watched
// from another site's page only if that site is listed, even with a valid
// token (a token in a page of any site is not proof that the site may show
// it); without a token it reads as missing, as everywhere.
func TestEmbedOriginPrivateStreamNeedsListing(t *testing.T) {
	lightTest(t)
	_, url := startServerWith(t, Config{Auth: authConfig(), AllowedOrigins: []string{"https://studio.example"}})
	src := dialLive(t, url, nil)
	src.send(hello(protocol.RoleSource, protocol.KindGo, "private", 4, signHS256(t, claims("private", true, time.Hour))))
	src.next(protocol.TypeWelcome)
	tok := signHS256(t, claims("private", false, time.Hour))

	m := refusedHello(t, url, "https://partner.example", hello(protocol.RoleViewer, protocol.KindBrowser, "private", 0, tok), "private from another site")
	if m.Code != protocol.CodeUnauthorized || !strings.Contains(m.Reason, "private") {
		t.Errorf("private stream from an unlisted site with its token: %s %q", m.Code, m.Reason)
	}
	m = refusedHello(t, url, "https://partner.example", hello(protocol.RoleViewer, protocol.KindBrowser, "private", 0, ""), "private without a token")
	if m.Code != protocol.CodeNotFound {
		t.Errorf("private stream from another site without a token: %s %q, want not_found", m.Code, m.Reason)
	}
	v := dialLive(t, url, originHeader("https://studio.example"))
	v.send(hello(protocol.RoleViewer, protocol.KindBrowser, "private", 0, tok))
	v.next(protocol.TypeWelcome)
}

// headersOf fetches path and returns the response's headers.
func headersOf(t *testing.T, url string) (int, http.Header) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode, res.Header
}

// TestPageSecurityHeaders: Canopy's own pages may not be framed and carry
// a CSP that allows only this origin; the iframe player may be framed by
// any site by default, by the -embed-origins sites when set, and, for a
// private stream, only by the server itself and -allow-origin sites.
func TestPageSecurityHeaders(t *testing.T) {
	lightTest(t)
	for _, path := range []string{"/", "/watch/demo", "/stats/demo"} {
		_, url := startServerWith(t, Config{})
		status, h := headersOf(t, url+path)
		if status != http.StatusOK {
			t.Fatalf("%s: %d", path, status)
		}
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"script-src 'self'", "style-src 'self'", "connect-src 'self'", "object-src 'none'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %s", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") {
			t.Errorf("%s: CSP %q allows unsafe sources", path, csp)
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: X-Frame-Options %q, X-Content-Type-Options %q", path, h.Get("X-Frame-Options"), h.Get("X-Content-Type-Options"))
		}
	}
	if _, h := headersOf(t, mustServe(t, Config{})+"/api/streams"); h.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("the API answers without nosniff")
	}

	embedCSP := func(cfg Config, path string) string {
		t.Helper()
		status, h := headersOf(t, mustServe(t, cfg)+path)
		if status != http.StatusOK {
			t.Fatalf("%s: %d", path, status)
		}
		if xfo := h.Get("X-Frame-Options"); xfo != "" {
			t.Errorf("%s: X-Frame-Options %q forbids embedding", path, xfo)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("%s: headers %v", path, h)
		}
		return h.Get("Content-Security-Policy")
	}
	if csp := embedCSP(Config{}, "/embed/demo"); strings.Contains(csp, "frame-ancestors") {
		t.Errorf("/embed by default: CSP %q restricts framing", csp)
	}
	restricted := Config{EmbedOrigins: []string{"https://ok.example"}, AllowedOrigins: []string{"https://studio.example"}}
	if csp := embedCSP(restricted, "/embed/demo"); !strings.Contains(csp, "frame-ancestors 'self' https://ok.example https://studio.example") {
		t.Errorf("/embed with -embed-origins: CSP %q", csp)
	}
	priv := Config{Auth: authConfig(), AllowedOrigins: []string{"https://studio.example"}}
	tok := signHS256(t, claims("private", false, time.Hour))
	if csp := embedCSP(priv, "/embed/private?token="+tok); !strings.HasSuffix(csp, "frame-ancestors 'self' https://studio.example") {
		t.Errorf("/embed of a private stream: CSP %q", csp)
	}
	if hidden, missing := embedCSP(priv, "/embed/private"), embedCSP(priv, "/embed/nosuchstream"); hidden != missing {
		t.Errorf("/embed of a private stream without its token: CSP %q, a missing stream's %q", hidden, missing)
	}
}

func mustServe(t *testing.T, cfg Config) string {
	t.Helper()
	_, url := startServerWith(t, cfg)
	return url
}

// TestOriginFlagsAreOrigins: the origin flags take origins only, so none
// can smuggle a directive into the CSP header.
func TestOriginFlagsAreOrigins(t *testing.T) {
	lightTest(t)
	for _, bad := range []string{"https://a.example; script-src *", "partner.example", "javascript:alert(1)", "https://a.example/path", "https://'self'", "*"} {
		if _, err := parseOrigins("embed-origins", bad, false); err == nil {
			t.Errorf("-embed-origins %q accepted", bad)
		}
	}
	got, err := parseOrigins("allow-origin", "https://a.example, http://b.example:8080/ ,*", true)
	if err != nil || strings.Join(got, " ") != "https://a.example http://b.example:8080 *" {
		t.Errorf("parseOrigins: %v %v", got, err)
	}
}
