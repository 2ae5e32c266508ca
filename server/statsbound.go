package main

import (
	"time"

	"canopy/mesh/protocol"
)

// Physical bounds on what one peer may report. A peer's stats are its own
// word: without bounds one report of 2^64-1 bytes wraps the byte counters,
// forces the peer efficiency to 1 and leaves years of stall on the
// dashboard. Each is generous, so an honest peer never meets it.
const (
	// maxPeerByteRate is what one peer receives, or relays to one child,
	// at most: 100 Mbit/s, 25× a 4 Mbit/s 1080p stream.
	maxPeerByteRate = 100e6 / 8
	// maxPeerPacketRate is 100 Mbit/s in 625-byte packets.
	maxPeerPacketRate = 20000
	// maxPeerFrameRate is four times 60 frames per second.
	maxPeerFrameRate = 240
	// maxPeerCheckedRate is the frames a viewer checks per second, video
	// and audio (Opus sends 50): four times 60 + 50.
	maxPeerCheckedRate = 4 * (60 + 50)
	// budgetBurst is how much time at the maximum rate one report may
	// claim at once. A peer reports every 5 s, but a background tab's
	// timers fire once a minute (Chromium's intensive throttling), and
	// reports queue in a socket.
	budgetBurst = 2 * time.Minute
	// stallBeforeHello is the stall a first report may carry: a peer that
	// reconnects has often stalled in the gap, before this connection.
	stallBeforeHello = 10 * time.Second
	// maxReportedKbps bounds the rates a peer states (bitrateKbps, and
	// relayBitrateKbps per child).
	maxReportedKbps = 100e3
	// maxJitterMs and maxDelayMs: beyond them the figure means a broken
	// clock, not a live stream.
	maxJitterMs = 10e3
	maxDelayMs  = 60e3
	// firstFrameSlack is how much earlier than its hello a peer's clock
	// may start: it counts from before its WebSocket dial.
	firstFrameSlack = 10 * time.Second
)

// Figures of a stats report, in the order of figureNames: the label of
// canopy_stats_rejected_total.
const (
	figBytesReceived = iota
	figPacketsReceived
	figPacketsLost
	figBytesRelayed
	figPacketsRelayed
	figFramesDecoded
	figFramesVerified
	figFramesRejected
	figStall
	figFirstFrame
	figBitrate
	figRelayBitrate
	figJitter
	figDelay
	numFigures
)

var figureNames = [numFigures]string{
	"bytes_received", "packets_received", "packets_lost", "bytes_relayed", "packets_relayed",
	"frames_decoded", "frames_verified", "frames_rejected", "stall", "first_frame", "bitrate", "relay_bitrate", "jitter", "delay",
}

// rejections counts, per figure, the reports whose figure was dropped.
type rejections [numFigures]uint64

// peerBudget bounds one peer's counters: each counter has an allowance
// that fills at its maximum rate (relayed ones once per child the tree
// gives the peer) up to budgetBurst of it, and a report's increase is
// credited only if the allowance covers it. A counter that went backwards
// restarted (a new media session), so its new value is the increase.
//
// A peer's counters may start before its connection: a browser keeps them
// across signaling reconnects, and those bytes were credited to its
// previous connection. So what the first report holds beyond the
// allowance is its baseline, neither credited nor counted as rejected.
// Stall alone starts with an allowance, stallBeforeHello.
type peerBudget struct {
	at       time.Time
	reported bool
	children int
	level    [figStall + 1]float64
	raw      protocol.Stats // the last report as sent
	acc      protocol.Stats // the counters as credited
}

// rate is figure f's maximum per second with n children.
func counterRate(f, children int) float64 {
	switch f {
	case figBytesReceived:
		return maxPeerByteRate
	case figPacketsReceived, figPacketsLost:
		return maxPeerPacketRate
	case figBytesRelayed:
		return maxPeerByteRate * float64(children)
	case figPacketsRelayed:
		return maxPeerPacketRate * float64(children)
	case figFramesDecoded:
		return maxPeerFrameRate
	case figFramesVerified, figFramesRejected:
		return maxPeerCheckedRate
	case figStall:
		return 1000 // ms of stall per second
	}
	return 0
}

// refill adds the allowances earned since the last refill.
func (b *peerBudget) refill(now time.Time) {
	if b.at.IsZero() {
		b.at = now
		b.level[figStall] = counterRate(figStall, 1) * stallBeforeHello.Seconds()
		return
	}
	dt := now.Sub(b.at).Seconds()
	if dt <= 0 {
		return
	}
	b.at = now
	for f := range b.level {
		r := counterRate(f, b.children)
		b.level[f] = min(b.level[f]+r*dt, counterRate(f, max(b.children, 1))*budgetBurst.Seconds())
	}
}

// setChildren records a change in the peer's children, the allowances
// earned so far at the old count.
func (b *peerBudget) setChildren(now time.Time, n int) {
	b.refill(now)
	b.children = max(n, 0)
}

// bound returns what the server credits of report s, received at now
// from a peer that joined at joined, and counts each figure it drops in
// rej: counters within their allowance, rates and delays within reason.
func (b *peerBudget) bound(s protocol.Stats, now, joined time.Time, rej *rejections) protocol.Stats {
	b.refill(now)
	first := !b.reported
	b.reported = true
	counter := func(f int, raw *uint64, last, acc *uint64) {
		d := *raw
		if *raw >= *last {
			d = *raw - *last
		}
		*last = *raw
		if float64(d) <= b.level[f] {
			b.level[f] -= float64(d)
			*acc += d
		} else if !first {
			rej[f]++
		}
		*raw = *acc
	}
	counter(figBytesReceived, &s.BytesReceived, &b.raw.BytesReceived, &b.acc.BytesReceived)
	counter(figPacketsReceived, &s.PacketsReceived, &b.raw.PacketsReceived, &b.acc.PacketsReceived)
	counter(figPacketsLost, &s.PacketsLost, &b.raw.PacketsLost, &b.acc.PacketsLost)
	counter(figBytesRelayed, &s.BytesRelayed, &b.raw.BytesRelayed, &b.acc.BytesRelayed)
	counter(figPacketsRelayed, &s.PacketsRelayed, &b.raw.PacketsRelayed, &b.acc.PacketsRelayed)
	counter(figFramesDecoded, &s.FramesDecoded, &b.raw.FramesDecoded, &b.acc.FramesDecoded)
	counter(figFramesVerified, &s.FramesVerified, &b.raw.FramesVerified, &b.acc.FramesVerified)
	counter(figFramesRejected, &s.FramesRejected, &b.raw.FramesRejected, &b.acc.FramesRejected)

	// Stall is a float of milliseconds: the same allowance, one second of
	// stall per second.
	d := s.StallMs
	if s.StallMs >= b.raw.StallMs {
		d = s.StallMs - b.raw.StallMs
	}
	b.raw.StallMs = s.StallMs
	if d <= b.level[figStall] {
		b.level[figStall] -= d
		b.acc.StallMs += d
	} else if !first {
		rej[figStall]++
	}
	s.StallMs = b.acc.StallMs

	gauge := func(f int, v *float64, ok bool) {
		if !ok {
			*v = 0 // unknown, as the protocol spells it
			rej[f]++
		}
	}
	gauge(figFirstFrame, &s.FirstFrameMs, s.FirstFrameMs <= ms(now.Sub(joined)+firstFrameSlack))
	gauge(figBitrate, &s.BitrateKbps, s.BitrateKbps <= maxReportedKbps)
	gauge(figRelayBitrate, &s.RelayBitrateKbps, s.RelayBitrateKbps <= maxReportedKbps*float64(max(b.children, 1)))
	gauge(figJitter, &s.JitterMs, s.JitterMs <= maxJitterMs)
	gauge(figDelay, &s.DelayMs, s.DelayMs >= 0 && s.DelayMs <= maxDelayMs)
	return s
}
