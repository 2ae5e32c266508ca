package main

import (
	"time"

	"canopy/mesh/tree"
)

// Bars for tampering outlast the session (README "Signed frames"). A
// relay the children caught altering frames is barred by what identifies
// it across reconnects: its peer id, which a resume keeps, and its
// address as its edge saw it (the IPv4 address or the IPv6 /64, the
// limiter's key), which a fresh hello from the same machine keeps. A
// barred peer still watches: it joins with capacity 0 and the tree API
// marks it barred and tampering. The bars live as long as the stream's
// coordinator (until its last peer leaves) and barTTL at most.

const (
	// barTTL bounds a bar: an address is often shared (a NAT, a campus),
	// and its other users must not be kept from relaying for good by one
	// tampering neighbour. An hour outlasts a reconnect loop by far.
	barTTL = time.Hour
	// sharedAddress is how many other peers of the stream may share a
	// tampering relay's address for the address to be barred with it:
	// past it the address is a reverse proxy's or a large NAT's, and
	// barring it would keep most of the audience from relaying; then
	// only the peer id is barred.
	sharedAddress = 4
	// maxBars bounds the keys a stream remembers; expired ones go first,
	// then the oldest. Each bar took two reports of children that played,
	// so a stream reaches it only with thousands of caught relays.
	maxBars = 4096
)

// barList is a stream's bars: key → when the bar ends. Keys are "peer:"
// and a peer id or "addr:" and an address prefix. Guarded by the
// coordinator's mu.
type barList map[string]time.Time

// barAddr is the address key of p, or "" for a peer without one (a node
// the server hosts, an unknown transport).
func barAddr(p *peerConn) string {
	if p == nil || p.hosted {
		return ""
	}
	k := clientKey(p.remote)
	if !k.IsValid() {
		return ""
	}
	return "addr:" + k.String()
}

func barPeer(id string) string { return "peer:" + id }

// barForStream records a bar on id (and on its address, when it is not
// shared by more than sharedAddress other peers). Called with c.mu held.
func (c *coordinator) barForStream(id string, now time.Time) {
	if c.bars == nil {
		c.bars = make(barList)
	}
	for _, k := range c.bars.sweep(now) {
		c.markState(stateBarPrefix + k)
	}
	until := now.Add(barTTL)
	c.bars[barPeer(id)] = until
	c.markState(stateBarPrefix + barPeer(id))
	p := c.peerOrDeparted(id)
	addr := barAddr(p)
	if addr == "" {
		return
	}
	shared := 0
	for _, q := range c.peers {
		if q != p && barAddr(q) == addr {
			shared++
		}
	}
	if shared > sharedAddress {
		c.log.Info("tampering relay's address is shared: barring its id only", "peer", id, "addr", addr, "others", shared)
		return
	}
	c.bars[addr] = until
	c.markState(stateBarPrefix + addr)
	c.log.Info("tampering relay barred for the stream", "peer", id, "addr", addr, "until", until.Format(time.RFC3339))
}

// sweep drops expired bars, then the oldest past maxBars-2 (room for the
// two keys of the bar being added); it returns the keys dropped.
func (b barList) sweep(now time.Time) (dropped []string) {
	for k, until := range b {
		if !now.Before(until) {
			delete(b, k)
			dropped = append(dropped, k)
		}
	}
	for len(b) > maxBars-2 {
		var oldest string
		var at time.Time
		for k, until := range b {
			if oldest == "" || until.Before(at) {
				oldest, at = k, until
			}
		}
		delete(b, oldest)
		dropped = append(dropped, oldest)
	}
	return dropped
}

// barredForStream reports whether p, a peer joining or resuming, is
// under a bar by its id or its address. Called with c.mu held.
func (c *coordinator) barredForStream(p *peerConn, now time.Time) bool {
	if len(c.bars) == 0 || p.hosted {
		return false
	}
	for _, k := range []string{barPeer(p.id), barAddr(p)} {
		if until, ok := c.bars[k]; ok && now.Before(until) {
			return true
		}
	}
	return false
}

// rebar marks p, just placed (joined or resumed) and under a bar, as
// barred in this session too: no children, capacity 0, tampering in the
// tree API. Returns the moves. Called with c.mu held.
func (c *coordinator) rebar(p *peerConn) []tree.Change {
	c.signed.init()
	c.signed.barred[p.id] = true
	c.trust.banned[p.id] = true
	delete(c.trust.probation, p.id)
	c.views.tree = nil
	changes, err := c.tree.SetTrust(p.id, tree.TrustBarred)
	if err != nil {
		c.log.Warn("bar", "peer", p.id, "err", err)
	}
	if c.tree.Capacity(p.id) != 0 {
		more, err := c.tree.SetCapacity(p.id, 0)
		if err != nil {
			c.log.Warn("bar capacity", "peer", p.id, "err", err)
		}
		changes = append(changes, more...)
	}
	c.log.Info("barred relay is back: it may watch, not relay", "peer", p.id, "addr", barAddr(p))
	return changes
}

// barCapacity is the capacity p may have: 0 once barred for tampering.
// Called with c.mu held.
func (c *coordinator) barCapacity(p *peerConn, capacity int) int {
	if c.signed.barred[p.id] {
		return 0
	}
	return capacity
}

// restoreBars takes the bars of a dead owner's state (those still
// running), and bars again in this session each restored peer they name:
// a new owner must not let a caught relay feed anyone. Returns the moves.
// Called with c.mu held.
func (c *coordinator) restoreBars(bars map[string]time.Time) []tree.Change {
	now := time.Now()
	for k, until := range bars {
		if now.Before(until) {
			if c.bars == nil {
				c.bars = make(barList)
			}
			c.bars[k] = until
		}
	}
	var changes []tree.Change
	for _, p := range c.peers {
		if c.barredForStream(p, now) {
			changes = append(changes, c.rebar(p)...)
		}
	}
	return changes
}
