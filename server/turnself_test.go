package main

import (
	"net"
	"testing"
)

// The relay's exceptions for the server's own peers admit exactly what
// they name: loopback-only admits 127.0.0.0/8 but the relay's own port;
// self ports admit the host's addresses at those ports only. Without them
// the host stays unreachable (TestTURNDeniesTheHostItself).
func TestTURNSelfExceptions(t *testing.T) {
	lightTest(t)
	host := net.ParseIP("192.0.2.77").To4() // the host's address (fixed, as -public-ip is)
	other := net.ParseIP("8.8.8.8").To4()   // pion hands IPv4 peers over as 4 bytes
	loop := net.ParseIP("127.0.0.1").To4()
	udp := func(ip net.IP, port int) net.Addr { return &net.UDPAddr{IP: ip, Port: port} }
	for _, c := range []struct {
		name  string
		setup func(*peerPolicy)
		addr  net.Addr
		want  bool
	}{
		{"default: the host", nil, udp(host, 50000), false},
		{"default: loopback", nil, udp(loop, 50000), false},
		{"default: a public peer", nil, udp(other, 50000), true},
		{"loopback-only: a loopback peer", func(p *peerPolicy) { p.allowLoopback(3478) }, udp(loop, 50000), true},
		{"loopback-only: another loopback address", func(p *peerPolicy) { p.allowLoopback(3478) }, udp(net.ParseIP("127.0.0.9").To4(), 6000), true},
		{"loopback-only: the relay's own port", func(p *peerPolicy) { p.allowLoopback(3478) }, udp(loop, 3478), false},
		{"loopback-only: the host's other address", func(p *peerPolicy) { p.allowLoopback(3478) }, udp(host, 50000), false},
		{"self port: the host at it", func(p *peerPolicy) { p.allowSelfPorts([]int{50000}) }, udp(host, 50000), true},
		{"self port: the host elsewhere", func(p *peerPolicy) { p.allowSelfPorts([]int{50000}) }, udp(host, 22), false},
		{"self port: loopback at it", func(p *peerPolicy) { p.allowSelfPorts([]int{50000}) }, udp(loop, 50000), true},
		{"self port: loopback elsewhere", func(p *peerPolicy) { p.allowSelfPorts([]int{50000}) }, udp(loop, 8080), false},
		{"self port: a public peer", func(p *peerPolicy) { p.allowSelfPorts([]int{50000}) }, udp(other, 22), true},
		{"self port 0 ignored", func(p *peerPolicy) { p.allowSelfPorts([]int{0}) }, udp(host, 0), false},
	} {
		p := newPeerPolicy(nil, nil, host)
		p.ifaces = func() ([]net.Addr, error) {
			return []net.Addr{&net.IPNet{IP: loop, Mask: net.CIDRMask(8, 32)}}, nil
		}
		if c.setup != nil {
			c.setup(p)
		}
		if got := p.permitAddr(c.addr); got != c.want {
			t.Errorf("%s: permitAddr(%v) = %v, want %v", c.name, c.addr, got, c.want)
		}
		// A permission (per address) is granted where some port may be reached.
		ip := c.addr.(*net.UDPAddr).IP
		if c.want && !p.permit(ip) {
			t.Errorf("%s: no permission for %v", c.name, ip)
		}
	}
}
