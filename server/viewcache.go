package main

import (
	"slices"
	"time"

	"canopy/mesh/tree"
)

// The tree API, the dashboard's stats and /metrics read a stream's whole
// tree under its coordinator's lock: 11 ms for 20 000 peers (Tree.Snapshot,
// 3.2 MB), during which no peer of the stream can join, leave or signal.
// Those endpoints are public and unmetered, so a client polling them in a
// loop held the lock most of the time (8 pollers of 2 000 peers: 60 %). A
// big stream's view (the tree; the stats) is reused for viewReuse times
// what it cost to take, so each holds the lock at most a twentieth of the
// time whatever the request rate (both: a tenth), and is never older than
// viewMaxAge; a small stream's (under viewCacheMin peers, well under a
// millisecond) is taken fresh every time, as before. viewMaxAge binds only
// when a view costs over viewMaxAge/viewReuse to take: 263 ms, a tree of
// several 100 000 peers or a starved machine. It was 500 ms, which bound
// from 26 ms on: a loaded CI machine took 46 ms per view, the reuse was cut
// short, and the pollers held the lock 27 % of the time.
const (
	viewCacheMin = 1000
	viewReuse    = 19
	viewMaxAge   = 5 * time.Second
)

// viewCache is a coordinator's last views of its tree. Guarded by the
// coordinator's mu; what it returns is shared and must not be modified.
type viewCache struct {
	tree       []tree.NodeInfo
	treeUntil  time.Time
	stats      *statsResponse
	statsUntil time.Time
	// held is how long the lock was held taking views, in all.
	held time.Duration
}

// reuseUntil is how long a view of n nodes that took from start to now
// may be reused; zero for a small tree.
func (v *viewCache) reuseUntil(start time.Time, n int) time.Time {
	now := time.Now()
	v.held += now.Sub(start)
	if n < viewCacheMin {
		return time.Time{}
	}
	return now.Add(min(viewReuse*now.Sub(start), viewMaxAge))
}

// treeView is the tree's snapshot, reused as above; callers must not
// modify it. Runs under c.mu.
func (c *coordinator) treeView() []tree.NodeInfo {
	start := time.Now()
	if c.views.tree != nil && start.Before(c.views.treeUntil) {
		return c.views.tree
	}
	nodes := c.tree.Snapshot()
	c.markTampering(nodes)
	c.views.tree, c.views.treeUntil = nodes, c.views.reuseUntil(start, len(nodes))
	return nodes
}

// treeViewCopy is treeView in a slice of the caller's own. Runs under c.mu.
func (c *coordinator) treeViewCopy() []tree.NodeInfo { return slices.Clone(c.treeView()) }

// statsViewOf is build's stats view, reused as above; the caller gets its
// own Nodes to change. Runs under c.mu.
func (c *coordinator) statsViewOf(build func() statsResponse) statsResponse {
	start := time.Now()
	if c.views.stats == nil || !start.Before(c.views.statsUntil) {
		held := c.views.held
		r := build()
		c.views.held = held // the tree view it took is counted in the whole
		c.views.stats, c.views.statsUntil = &r, c.views.reuseUntil(start, len(r.Nodes))
	}
	r := *c.views.stats
	r.Nodes = slices.Clone(r.Nodes)
	return r
}

// viewsHeld is how long the coordinator's lock has been held taking views.
func (c *coordinator) viewsHeld() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.views.held
}
