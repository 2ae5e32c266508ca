package main

import (
	"time"

	"canopy/mesh/tree"
)

// standbyCoalesce is how long the standby re-plans of joins, of live
// reports, and of trust changes that only open slots, wait to be made
// together. (Trust's were made at once for a while, after
// TestLoadHarnessShort saw a real viewer moved below simulated relays with
// them batched: the harness's fault, fixed since, its real viewers joined as
// viewers, which a joining relay may displace until a child plays from
// them.) A standby is a hint its child checks
// (the server stays authoritative: tree.LeaveVia and tree.Adopt refuse a
// link that no longer fits), so a plan a few tens of ms old is as good;
// making one per join planned the new parent's and grandparent's
// departures every time, 55 % of the server's CPU on a 4 000-peer ramp at
// 400 joins/s (README "Load"), while one plan per family per tick serves
// every join of that tick.
const standbyCoalesce = 25 * time.Millisecond

// standbyBatchRetries bounds the peers without a standby one batched plan
// retries: standbyRetries for each re-plan folded into it, as when each
// was made at once, up to this many (their plans are memoized per family,
// and the wanting peers of a ramp share a few; with 64 a 4 000-peer
// ramp of BenchmarkCoordinatorRamp batched by 100 ended with 304 standby
// links instead of 386, with 512 with 352).
const standbyBatchRetries = 32 * standbyRetries

// replanStandbys gives each peer the tree's changes may have affected the
// standby it should have, and tells both sides of every edge that changes:
// the child first (`standby` with its standby parent), so that it expects
// the parent's offer, then the parent (`standby` with the child). Affected
// are the nodes that moved and their children (their parent's departure
// plan changed), the old and new parents' children (siblings: the heir and
// free slots changed) and the old and new parents' siblings (their parent's
// heir may have changed), the children whose standby parent gained a child
// (it may be full now) and the ancestors of every new parent (a standby of
// theirs may now be their descendant).
//
// Within a join, a live report or a trust change that only opens slots
// (standbyLinks.batch) the affected peers are only marked, and planned together within standbyCoalesce, as long as
// every standby record still holds the rules (standbyStillValid): a record
// the change broke is planned again at once, with everything marked
// before. Any other re-plan (a departure, a capacity change, a move that
// ended) is made at once, with everything marked before. Called with c.mu
// held.
func (c *coordinator) replanStandbys(changes []tree.Change, extra ...string) {
	c.markStandbys(changes, extra...)
	if c.standby.batch && c.standby.delay > 0 && c.standbyStillValid(changes, extra) {
		c.scheduleStandbys()
		return
	}
	c.flushStandbys()
}

// markStandbys adds the peers changes and extra may have affected to the
// next plan (see replanStandbys). Called with c.mu held.
func (c *coordinator) markStandbys(changes []tree.Change, extra ...string) {
	s := &c.standby
	if s.dirty == nil {
		s.dirty = make(map[string]bool)
	}
	todo := s.dirty
	add := func(ids ...string) {
		for _, id := range ids {
			if id != "" {
				todo[id] = true
			}
		}
	}
	s.marks++
	add(extra...)
	for _, ch := range changes {
		add(ch.Node)
		add(c.tree.Children(ch.Node)...)
		for _, p := range []string{ch.From, ch.To} {
			if p == "" {
				continue
			}
			add(c.tree.Children(p)...)
			for k := range s.held[p] {
				add(k)
			}
			// p's subtree grew or shrank, and its parent's departure plan
			// picks the heir by subtree: p's siblings' standbys may change
			// (a sibling planned into the parent's only slot while p, now
			// heavier, is the heir found both orphans sharing that slot).
			// Only for small families: that is every browser's, and a wide
			// Go relay's plan is one more departure plan per join (it
			// doubled the cost of a join among 20 000 Go peers).
			if gp, ok := c.tree.Parent(p); ok && gp != "" && gp != c.tree.Source() {
				if sibs := c.tree.Children(gp); len(sibs) <= standbySiblingReplan {
					add(sibs...)
				}
			}
		}
		hops := 0
		for a, ok := ch.To, ch.To != ""; ok && a != "" && hops < standbyAncestorWalk; a, ok = c.tree.Parent(a) {
			if s.of[a] != "" {
				add(a)
			}
			hops++
		}
	}
}

// standbyStillValid reports whether every standby record changes and extra
// could have touched still holds the rules checkStandbys tests: a moved
// peer's standby is not its new parent and it is placed; a peer left
// without a place holds no standby links; no new parent's ancestor has its
// standby inside its own subtree now; and no parent the changes touched
// holds more links than its slots allow. Then the records may wait for
// the batched plan. Called with c.mu held.
func (c *coordinator) standbyStillValid(changes []tree.Change, extra []string) bool {
	s := &c.standby
	within := func(id string) bool {
		return id == "" || len(s.held[id]) <= standbyPerSlot*c.tree.Capacity(id)
	}
	for _, id := range extra {
		if !within(id) {
			return false
		}
	}
	for _, ch := range changes {
		if sb := s.of[ch.Node]; sb != "" && (ch.To == "" || sb == ch.To) {
			return false
		}
		if ch.To == "" && len(s.held[ch.Node]) > 0 {
			return false
		}
		if !within(ch.Node) || !within(ch.From) || !within(ch.To) {
			return false
		}
		hops := 0
		for a, ok := ch.To, ch.To != ""; ok && a != "" && hops < standbyAncestorWalk; a, ok = c.tree.Parent(a) {
			if sb := s.of[a]; sb != "" && c.tree.Under(sb, a) {
				return false
			}
			hops++
		}
	}
	return true
}

// scheduleStandbys makes sure a batched plan runs within standbyCoalesce.
// Called with c.mu held.
func (c *coordinator) scheduleStandbys() {
	if c.standby.timer != nil {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(c.standby.delay, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.standby.timer != t {
			return // flushed meanwhile; a later timer is this batch's
		}
		c.standby.timer = nil
		if !c.removed {
			c.flushStandbys()
		}
	})
	c.standby.timer = t
}

// flushStandbys plans every marked peer's standby now, then retries some
// of the peers that had none. Called with c.mu held.
func (c *coordinator) flushStandbys() {
	s := &c.standby
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	todo, marks := s.dirty, s.marks
	s.dirty, s.marks = nil, 0
	plans := make(standbyPlans)
	for id := range todo {
		c.restandby(id, c.planStandby(id, plans))
	}
	retries, limit := 0, min(standbyRetries*max(marks, 1), standbyBatchRetries)
	for id := range s.wanting {
		if retries == limit {
			break
		}
		if !todo[id] {
			retries++
			c.restandby(id, c.planStandby(id, plans))
		}
	}
}

// batchStandbys makes the standby re-plans of what runs until the returned
// end wait for the next batched plan (replanStandbys). Called with c.mu
// held; end too.
func (c *coordinator) batchStandbys() (end func()) {
	was := c.standby.batch
	c.standby.batch = true
	return func() { c.standby.batch = was }
}
