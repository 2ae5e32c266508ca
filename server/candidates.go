package main

import (
	"net"
	"net/netip"
)

// candidatePolicy decides which of their neighbours' ICE candidates the
// server's own in-process peers (the demo source; WHIP and WHEP nodes) may
// check. Without it a viewer could trickle candidates that make the server
// send STUN into its own network or to its own services: loopback, private,
// link-local, multicast and unspecified addresses are refused (as the TURN
// relay refuses them, PublicPeer) unless the server runs loopback-only, and
// the server's own listening ports on any address always are. Refusing a
// candidate never stops a peer that can reach the server: its checks give
// the server a peer-reflexive candidate, which needs no signal.
type candidatePolicy struct {
	loopbackOnly bool
	ownPorts     map[int]bool
}

// newCandidatePolicy builds the policy; ports are the server's own
// listening ports (HTTP, TURN, the ICE UDP mux), zero ports ignored.
func newCandidatePolicy(loopbackOnly bool, ports ...int) *candidatePolicy {
	p := &candidatePolicy{loopbackOnly: loopbackOnly, ownPorts: make(map[int]bool)}
	for _, port := range ports {
		if port > 0 {
			p.ownPorts[port] = true
		}
	}
	return p
}

// allow is a peer.Config.RemoteCandidateFilter.
func (p *candidatePolicy) allow(addr netip.Addr, port int) bool {
	if p.ownPorts[port] || port <= 0 || port > 65535 {
		return false
	}
	if p.loopbackOnly {
		return addr.IsLoopback()
	}
	return PublicPeer(net.IP(addr.AsSlice()))
}

// portOf is the port of a listening address, 0 if it has none.
func portOf(a net.Addr) int {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.Port
	case *net.UDPAddr:
		return a.Port
	}
	return 0
}
