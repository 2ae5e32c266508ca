package main

import (
	"net"
	"net/netip"
)

// The relay's exceptions for the server's own peers. By default an
// allocation reaches neither loopback nor any of the host's addresses
// (turnpolicy.go). Two set-ups need a little of them, and get exactly that:
//   - a loopback-only server (TURNConfig.AllowLoopback: tests, a demo on a
//     laptop without a network), whose peers all live on 127.0.0.1: loopback
//     peers are admitted at any port but the relay's own (an allocation
//     relaying to the TURN listener would loop requests back into it);
//   - a server whose in-process peers (the demo source, WHIP and WHEP nodes)
//     share one ICE port (-udp-port; TURNConfig.SelfPorts): the host's
//     addresses are admitted at that port only, so a private viewer, which
//     connects only through the relay, can be fed by them.

// allowLoopback admits loopback peers except at the relay's own port.
func (p *peerPolicy) allowLoopback(ownPort int) {
	p.loopback, p.ownPort = true, ownPort
}

// allowSelfPorts admits the host's own addresses at these ports (0s ignored).
func (p *peerPolicy) allowSelfPorts(ports []int) {
	for _, port := range ports {
		if port > 0 && port <= 65535 {
			if p.selfPorts == nil {
				p.selfPorts = make(map[int]bool)
			}
			p.selfPorts[port] = true
		}
	}
}

// permitPort reports whether an allocation may reach ip at port; port 0
// asks about a permission, which is per address (RFC 8656 §9): some port
// of ip may be admitted, and every datagram is checked again with its
// port (permitAddr).
func (p *peerPolicy) permitPort(ip net.IP, port int) bool {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	a = a.Unmap()
	if p.loopback && a.IsLoopback() {
		return port == 0 || port != p.ownPort
	}
	if p.isSelf(a) {
		return len(p.selfPorts) > 0 && (port == 0 || p.selfPorts[port])
	}
	return p.allow(ip)
}
