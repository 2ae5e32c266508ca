package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"canopy/mesh"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// P2P only above a threshold (-p2p-min-viewers N). In a tree every viewer
// that relays shows its address to the viewers it feeds, and they show
// theirs to it. A small audience gains little from that (the server can
// feed a few viewers itself) and is the easiest to deanonymise, so up to N
// viewers of a stream are all fed by the server's own relay node, the
// hosted relay that also serves the stream's WHEP players (whip.Hold):
// viewers then see only the server, and the source feeds that one relay.
// The viewer that makes the audience N+1 turns the tree on: the viewers'
// own capacities count again and the server's relay gives up its tree
// children, which move, make before break (coordinator.apply), to the
// source's slots and to each other; a viewer with no other place (viewers
// that feed nobody, a full source) stays with the relay rather than be
// cut off. When the audience falls to closeAt or
// fewer and stays there for gateDwell, the tree turns off again the same
// way: every viewer moves back under the server's relay.
//
// What it costs the server: while the tree is off, its relay feeds at most
// N viewers of the stream (its tree capacity is exactly N, and the N+1-th
// viewer turns the tree on in the join that places it, so it is never
// queued), so the server's upload for the stream is bounded by N streams
// plus its WHEP players; N itself is bounded by the tree's Go clamp
// (tree.DefaultGoMaxCapacity, 64). While the tree is on, the relay keeps
// its place under the source, receiving the one stream (hot: viewers
// moving back find it playing, its last GOP cached), and has room in the
// tree only for the viewers it kept (p2pGate.kept), fewer than N.
//
// What is kept as it is: Go relays (role relay, a relay grant with auth on)
// keep their capacity, as operators' infrastructure; WHEP players do not
// count as audience (they never join the tree); private viewers count and
// stay private.

// Bounds of -p2p-min-viewers.
const (
	// gateDwell is how long the audience must stay at closeAt or below, and
	// how long after the last switch, before the tree turns off again: twice
	// moveTimeout, so every move of the last switch has finished before
	// viewers move back, and an audience that swings around the threshold
	// switches at most once per dwell.
	gateDwell = 2 * moveTimeout
	// sourceGatedCapacity is the source's capacity while the tree is off:
	// its one child is the server's relay.
	sourceGatedCapacity = 1
)

// errRelayStopped means the server's relay node of a gated stream stopped;
// the keeper dials another.
var errRelayStopped = errors.New("the server's relay node stopped")

// errNoHostedRelay means the server cannot host relay nodes (WHIP/WHEP did
// not start), so -p2p-min-viewers has no relay to feed the viewers from.
var errNoHostedRelay = errors.New("no hosted relay: WHIP/WHEP did not start")

// P2PMinConfig is -p2p-min-viewers.
type P2PMinConfig struct {
	// Viewers is N: up to N viewers the server feeds itself; 0 turns it off.
	Viewers int
	// Streams limits it to these streams; empty: every stream.
	Streams []string
}

// parseP2PMin reads -p2p-min-viewers: "" or "0" (off), "N" (every stream)
// or "N:a,b" (streams a and b), with 1 ≤ N ≤ tree.DefaultGoMaxCapacity.
func parseP2PMin(s string) (P2PMinConfig, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return P2PMinConfig{}, nil
	}
	num, list, hasList := strings.Cut(s, ":")
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n < 1 || n > tree.DefaultGoMaxCapacity {
		return P2PMinConfig{}, fmt.Errorf("-p2p-min-viewers: want N or N:stream,… with 1 ≤ N ≤ %d, got %q", tree.DefaultGoMaxCapacity, s)
	}
	pc := P2PMinConfig{Viewers: n}
	if !hasList {
		return pc, nil
	}
	for _, st := range strings.Split(list, ",") {
		if st = strings.TrimSpace(st); st == "" {
			continue
		}
		if !protocol.ValidID(st) {
			return P2PMinConfig{}, fmt.Errorf("-p2p-min-viewers: bad stream name %q", st)
		}
		pc.Streams = append(pc.Streams, st)
	}
	if len(pc.Streams) == 0 {
		return P2PMinConfig{}, fmt.Errorf("-p2p-min-viewers: %d: names no stream", n)
	}
	return pc, nil
}

// covers reports whether stream is gated.
func (pc P2PMinConfig) covers(stream string) bool {
	return pc.Viewers > 0 && (len(pc.Streams) == 0 || slices.Contains(pc.Streams, stream))
}

// closeAt is the audience at which the tree turns off again: a quarter of
// N (at least one viewer) below N, so a viewer reloading at the threshold
// does not move everybody twice.
func closeAt(n int) int { return n - max(1, (n+3)/4) }

// p2pGate is one gated stream's state. Guarded by its coordinator's mu.
type p2pGate struct {
	min     int
	closeAt int
	open    bool   // the tree is on
	relay   string // the server's relay in the tree; "" while it is not there
	// kept is the relay's tree capacity while the tree is on: the viewers
	// that had nowhere else to go when it turned on (openGate). srcKept is
	// the source's while it is off: its children then, which the gate
	// could not move under the relay (Go relays), and the relay.
	kept, srcKept int
	// viewers and others hold each peer's capacity as admitted (after
	// auth and privacy), before the gate: what it gets back when the tree
	// turns on. viewers is the audience.
	viewers map[string]int
	others  map[string]int
	// switched is when the tree last turned on or off; lowSince when the
	// audience last fell to closeAt or below (zero: it is above).
	switched, lowSince time.Time
	switches           int         // times the tree turned on or off
	timer              *time.Timer // a pending close check
	// keep starts the keeper of the server's relay for the stream, which
	// runs until stop is called (Server.keepRelay).
	keep func(stream string) (stop func())
	stop func()
}

func newP2PGate(n int, keep func(string) func()) *p2pGate {
	return &p2pGate{min: n, closeAt: closeAt(n), viewers: make(map[string]int), others: make(map[string]int), keep: keep}
}

// capacity is what p may feed now. A nil gate gives the claim back.
func (g *p2pGate) capacity(id string, role protocol.Role) int {
	switch {
	case id == g.relay:
		if g.open {
			return g.kept
		}
		return g.min
	case role == protocol.RoleViewer:
		if g.open {
			return g.viewers[id]
		}
		return 0
	case role == protocol.RoleSource && !g.open:
		return max(sourceGatedCapacity, g.srcKept)
	}
	return g.others[id]
}

// claim records what p claims (at hello, and at every capacity message)
// and returns what it gets.
func (g *p2pGate) claim(p *peerConn, role protocol.Role, capacity int) int {
	if g == nil {
		return capacity
	}
	if role == protocol.RoleViewer {
		g.viewers[p.id] = capacity
	} else {
		g.others[p.id] = capacity
	}
	return g.capacity(p.id, role)
}

// gateJoin is called by join before p is placed: it records p's claim,
// recognises the server's relay, starts the relay's keeper with the
// source, and returns the capacity p is placed with.
func (c *coordinator) gateJoin(p *peerConn, hello *protocol.Message) int {
	g := c.gate
	if g == nil {
		return hello.Capacity
	}
	switch {
	case hello.Role == protocol.RoleRelay && p.hosted:
		g.relay = p.id
	case hello.Role == protocol.RoleSource && g.stop == nil && g.keep != nil:
		g.stop = g.keep(c.id)
	}
	return g.claim(p, hello.Role, hello.Capacity)
}

// gateJoined is called by join once p is in the tree and in c.peers: the
// server's relay is trusted at once (it is the server's own node, and it
// must take the whole small audience, not one viewer on trial), and the
// new audience may turn the tree on. The moves are returned to apply.
func (c *coordinator) gateJoined(p *peerConn) []tree.Change {
	g := c.gate
	if g == nil {
		return nil
	}
	var ch []tree.Change
	if p.id == g.relay {
		more, err := c.tree.SetTrust(p.id, tree.TrustProven)
		if err != nil {
			c.log.Warn("server relay trust", "peer", p.id, "err", err)
		}
		ch = append(ch, more...)
	}
	return append(ch, c.regate()...)
}

// gateLeft forgets p; the smaller audience may turn the tree off.
func (c *coordinator) gateLeft(p *peerConn) []tree.Change {
	g := c.gate
	if g == nil {
		return nil
	}
	delete(g.viewers, p.id)
	delete(g.others, p.id)
	switch {
	case p.id == g.relay:
		g.relay, g.kept = "", 0
	case p.hello != nil && p.hello.Role == protocol.RoleSource:
		g.srcKept = 0
		if g.stop != nil {
			g.stop() // the source left: its relay lingers a while (whip), then goes
			g.stop = nil
		}
	}
	return c.regate()
}

// regate turns the tree on when the audience exceeds N, and off when it
// has stayed at closeAt or below for gateDwell (a timer checks again).
func (c *coordinator) regate() []tree.Change {
	g := c.gate
	if g == nil {
		return nil
	}
	n, now := len(g.viewers), time.Now()
	if !g.open {
		if n > g.min {
			return c.switchGate(true, n)
		}
		if g.srcKept > sourceGatedCapacity && c.source != nil && len(c.tree.Children(c.source.id)) < g.srcKept {
			// A child the source kept at the last close (a Go relay) left:
			// its slot is not for a viewer.
			g.srcKept = len(c.tree.Children(c.source.id))
			return c.gateSet(c.source.id)
		}
		return nil
	}
	if n > g.closeAt {
		g.lowSince = time.Time{}
		return nil
	}
	if g.lowSince.IsZero() {
		g.lowSince = now
	}
	if _, placed := c.tree.Parent(g.relay); g.relay == "" || !placed {
		return nil // nothing to move back to yet; its join checks again
	}
	wait := max(gateDwell-now.Sub(g.lowSince), gateDwell-now.Sub(g.switched))
	if wait <= 0 {
		return c.switchGate(false, n)
	}
	if g.timer == nil {
		g.timer = time.AfterFunc(wait, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			g.timer = nil
			if !c.removed {
				c.apply(c.regate())
			}
		})
	}
	return nil
}

// p2pView is a gated stream's state in GET /api/streams/:id/stats.
type p2pView struct {
	Tree      string `json:"tree"`      // "on" or "off" (the server's relay feeds every viewer)
	Threshold int    `json:"threshold"` // N
	CloseAt   int    `json:"closeAt"`   // the audience at which it turns off again
	Viewers   int    `json:"viewers"`   // the audience
	Relay     string `json:"relay,omitempty"`
	Kept      int    `json:"kept,omitempty"` // viewers the relay kept when the tree turned on (no other place)
	Switches  int    `json:"switches"`
}

// gateView is the gate's state for the stats API; nil for a stream that
// is not gated. Called with c.mu held.
func (c *coordinator) gateView() *p2pView {
	g := c.gate
	if g == nil {
		return nil
	}
	v := &p2pView{Tree: "off", Threshold: g.min, CloseAt: g.closeAt, Viewers: len(g.viewers), Relay: g.relay, Switches: g.switches}
	if g.open {
		v.Tree, v.Kept = "on", g.kept
	}
	return v
}

// keepRelay holds the server's relay of stream in its tree (whip.Hold)
// until stop is called, dialing another if it stops.
func (s *Server) keepRelay(stream string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		var backoff mesh.Backoff
		for ctx.Err() == nil {
			started := time.Now()
			err := s.holdRelay(ctx, stream)
			if ctx.Err() != nil {
				return
			}
			if time.Since(started) >= demoStable {
				backoff.Reset()
			}
			wait := backoff.Next()
			s.log.Warn("server relay of a gated stream stopped; again", "stream", stream, "err", err, "in", wait.Round(time.Millisecond))
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return
			}
		}
	}()
	return cancel
}

// holdRelay holds one relay node until it stops or ctx ends.
func (s *Server) holdRelay(ctx context.Context, stream string) error {
	if s.whip == nil {
		return errNoHostedRelay
	}
	gr := &grant{stream: stream, relay: true, maxChildren: -1}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	id, done, release, err := s.whip.Hold(dctx, stream, func() mesh.Transport { return s.LocalTransport(gr) })
	cancel()
	if err != nil {
		return err
	}
	defer release()
	s.log.Info("server relay holds a gated stream", "stream", stream, "peer", id)
	select {
	case <-done:
		return errRelayStopped
	case <-ctx.Done():
		return nil
	}
}
