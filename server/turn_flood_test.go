package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// startTURNOn runs the embedded TURN server on an ephemeral port of ip
// (a loopback address) with the relay advertising ip, as main runs it
// apart from the port.
func startTURNOn(t *testing.T, ip string, cfg TURNConfig) *TURNServer {
	t.Helper()
	network := "udp4"
	if strings.Contains(ip, ":") {
		network = "udp6"
	}
	conn, err := net.ListenPacket(network, net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.PacketConn, cfg.Secret, cfg.Logger = conn, turnSecret, testLogger()
	if cfg.RelayIP == nil {
		cfg.RelayIP = net.ParseIP(ip)
	}
	ts, err := StartTURN(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	return ts
}

// turnPeer is one TURN client socket and, if it got one, its allocation.
type turnPeer struct {
	conn  net.PacketConn
	c     *turn.Client
	relay net.PacketConn
}

// allocateFrom allocates on ts from a fresh socket on localIP with peer's
// credential. The caller leaves or closes the peer.
func allocateFrom(t *testing.T, ts *TURNServer, localIP, peer string) (*turnPeer, error) {
	t.Helper()
	network := "udp4"
	if strings.Contains(localIP, ":") {
		network = "udp6"
	}
	conn, err := net.ListenPacket(network, net.JoinHostPort(localIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	user, pass := restCredential(time.Now().Add(time.Hour), peer)
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: ts.Addr().String(), STUNServerAddr: ts.Addr().String(),
		Conn: conn, Username: user, Password: pass, Realm: turnRealm, RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	p := &turnPeer{conn: conn, c: c}
	p.relay, err = c.Allocate()
	if err != nil {
		p.leave()
	}
	return p, err
}

// leave drops the socket without deallocating, as a client that vanishes.
func (p *turnPeer) leave() {
	_ = p.conn.Close()
	p.c.Close()
	if p.relay != nil {
		_ = p.relay.Close() // its Refresh(0) cannot leave the closed socket
	}
}

// floodFrom opens n allocations from localIP, with the credentials peers
// hands out in turn, and returns those granted and the refusal codes.
func floodFrom(t *testing.T, ts *TURNServer, localIP string, n int, peers ...string) ([]*turnPeer, map[int]int) {
	t.Helper()
	var held []*turnPeer
	codes := map[int]int{}
	for i := range n {
		p, err := allocateFrom(t, ts, localIP, peers[i%len(peers)])
		if err != nil {
			codes[turnCode(err)]++
			continue
		}
		held = append(held, p)
	}
	t.Cleanup(func() {
		for _, p := range held {
			p.leave()
		}
	})
	return held, codes
}

// One viewer's credential floods the relay with allocations: it gets its
// quota and no more, another peer still allocates, the refusals show on
// /metrics, and once the attacker vanishes (no deallocation) its
// allocations are released for idleness and its credential works again.
func TestTURNAllocationFloodIsCapped(t *testing.T) {
	// The idle timeout is the product's knob, set short so the test does
	// not wait a minute for the release.
	ts := startTURNOn(t, "127.0.0.1", TURNConfig{IdleTimeout: 2 * time.Second})
	_, url := startServerWith(t, Config{Collectors: []prometheus.Collector{ts.Collector()}})

	start := time.Now()
	held, codes := floodFrom(t, ts, "127.0.0.1", 4*DefaultTURNUserQuota, "attacker")
	t.Logf("one credential: %d of %d allocations granted in %v, refusals by code %v",
		len(held), 4*DefaultTURNUserQuota, time.Since(start).Round(time.Millisecond), codes)
	if len(held) != DefaultTURNUserQuota {
		t.Errorf("one credential holds %d allocations, want its quota %d", len(held), DefaultTURNUserQuota)
	}
	if codes[486] != 3*DefaultTURNUserQuota {
		t.Errorf("refusals %v, want %d × 486 (Allocation Quota Reached)", codes, 3*DefaultTURNUserQuota)
	}

	honest, err := allocateFrom(t, ts, "127.0.0.2", "honest")
	if err != nil {
		t.Fatalf("another peer cannot allocate during the flood: %v", err)
	}
	defer honest.leave()
	fams := scrape(t, url)
	expectMetric(t, fams, 3*DefaultTURNUserQuota, "canopy_turn_refused_total", "reason", refusedUserQuota)
	expectMetric(t, fams, DefaultTURNUserQuota+1, "canopy_turn_allocations")

	for _, p := range held {
		p.leave()
	}
	honest.leave()
	waitFor(t, 30*time.Second, "the vanished allocations released", func() bool { return ts.Allocations() == 0 })
	t.Logf("all released %v after the attacker left; %v released for idleness",
		time.Since(start).Round(time.Millisecond), metric(scrape(t, url), "canopy_turn_idle_released_total"))
	again, err := allocateFrom(t, ts, "127.0.0.1", "attacker")
	if err != nil {
		t.Fatalf("after the flood the credential cannot allocate: %v", err)
	}
	again.leave()
}

// Many credentials from one address stop at the address's quota; many
// addresses stop at the relay's total cap, which stays below the file
// limit; a peer from elsewhere allocates once the flood is released.
func TestTURNAddressQuotaAndTotalCap(t *testing.T) {
	if lim, total := fileLimit(), DefaultTURNAllocations(); total >= lim/2 || total < minTURNAllocations {
		t.Errorf("derived cap %d for a file limit of %d, want a quarter of it", total, lim)
	}
	ts := startTURNOn(t, "127.0.0.1", TURNConfig{IdleTimeout: 2 * time.Second})
	creds := make([]string, 8)
	for i := range creds {
		creds[i] = fmt.Sprintf("sock%d", i)
	}
	held, codes := floodFrom(t, ts, "127.0.0.3", DefaultTURNAddrQuota+40, creds...)
	if len(held) != DefaultTURNAddrQuota || codes[486] != 40 {
		t.Errorf("one address with 8 credentials: %d granted, refusals %v; want %d and 40 × 486", len(held), codes, DefaultTURNAddrQuota)
	}

	capped := startTURNOn(t, "127.0.0.1", TURNConfig{MaxAllocations: 40, IdleTimeout: 2 * time.Second})
	total := 0
	for i, ip := range []string{"127.0.0.4", "127.0.0.5", "127.0.0.6"} {
		h, _ := floodFrom(t, capped, ip, 20, fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i))
		total += len(h)
		for _, p := range h {
			defer p.leave()
		}
	}
	if total != 40 || capped.Allocations() != 40 {
		t.Errorf("three addresses: %d granted, %d held, want the cap of 40", total, capped.Allocations())
	}
	if _, err := allocateFrom(t, capped, "127.0.0.7", "late"); turnCode(err) != 486 {
		t.Errorf("allocation at the cap: %v, want 486", err)
	}
	for _, p := range held {
		p.leave()
	}
	waitFor(t, 30*time.Second, "the flood released", func() bool { return ts.Allocations() == 0 })
	p, err := allocateFrom(t, ts, "127.0.0.3", "sock0")
	if err != nil {
		t.Fatalf("after the flood the address cannot allocate: %v", err)
	}
	p.leave()
}

// An allocation that relays keeps its place; one that relays nothing is
// released after the idle timeout, whatever lifetime it asked for. On the
// virtual internet of the relay test, so the relayed datagrams go to a
// public address.
func TestTURNIdleReleaseSparesActiveAllocations(t *testing.T) {
	vn := newRelayNet(t)
	conn, err := vn.turnNet.ListenPacket("udp4", net.JoinHostPort(vnetTURNIP, "3478"))
	if err != nil {
		t.Fatal(err)
	}
	const idle = 2 * time.Second
	ts, err := StartTURN(TURNConfig{PacketConn: conn, RelayIP: net.ParseIP(vnetTURNIP), RelayNet: vn.turnNet,
		Secret: turnSecret, Logger: testLogger(), IdleTimeout: idle})
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	client := func(peer string) net.PacketConn {
		c, err := vn.netA.ListenPacket("udp4", "192.168.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		user, pass := restCredential(time.Now().Add(time.Hour), peer)
		tc, err := turn.NewClient(&turn.ClientConfig{
			TURNServerAddr: net.JoinHostPort(vnetTURNIP, "3478"), STUNServerAddr: net.JoinHostPort(vnetTURNIP, "3478"),
			Conn: c, Net: vn.netA, Username: user, Password: pass, Realm: turnRealm, RTO: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tc.Close(); c.Close() })
		if err := tc.Listen(); err != nil {
			t.Fatal(err)
		}
		relay, err := tc.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { relay.Close() })
		return relay
	}
	active, _ := client("active"), client("idle")
	peer := &net.UDPAddr{IP: net.ParseIP(vnetNATB), Port: 9}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			_, _ = active.WriteTo([]byte("media"), peer)
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	waitFor(t, 30*time.Second, "the idle allocation released", func() bool { return ts.lim.released.Load() >= 1 })
	released := time.Now()
	for time.Since(released) < 3*idle {
		if n := ts.Allocations(); n != 1 {
			t.Fatalf("%d allocations %v after the idle one went, want the active one alone", n, time.Since(released))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
