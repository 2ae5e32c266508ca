package main

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/transport/v5"
)

// Address ranges PublicPeer refuses beyond the standard library's
// predicates (IANA special-purpose registries, RFC 6890 and successors).
// None of them is a browser's or relay's address on the public internet;
// several reach the server's own network, a neighbour's, or a device
// that answers on the host's behalf.
var deniedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT: the provider's side of it
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments (DS-Lite, NAT64 discovery)
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("192.88.99.0/24"),  // 6to4 relay anycast: wraps traffic into IPv6
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking: lab networks, often next to the host
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and the limited broadcast address
}

// publicIPv6 is the only IPv6 space with routable unicast peers (RFC 4291
// global unicast). Everything outside it is loopback, IPv4-mapped or
// -compatible, NAT64 (64:ff9b::/96, 64:ff9b:1::/48), discard (100::/64),
// SRv6 (5f00::/16), ULA (fc00::/7), site- or link-local, or multicast.
var publicIPv6 = netip.MustParsePrefix("2000::/3")

// deniedIPv6 are the special-purpose blocks inside 2000::/3.
var deniedIPv6 = []netip.Prefix{
	netip.MustParsePrefix("2001::/23"),     // IETF protocol assignments: Teredo (embeds IPv4), benchmarking, ORCHID
	netip.MustParsePrefix("2001:db8::/32"), // documentation
	netip.MustParsePrefix("2002::/16"),     // 6to4: embeds an IPv4 address, private ones too
	netip.MustParsePrefix("3fff::/20"),     // documentation (RFC 9637)
}

// PublicPeer reports whether a TURN allocation may relay to ip: a public
// unicast address, not loopback, private, link-local, multicast,
// unspecified, reserved, documentation or benchmarking, nor an IPv6 form
// that embeds an IPv4 address. Without it the relay is an open door into
// the server's own network.
func PublicPeer(ip net.IP) bool {
	if len(ip) == net.IPv6len && ip.To4() != nil {
		return false // ::ffff:a.b.c.d; pion hands IPv4 peers over as 4 bytes
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	denied := deniedPrefixes
	if a.Is6() {
		if !publicIPv6.Contains(a) {
			return false
		}
		denied = deniedIPv6
	}
	for _, p := range denied {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// selfRefresh is how long the host's interface addresses are cached: an
// address added to an interface is refused within this time, and a flood
// of permission requests costs one interface listing per period.
const selfRefresh = 10 * time.Second

// peerPolicy decides which peers an allocation may reach: those allow
// admits (PublicPeer by default) that are not the host itself. The host
// is every address on its interfaces (public ones too: the relay would
// otherwise reach services listening only there), the TURN server's own
// listen and relay addresses (the advertised relay address may be a NAT's
// public address, which hairpins back to the host), and any address it
// is told. Reaching them would let a viewer's credential talk to the
// host's SSH, its metrics, or other allocations on the same relay.
type peerPolicy struct {
	allow  func(net.IP) bool
	fixed  []netip.Addr
	ifaces func() ([]net.Addr, error)
	// The exceptions for the server's own peers (turnself.go): loopback
	// peers at any port but ownPort, the host's addresses at selfPorts.
	loopback  bool
	ownPort   int
	selfPorts map[int]bool

	mu   sync.Mutex
	self map[netip.Addr]bool
	at   time.Time
}

// newPeerPolicy builds the policy. relayNet, when set, is where the relay
// sockets live (a vnet in tests), so its interfaces are the host's.
func newPeerPolicy(allow func(net.IP) bool, relayNet transport.Net, fixed ...net.IP) *peerPolicy {
	if allow == nil {
		allow = PublicPeer
	}
	p := &peerPolicy{allow: allow, ifaces: net.InterfaceAddrs}
	if relayNet != nil {
		p.ifaces = func() ([]net.Addr, error) {
			ifs, err := relayNet.Interfaces()
			if err != nil {
				return nil, err
			}
			var out []net.Addr
			for _, i := range ifs {
				as, _ := i.Addrs()
				out = append(out, as...)
			}
			return out, nil
		}
	}
	for _, ip := range fixed {
		if a, ok := netip.AddrFromSlice(ip); ok && !a.Unmap().IsUnspecified() {
			p.fixed = append(p.fixed, a.Unmap())
		}
	}
	return p
}

// permit reports whether an allocation may reach ip (at some port: a
// permission; turnself.go).
func (p *peerPolicy) permit(ip net.IP) bool { return p.permitPort(ip, 0) }

// permitAddr checks a transport address before the relay opens or writes
// to it: the same rules as permit. It runs again at send and dial time so
// a permission granted before the host gained an address, or a code path
// that skips pion's permission check, still cannot reach the host.
func (p *peerPolicy) permitAddr(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.UDPAddr:
		return p.permitPort(a.IP, a.Port)
	case *net.TCPAddr:
		return p.permitPort(a.IP, a.Port)
	}
	return false
}

func (p *peerPolicy) isSelf(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.self == nil || time.Since(p.at) > selfRefresh {
		self := make(map[netip.Addr]bool, len(p.fixed)+8)
		for _, f := range p.fixed {
			self[f] = true
		}
		if addrs, err := p.ifaces(); err == nil {
			for _, ad := range addrs {
				var ip net.IP
				switch v := ad.(type) {
				case *net.IPNet:
					ip = v.IP
				case *net.IPAddr:
					ip = v.IP
				}
				if x, ok := netip.AddrFromSlice(ip); ok {
					self[x.Unmap()] = true
				}
			}
		} else if p.self != nil {
			for k := range p.self {
				self[k] = true // keep what we knew rather than forget the host
			}
		}
		p.self, p.at = self, time.Now()
	}
	return p.self[a]
}
