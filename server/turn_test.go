package main

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"canopy/mesh/protocol"
)

var turnSecret = []byte("turn-secret-for-tests")

// startLoopbackTURN runs the embedded TURN server on an ephemeral loopback
// port with the default permission policy.
func startLoopbackTURN(t *testing.T) *TURNServer {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts, err := StartTURN(TURNConfig{PacketConn: conn, RelayIP: net.IPv4(127, 0, 0, 1), Secret: turnSecret, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	return ts
}

// turnClient allocates on ts with the given credentials.
func turnClient(t *testing.T, ts *TURNServer, user, pass string) (*turn.Client, net.PacketConn, error) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: ts.Addr().String(), STUNServerAddr: ts.Addr().String(),
		Conn: conn, Username: user, Password: pass, Realm: turnRealm,
		RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if relay != nil {
		t.Cleanup(func() { relay.Close() })
	}
	return c, relay, err
}

func turnCode(err error) int {
	var te stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	var tp *stun.TurnError
	if errors.As(err, &tp) {
		return int(tp.ErrorCodeAttr.Code)
	}
	return 0
}

func restCredential(expiry time.Time, peer string) (string, string) {
	user := strconv.FormatInt(expiry.Unix(), 10) + ":" + peer
	return user, turnPassword(turnSecret, user)
}

func TestTURNCredentials(t *testing.T) {
	lightTest(t)
	ts := startLoopbackTURN(t)
	for _, c := range []struct {
		name   string
		expiry time.Time
		pass   string // "" means the right one
		want   int
	}{
		{"expired", time.Now().Add(-time.Minute), "", 401},
		{"beyond the bounded TTL", time.Now().Add(MaxTURNTTL + time.Hour), "", 401},
		{"wrong password", time.Now().Add(time.Hour), "AAAA", 401},
		{"valid", time.Now().Add(time.Hour), "", 0},
	} {
		user, pass := restCredential(c.expiry, "p0123")
		if c.pass != "" {
			pass = c.pass
		}
		_, _, err := turnClient(t, ts, user, pass)
		if got := turnCode(err); got != c.want || (c.want == 0 && err != nil) {
			t.Errorf("%s: %v (code %d), want code %d", c.name, err, got, c.want)
		}
	}
}

func TestTURNPermissionDenied(t *testing.T) {
	lightTest(t)
	ts := startLoopbackTURN(t)
	user, pass := restCredential(time.Now().Add(time.Hour), "p0123")
	_, relay, err := turnClient(t, ts, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	// ::ffff:a.b.c.d goes on the wire as an IPv4 peer address.
	for _, peer := range []string{"127.0.0.1", "10.1.2.3", "192.168.1.1", "172.16.0.1", "169.254.1.1", "0.1.2.3", "::ffff:127.0.0.1"} {
		_, err := relay.WriteTo([]byte("x"), &net.UDPAddr{IP: net.ParseIP(peer), Port: 9})
		if code := turnCode(err); code != 403 {
			t.Errorf("permission to %s: %v (code %d), want 403", peer, err, code)
		}
	}
	// An IPv6 peer on an IPv4 allocation is refused before the permission
	// handler (443, address family mismatch); TestPublicPeerPolicy covers
	// the handler's IPv6 rules.
	for _, peer := range []string{"::1", "fe80::1"} {
		_, err := relay.WriteTo([]byte("x"), &net.UDPAddr{IP: net.ParseIP(peer), Port: 9})
		if code := turnCode(err); code != 403 && code != 443 {
			t.Errorf("permission to %s: %v (code %d), want a refusal", peer, err, code)
		}
	}
}

// Each peer's welcome carries its own TURN credential, valid for the
// embedded server.
func TestWelcomeCarriesTURNCredential(t *testing.T) {
	lightTest(t)
	ts := startLoopbackTURN(t)
	_, url := startServerWith(t, Config{
		ICEServers: []protocol.ICEServer{{URLs: []string{"stun:stun.example:3478"}}},
		TURN:       &TURNCredentials{Port: ts.Addr().(*net.UDPAddr).Port, Secret: turnSecret, TTL: time.Hour},
	})
	p := dialLive(t, url, nil)
	p.send(hello(protocol.RoleSource, protocol.KindGo, "t", 1, ""))
	w := p.next(protocol.TypeWelcome)
	if len(w.ICEServers) != 2 {
		t.Fatalf("iceServers %+v, want STUN and TURN", w.ICEServers)
	}
	srv := w.ICEServers[1]
	exp, peer, _ := strings.Cut(srv.Username, ":")
	if peer != w.ID {
		t.Errorf("username %q does not name the peer %s", srv.Username, w.ID)
	}
	if e, err := strconv.ParseInt(exp, 10, 64); err != nil || time.Until(time.Unix(e, 0)) > time.Hour+time.Minute || time.Until(time.Unix(e, 0)) < 50*time.Minute {
		t.Errorf("username %q: expiry not about an hour ahead", srv.Username)
	}
	wantURL := "turn:127.0.0.1:" + strconv.Itoa(ts.Addr().(*net.UDPAddr).Port) + "?transport=udp"
	if len(srv.URLs) != 1 || srv.URLs[0] != wantURL {
		t.Errorf("urls %v, want [%s]", srv.URLs, wantURL)
	}
	if _, _, err := turnClient(t, ts, srv.Username, srv.Credential); err != nil {
		t.Errorf("allocating with the welcome's credential: %v", err)
	}
}
