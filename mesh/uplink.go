package mesh

import (
	"time"

	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// uplinkMeter turns the children's receiver reports into the Uplink of
// each stats report: per child link, the packets it lost in the interval
// and whether its round trip rose above its lowest (a queue on the way),
// and what the node sent. The server judges the figures (README "Capacity
// from measured uplink"). Owned by the run goroutine.
type uplinkMeter struct {
	at      time.Time
	relayed uint64
	links   map[string]peer.LinkStats // per child, at the last report
}

// measure returns the figures since the last call, or nil with no child
// links to judge.
func (m *uplinkMeter) measure(now time.Time, relayed uint64, downs map[string]*peer.Downstream) *protocol.Uplink {
	if m.links == nil {
		m.links = make(map[string]peer.LinkStats)
	}
	for id := range m.links {
		if downs[id] == nil {
			delete(m.links, id)
		}
	}
	var u protocol.Uplink
	var rtt float64
	for id, d := range downs {
		cur := d.Link()
		prev := m.links[id]
		m.links[id] = cur
		exp := cur.Expected - prev.Expected
		if cur.Reports == prev.Reports || cur.Expected <= prev.Expected {
			continue // no report in the interval, or nothing sent
		}
		var lost uint64
		if cur.Lost > prev.Lost {
			lost = cur.Lost - prev.Lost // less: late packets and repairs made up for earlier loss
		}
		loss := min(float64(lost)/float64(exp), 1)
		u.Links++
		u.Loss += loss
		if loss > protocol.UplinkLossy {
			u.Lossy++
		}
		if cur.RTT > 0 && cur.RTT-cur.MinRTT > protocol.UplinkQueueMs*time.Millisecond {
			u.Queued++
		}
		rtt += float64(cur.RTT) / float64(time.Millisecond)
	}
	dt := now.Sub(m.at)
	sent := relayed - m.relayed
	first := m.at.IsZero()
	m.at, m.relayed = now, relayed
	if u.Links == 0 {
		return nil
	}
	u.Loss /= float64(u.Links)
	u.RTTMs = rtt / float64(u.Links)
	if !first && dt > 0 {
		u.SentKbps = float64(sent) * 8 / dt.Seconds() / 1000
	}
	return &u
}
