package main

import (
	"time"

	"canopy/mesh/protocol"
)

// Capacity from measured uplink (README "Capacity from measured uplink").
// A peer's declared capacity is the upper bound (its owner's consent, a
// metered link); trust bounds it further (trust.go); and what the peer's
// upload is measured to sustain bounds it last. Each stats report of a
// relay with children carries its Uplink: per child link, the packets lost
// in the interval and whether the round trip rose above its lowest. When
// most links lose packets and queue at once, the relay sends more than its
// upload carries: the server bounds it to the copies of the stream that
// got through, children × (1 − loss), and always at least one fewer than
// it feeds. It sheds children (make before break: each keeps its old feed
// until it plays from its new parent, or moves onto its hot standby link),
// and, bounded to none, moves down the tree (tree.SetSustain). A bounded
// relay whose reports stay clean while it feeds all it may gets one more
// child at a time, up to what it declared, after a wait that doubles
// each time a raise ends limited again.
//
// A peer can only lower its own capacity with these figures: no report
// raises it above its declaration, so a lying relay gains nothing.

const (
	// uplinkShedLoss: one report this lossy sheds at once; a milder one
	// (over protocol.UplinkLossy on most links) must repeat, two reports
	// (10 s) in a row, so that one burst of loss elsewhere does not move
	// anybody.
	uplinkShedLoss = 0.10
	uplinkShedRuns = 2
	// uplinkRaiseAfter is how long a bounded relay's reports must stay
	// clean, while it feeds as many children as it may, before it may
	// take one more: six reports. Each raise that ends limited again
	// doubles the wait, up to uplinkRaiseMax, so a relay at its limit
	// probes past it rarely.
	uplinkRaiseAfter = 30 * time.Second
	uplinkRaiseMax   = 8 * time.Minute
	// uplinkSettle ignores limited reports for a while after the bound
	// changed: a shed child keeps its old feed until it plays from its new
	// parent (a second or two), so the next report still covers it.
	uplinkSettle = 7 * time.Second
)

// uplinkState is the coordinator's record of one relay's measured upload.
// Guarded by the coordinator's mu.
type uplinkState struct {
	bound   int           // children its upload sustains; -1: no bound
	runs    int           // limited reports in a row
	changed time.Time     // when the bound last changed
	wait    time.Duration // clean time before the next raise
	probing bool          // the last change was a raise
}

// uplinkLimited reports whether a relay's children show its upload full:
// most of its links lost packets and queued in the same interval. A
// browser's bandwidth estimate is logged, not judged: Chromium starts
// every link at 300 kbit/s and a pass-through sender, which cannot lower
// its bitrate, only raises it as it probes, so a new child's link reads
// "too slow" for seconds while it carries the stream fine.
func uplinkLimited(u *protocol.Uplink, children int) bool {
	if u == nil || u.Links == 0 || children == 0 {
		return false
	}
	return u.Lossy*2 > u.Links && u.Queued*2 > u.Links
}

// uplinkSustain is how many children a limited relay's upload carried:
// the copies of the stream that got through, at most one fewer than it
// feeds.
func uplinkSustain(u *protocol.Uplink, children int) int {
	k := int(float64(children) * (1 - u.Loss))
	return max(min(k, children-1), 0)
}

// onUplink weighs a relay's stats report. Called with c.mu held.
func (c *coordinator) onUplink(id string, s *protocol.Stats) {
	if c.source != nil && id == c.source.id {
		return // the source's slots are the stream's only way in (tree.SetSustain)
	}
	if c.uplinks == nil {
		c.uplinks = make(map[string]*uplinkState)
	}
	st := c.uplinks[id]
	if st == nil {
		st = &uplinkState{bound: -1, wait: uplinkRaiseAfter}
		c.uplinks[id] = st
	}
	now := time.Now()
	if uplinkLimited(s.Uplink, s.Children) {
		if now.Sub(st.changed) < uplinkSettle {
			return
		}
		st.runs++
		k := uplinkSustain(s.Uplink, s.Children)
		if k >= c.tree.Usable(id) || (st.runs < uplinkShedRuns && s.Uplink.Loss < uplinkShedLoss) {
			return
		}
		if st.probing {
			st.wait = min(2*st.wait, uplinkRaiseMax) // the last raise did not hold
		}
		st.changed, st.probing, st.runs = now, false, 0
		st.bound = c.setSustain(id, k, s)
		return
	}
	st.runs = 0
	if now.Sub(st.changed) < st.wait {
		return
	}
	if st.probing { // clean for a whole wait since the last raise: it held
		st.probing, st.wait = false, uplinkRaiseAfter
	}
	if st.bound < 0 || s.Children < st.bound {
		return // no bound, or it has not shown it carries what it may now
	}
	st.bound++
	st.changed, st.probing = now, true
	if st.bound >= c.tree.Capacity(id) {
		st.bound = -1 // its declaration again; still probing, until that holds
	}
	st.bound = c.setSustain(id, st.bound, s)
}

// setSustain applies a new bound and signals the moves, preferring each
// shed child's standby parent, and returns the bound applied: more than k
// where the children it would shed have nowhere to go (tree.SetSustain).
// Called with c.mu held.
func (c *coordinator) setSustain(id string, k int, s *protocol.Stats) int {
	changes, err := c.tree.SetSustain(id, k)
	if err != nil {
		c.log.Warn("set sustain", "peer", id, "sustain", k, "err", err)
		return -1
	}
	u := s.Uplink
	if u == nil {
		u = &protocol.Uplink{}
	}
	c.log.Info("capacity from measured uplink", "peer", id, "sustain", c.tree.Sustain(id), "measured", k, "usable", c.tree.Usable(id),
		"declared", c.tree.Capacity(id), "children", s.Children, "loss", u.Loss, "lossy", u.Lossy,
		"queued", u.Queued, "links", u.Links, "rttMs", u.RTTMs, "sentKbps", u.SentKbps, "moves", len(changes))
	c.apply(c.preferStandbys(changes))
	c.replanStandbys(nil, c.heldBy(id)...)
	return c.tree.Sustain(id)
}
