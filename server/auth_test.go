package main

import (
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

var testSecret = []byte("test-secret-0123456789abcdef0123")

func signHS256(t testing.TB, c Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(stream string, publish bool, exp time.Duration) Claims {
	return Claims{Stream: stream, Publish: publish, RegisteredClaims: jwt.RegisteredClaims{
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(exp)),
	}}
}

func authConfig() AuthConfig {
	return AuthConfig{
		JWTSecret:      testSecret,
		StreamKeys:     map[string]string{"keyed": "sk_live_0123456789"},
		PrivateStreams: []string{"private"},
	}
}

// badTokens are presented on the upgrade request; every one must get 401.
func badTokens(t *testing.T) map[string]string {
	t.Helper()
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims("live", true, time.Hour)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims("live", true, time.Hour)).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	nbf := claims("live", true, time.Hour)
	nbf.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour))
	noExp := claims("live", true, 0)
	noExp.ExpiresAt = nil
	wrongKey, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims("live", true, time.Hour)).SignedString([]byte("another secret"))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"alg none":          none,
		"RS256":             rs,
		"expired":           signHS256(t, claims("live", true, -time.Minute)),
		"nbf in the future": signHS256(t, nbf),
		"no exp":            signHS256(t, noExp),
		"wrong secret":      wrongKey,
		"100 000 dots":      strings.Repeat(".", 100_000),
		"garbage":           "not-a-token",
	}
}

func TestAuthBadTokensOnUpgradeGet401Fast(t *testing.T) {
	_, url := startServerWith(t, Config{Auth: authConfig()})
	for name, tok := range badTokens(t) {
		for _, how := range []string{"header", "query"} {
			if how == "query" && len(tok) > 1000 {
				continue // the header case covers it; a 100 kB URL is refused by size anyway
			}
			h := http.Header{}
			u := wsURLOf(url)
			if how == "header" {
				h.Set("Authorization", "Bearer "+tok)
			} else {
				u += "?token=" + tok
			}
			start := time.Now()
			conn, resp, err := websocket.DefaultDialer.Dial(u, h)
			elapsed := time.Since(start)
			if conn != nil {
				conn.Close()
			}
			want := http.StatusUnauthorized
			if how == "header" && len(tok) > DefaultHTTPMaxHeaderBytes {
				want = http.StatusRequestHeaderFieldsTooLarge // refused by size before any token check
			}
			if resp == nil || resp.StatusCode != want {
				t.Errorf("%s (%s): %v, want %d", name, how, err, want)
				continue
			}
			if elapsed > time.Second {
				t.Errorf("%s (%s): %d took %v", name, how, want, elapsed)
			}
		}
	}
}

func TestAuthBadTokenVerifyIsBounded(t *testing.T) {
	a := newAuthenticator(authConfig())
	dots := strings.Repeat(".", 100_000)
	if n := testing.AllocsPerRun(100, func() { _, _ = a.verify(dots) }); n > 0 {
		t.Errorf("rejecting 100 000 dots allocates %.0f times, want 0", n)
	}
	for name, tok := range badTokens(t) {
		n := testing.AllocsPerRun(50, func() { _, _ = a.verify(tok) })
		start := time.Now()
		for range 100 {
			_, _ = a.verify(tok)
		}
		per := time.Since(start) / 100
		t.Logf("%-18s %4.0f allocs, %v per rejection", name, n, per)
		if n > 200 {
			t.Errorf("%s: %.0f allocations to reject, want a small bound", name, n)
		}
		if per > 10*time.Millisecond {
			t.Errorf("%s: %v to reject", name, per)
		}
	}
}

func TestAuthHello(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{Auth: authConfig(), Policy: tree.Config{SourceCapacity: 4}})
	expectUnauthorized := func(what, msg string) {
		t.Helper()
		p := dialLive(t, url, nil)
		p.send(msg)
		if m := p.next(protocol.TypeError); m.Code != protocol.CodeUnauthorized {
			t.Errorf("%s: code %q (%s), want %q", what, m.Code, m.Reason, protocol.CodeUnauthorized)
		}
		p.waitClosed(what)
	}
	// A private stream is refused exactly as a missing one, so its name
	// cannot be probed.
	expectHidden := func(what, msg string) {
		t.Helper()
		p := dialLive(t, url, nil)
		p.send(msg)
		if m := p.next(protocol.TypeError); m.Code != protocol.CodeNotFound || m.Reason != errNoStream.Error() {
			t.Errorf("%s: code %q (%s), want %q (%s)", what, m.Code, m.Reason, protocol.CodeNotFound, errNoStream)
		}
		p.waitClosed(what)
	}
	expectWelcome := func(what, msg string, header http.Header) *livePeer {
		t.Helper()
		p := dialLive(t, url, header)
		p.send(msg)
		p.next(protocol.TypeWelcome)
		return p
	}

	expectUnauthorized("publish without a token", hello(protocol.RoleSource, protocol.KindGo, "live", 4, ""))
	expectUnauthorized("publish with a token for another stream",
		hello(protocol.RoleSource, protocol.KindGo, "live", 4, signHS256(t, claims("other", true, time.Hour))))
	expectUnauthorized("publish with a viewer token",
		hello(protocol.RoleSource, protocol.KindGo, "live", 4, signHS256(t, claims("live", false, time.Hour))))
	expectUnauthorized("publish with an expired token",
		hello(protocol.RoleSource, protocol.KindGo, "live", 4, signHS256(t, claims("live", true, -time.Minute))))
	expectUnauthorized("publish with the wrong stream key", hello(protocol.RoleSource, protocol.KindGo, "live", 4, "sk_live_0123456780"))

	expectWelcome("publish with a JWT", hello(protocol.RoleSource, protocol.KindGo, "live", 4, signHS256(t, claims("live", true, time.Hour))), nil)
	expectWelcome("publish with the stream key", hello(protocol.RoleSource, protocol.KindGo, "keyed", 4, "sk_live_0123456789"), nil)
	h := http.Header{}
	h.Set("Authorization", "Bearer "+signHS256(t, claims("private", true, time.Hour)))
	expectWelcome("publish with a bearer header", hello(protocol.RoleSource, protocol.KindGo, "private", 4, ""), h)

	// Viewers: public streams are open, private ones need a token.
	expectWelcome("watch a public stream", hello(protocol.RoleViewer, protocol.KindBrowser, "live", 0, ""), nil)
	expectHidden("watch a private stream", hello(protocol.RoleViewer, protocol.KindBrowser, "private", 0, ""))
	expectHidden("watch a private stream with another stream's token",
		hello(protocol.RoleViewer, protocol.KindBrowser, "private", 0, signHS256(t, claims("live", false, time.Hour))))
	expectWelcome("watch a private stream with its token",
		hello(protocol.RoleViewer, protocol.KindBrowser, "private", 0, signHS256(t, claims("private", false, time.Hour))), nil)

	// Relays need a relay grant; maxChildren clamps the claimed capacity.
	expectUnauthorized("relay without a grant", hello(protocol.RoleRelay, protocol.KindGo, "live", 8, ""))
	rc := claims("live", false, time.Hour)
	rc.Relay, rc.MaxChildren = true, new(3)
	p := expectWelcome("relay with a grant", hello(protocol.RoleRelay, protocol.KindGo, "live", 1000, signHS256(t, rc)), nil)
	_ = p
	waitFor(t, 5*time.Second, "relay in the tree", func() bool {
		for _, n := range s.hub.get("live").snapshot() {
			if n.Role == protocol.RoleRelay {
				if n.Capacity != 3 {
					t.Fatalf("relay claiming 1000 with maxChildren 3: capacity %d", n.Capacity)
				}
				return true
			}
		}
		return false
	})
}

// Without keys or a secret (dev mode) anyone may publish: what `go run
// ./server` and the other tests rely on.
func TestAuthDevModeOpen(t *testing.T) {
	lightTest(t)
	_, url := startServerWith(t, Config{})
	join(t, url, protocol.RoleSource, protocol.KindGo, "dev", 4)
	join(t, url, protocol.RoleRelay, protocol.KindGo, "dev", 4)
	join(t, url, protocol.RoleViewer, protocol.KindBrowser, "dev", 0)
}
