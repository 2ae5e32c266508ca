package protocol

// Uplink is what a relay measured of its upload to its children over the
// last report interval, from their receiver reports (RTCP RR in Go; a
// browser's remote-inbound-rtp and candidate-pair stats). The server's
// capacity policy reads it: a relay whose children lose packets and see
// their round trip grow, most of them at once, is sending more than its
// upload carries (README "Capacity from measured uplink"). Zero means
// unknown. A relay can only lower its own capacity with these figures,
// never raise it above what it declared.
type Uplink struct {
	// Links is how many child links the figures cover: those whose
	// receiver reports arrived in the interval.
	Links int `json:"links,omitempty"`
	// Lossy is how many of them lost more than UplinkLossy of the packets
	// sent to them in the interval.
	Lossy int `json:"lossy,omitempty"`
	// Queued is how many of them saw their round trip exceed its lowest
	// by more than UplinkQueueMs: packets waiting in a queue on the way.
	Queued int `json:"queued,omitempty"`
	// Loss is the links' mean fraction of packets lost in the interval, 0–1.
	Loss float64 `json:"loss,omitempty"`
	// RTTMs is the links' mean round trip, from the receiver reports.
	RTTMs float64 `json:"rttMs,omitempty"`
	// SentKbps is what the relay sent to all its children in the interval.
	SentKbps float64 `json:"sentKbps,omitempty"`
	// EstimateKbps is the sender's own bandwidth estimate, where it has one
	// (Chromium's availableOutgoingBitrate, the best of its child links):
	// shown and logged, not judged (server/uplink.go says why).
	EstimateKbps float64 `json:"estimateKbps,omitempty"`
}

// Thresholds a relay judges each child link by, the same in Go and in
// browsers (static/js/protocol.js).
const (
	// UplinkLossy: a link that lost more than 2 % of its packets in an
	// interval. Random loss of a few percent on one path is normal and
	// repaired by NACK; an upload that cannot carry what it is sent drops
	// far more, on every link at once.
	UplinkLossy = 0.02
	// UplinkQueueMs: a round trip 40 ms above the link's lowest means a
	// queue on the way; a tail-drop queue at an upload cap (a home
	// router's, tc tbf's) adds its whole depth, typically 50-200 ms, once
	// full, while a long but steady path adds nothing.
	UplinkQueueMs = 40
)

func (u *Uplink) validate() error {
	if u.Links < 0 || u.Links > MaxCapacity || u.Lossy < 0 || u.Lossy > u.Links || u.Queued < 0 || u.Queued > u.Links {
		return invalid("stats: uplink link counts out of range")
	}
	if u.Loss < 0 || u.Loss > 1 || u.Loss != u.Loss {
		return invalid("stats: uplink loss out of range")
	}
	for _, v := range []float64{u.RTTMs, u.SentKbps, u.EstimateKbps} {
		if v < 0 || v > 1e12 || v != v {
			return invalid("stats: an uplink measure is out of range")
		}
	}
	return nil
}
