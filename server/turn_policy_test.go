package main

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/turn/v5"
)

// permissionCode asks ts, through p's allocation, for a permission to ip
// and returns the TURN error code (0: granted). A permission sends
// nothing to the peer.
func permissionCode(t *testing.T, p *turnPeer, ip string) int {
	t.Helper()
	err := p.c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(ip), Port: 9})
	if err != nil && turnCode(err) == 0 {
		t.Fatalf("permission to %s: %v", ip, err)
	}
	return turnCode(err)
}

// Reserved, benchmarking and documentation ranges are refused as peers,
// with the default policy, as main runs it.
func TestTURNDeniesReservedRanges(t *testing.T) {
	lightTest(t)
	ts := startTURNOn(t, "127.0.0.1", TURNConfig{})
	p, err := allocateFrom(t, ts, "127.0.0.1", "p1")
	if err != nil {
		t.Fatal(err)
	}
	defer p.leave()
	for _, ip := range []string{
		"198.18.0.1", "198.19.255.254", // benchmarking
		"240.0.0.1", "255.255.255.254", "255.255.255.255", // reserved, broadcast
		"192.0.0.8", "192.0.2.1", "198.51.100.7", "203.0.113.9", // IETF, documentation
		"192.88.99.1", "100.64.0.1", "0.1.2.3", "10.0.0.1", "127.0.0.2", "169.254.169.254",
	} {
		if code := permissionCode(t, p, ip); code != 403 {
			t.Errorf("permission to %s: code %d, want 403", ip, code)
		}
	}
	if code := permissionCode(t, p, "8.8.8.8"); code != 0 {
		t.Errorf("permission to a public address: code %d, want granted", code)
	}
}

// The host itself is refused as a peer even when the operator's policy
// allows every address: each of its interface addresses, the TURN
// server's listen address (its own port) and the relay address it
// advertises (a NAT's public address that hairpins back).
func TestTURNDeniesTheHostItself(t *testing.T) {
	lightTest(t)
	allowAll := func(net.IP) bool { return true }
	// 192.0.2.77 stands for a public address behind a 1:1 NAT: on no
	// interface, advertised in relayed candidates.
	ts := startTURNOn(t, "127.0.0.1", TURNConfig{AllowPeer: allowAll, RelayIP: net.ParseIP("192.0.2.77")})
	p, err := allocateFrom(t, ts, "127.0.0.1", "p1")
	if err != nil {
		t.Fatal(err)
	}
	defer p.leave()
	self := []string{"127.0.0.1", "192.0.2.77"}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			self = append(self, n.IP.String())
		}
	}
	for _, ip := range self {
		if code := permissionCode(t, p, ip); code != 403 {
			t.Errorf("permission to the host's %s: code %d, want 403", ip, code)
		}
	}
	// The same request to an address that is not the host is granted: the
	// refusals above come from the host check, not the operator's policy.
	if code := permissionCode(t, p, "127.0.0.2"); code != 0 {
		t.Errorf("permission to 127.0.0.2 under an allow-all policy: code %d, want granted", code)
	}
	t.Logf("host addresses refused: %v", self)
}

// An IPv6 allocation refuses the IPv6 special ranges: documentation, ULA,
// discard, NAT64, Teredo, 6to4, site-local, SRv6, and the host's own.
func TestTURNDeniesIPv6SpecialRanges(t *testing.T) {
	lightTest(t)
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	ts := startTURNOn(t, "::1", TURNConfig{})
	p, err := allocateFrom(t, ts, "::1", "p6")
	if err != nil {
		t.Fatal(err)
	}
	defer p.leave()
	if a, _ := netip.ParseAddr(p.relay.LocalAddr().(*net.UDPAddr).IP.String()); !a.Is6() {
		t.Fatalf("relay address %v is not IPv6", p.relay.LocalAddr())
	}
	for _, ip := range []string{
		"::1", "2001:db8::1", "3fff::1", "fc00::1", "fd00::2", "100::1", "64:ff9b::808:808",
		"64:ff9b:1::1", "2001::1", "2001:2::1", "2002:c000:201::1", "fec0::1", "5f00::1", "fe80::1", "ff02::1", "::",
	} {
		if code := permissionCode(t, p, ip); code != 403 {
			t.Errorf("permission to %s: code %d, want 403", ip, code)
		}
	}
	if code := permissionCode(t, p, "2001:4860:4860::8888"); code != 0 {
		t.Errorf("permission to a public IPv6 address: code %d, want granted", code)
	}
}

// TCP relaying (RFC 6062) is refused on the UDP listener: pion would open
// a TCP listener on the host per allocation and dial peers from it.
func TestTURNRefusesTCPAllocations(t *testing.T) {
	lightTest(t)
	ts := startTURNOn(t, "127.0.0.1", TURNConfig{})
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	user, pass := restCredential(time.Now().Add(time.Hour), "p2")
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: ts.Addr().String(), STUNServerAddr: ts.Addr().String(),
		Conn: conn, Username: user, Password: pass, Realm: turnRealm, RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	before := ts.Allocations()
	if _, err := c.AllocateTCP(); err == nil {
		t.Fatal("a TCP allocation was granted")
	} else {
		t.Logf("TCP allocation: %v", err)
	}
	if n := ts.Allocations(); n != before {
		t.Errorf("allocations %d after a refused TCP allocation, want %d", n, before)
	}
	if n := ts.lim.refused[refusedTCP].Load(); n != 1 {
		t.Errorf("%d TCP refusals counted, want 1", n)
	}
}

func TestPublicPeerPolicy(t *testing.T) {
	lightTest(t)
	for _, c := range []struct {
		ip   string
		want bool
	}{
		{"8.8.8.8", true},
		{"1.1.1.1", true},
		{"2001:4860:4860::8888", true},
		{"2a00:1450:4001::1", true},
		{"127.0.0.1", false},
		{"10.0.0.1", false},
		{"172.31.255.255", false},
		{"192.168.0.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"100.64.0.1", false},
		{"224.0.0.1", false},
		{"198.18.0.1", false},
		{"198.19.255.255", false},
		{"240.0.0.1", false},
		{"255.255.255.255", false},
		{"192.0.2.1", false},
		{"198.51.100.1", false},
		{"203.0.113.1", false},
		{"192.0.0.1", false},
		{"192.88.99.1", false},
		{"::1", false},
		{"::", false},
		{"::ffff:8.8.8.8", false},
		{"::808:808", false}, // IPv4-compatible
		{"fe80::1", false},
		{"fec0::1", false},
		{"fd00::1", false},
		{"fc00::1", false},
		{"100::1", false},
		{"64:ff9b::a00:1", false},
		{"64:ff9b:1::1", false},
		{"2001::1", false},       // Teredo
		{"2001:2::1", false},     // benchmarking
		{"2001:db8::1", false},   // documentation
		{"3fff::1", false},       // documentation
		{"2002:a00:1::1", false}, // 6to4
		{"5f00::1", false},       // SRv6
		{"ff02::1", false},
	} {
		ip := net.ParseIP(c.ip)
		if v4 := ip.To4(); v4 != nil && c.ip[0] != ':' {
			ip = v4 // pion hands IPv4 peers over as 4 bytes
		}
		if got := PublicPeer(ip); got != c.want {
			t.Errorf("PublicPeer(%s) = %v, want %v", c.ip, got, c.want)
		}
	}
	if PublicPeer(nil) || PublicPeer(net.IPv4(8, 8, 8, 8)) {
		t.Error("nil or a 16-byte IPv4-mapped address passed")
	}
}
