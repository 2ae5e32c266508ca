package peer

import (
	"sync"
	"time"

	"github.com/pion/rtcp"
)

// LinkStats is what a child's receiver reports (RTCP RR) said of its link
// since the Downstream was made, over every track: the upload as the child
// sees it. A relay compares two readings to judge an interval (mesh's
// uplink meter).
type LinkStats struct {
	Reports  uint64        // reception reports read, all tracks
	Expected uint64        // packets the child expected: its highest sequence number's advance
	Lost     uint64        // packets it counts lost (net of late arrivals and repairs)
	RTT      time.Duration // the latest round trip, from the reports' LSR and DLSR; 0: none yet
	MinRTT   time.Duration // the lowest round trip so far: the path without queueing
}

// rrState is one track's record of its child's reception reports.
type rrState struct {
	mu          sync.Mutex
	reports     uint64
	first, high uint32 // extended highest sequence numbers: the first report's, the latest
	firstLost   uint32
	lost        uint32
	rtt, minRTT time.Duration
}

// onReport records the reception report about ssrc in rr, if any, read at
// now. The round trip is now less the time the child held our last sender
// report (DLSR) less when we sent it (LSR): pion's sender interceptor
// stamps its reports with this host's wall clock, as now is.
func (s *rrState) onReport(rr *rtcp.ReceiverReport, ssrc uint32, now time.Time) {
	for _, r := range rr.Reports {
		if r.SSRC != ssrc {
			continue
		}
		s.mu.Lock()
		if s.reports == 0 {
			s.first, s.firstLost = r.LastSequenceNumber, r.TotalLost
		}
		s.reports++
		// A report out of order (an older highest) changes nothing.
		if int32(r.LastSequenceNumber-s.high) >= 0 || s.reports == 1 {
			s.high, s.lost = r.LastSequenceNumber, r.TotalLost
		}
		if r.LastSenderReport != 0 {
			if d := int32(compactNTP(now) - r.LastSenderReport - r.Delay); d >= 0 {
				rtt := time.Duration(int64(d) * int64(time.Second) >> 16)
				s.rtt = rtt
				if s.minRTT == 0 || rtt < s.minRTT {
					s.minRTT = rtt
				}
			}
		}
		s.mu.Unlock()
	}
}

// add folds this track's record into st.
func (s *rrState) add(st *LinkStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reports == 0 {
		return
	}
	st.Reports += s.reports
	st.Expected += uint64(s.high - s.first)
	// TotalLost is 24 bits, and goes down when late packets arrive.
	if lost := int32(s.lost-s.firstLost) << 8 >> 8; lost > 0 {
		st.Lost += uint64(lost)
	}
	st.RTT = max(st.RTT, s.rtt)
	if s.minRTT != 0 && (st.MinRTT == 0 || s.minRTT < st.MinRTT) {
		st.MinRTT = s.minRTT
	}
}

// compactNTP is the middle 32 bits of t's NTP timestamp (RFC 3550 §6.4.1):
// seconds since 1900 in the high 16 bits, the fraction in the low 16.
func compactNTP(t time.Time) uint32 {
	secs := uint64(t.Unix()) + 2208988800
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return uint32((secs<<32 | frac) >> 16)
}

// Link returns what the child's receiver reports said of this connection.
func (d *Downstream) Link() LinkStats {
	var st LinkStats
	for _, t := range d.tracks {
		t.rr.add(&st)
	}
	return st
}
