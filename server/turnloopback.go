package main

import "net"

// allowLoopback makes the policy admit loopback peers, the host's own
// included, except at the relay's own port (TURNConfig.AllowLoopback). A
// loopback-only server's peers all live on 127.0.0.1, so a private viewer,
// which connects only through the relay, could otherwise reach nobody.
// The relay's own port stays refused: an allocation relaying to the TURN
// listener would loop requests back into the server as if from itself.
func (p *peerPolicy) allowLoopback(ownPort int) {
	p.loopback, p.ownPort = true, ownPort
}

// loopbackPortOK refuses the relay's own port on loopback when loopback
// peers are admitted; it passes everything else to the usual rules.
func (p *peerPolicy) loopbackPortOK(ip net.IP, port int) bool {
	return !p.loopback || !ip.IsLoopback() || port != p.ownPort
}
