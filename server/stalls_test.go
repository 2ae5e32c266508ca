package main

import (
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestStallReportsOfLeftPeersAreForgotten: children that report the source
// stalled and leave, one after another, leave nothing behind once their
// reports are older than stallWindow. Before, the source's record kept one
// entry per reporter for the whole stream, peers long gone included: with
// the join rate, ~70 000 entries an hour from one address.
func TestStallReportsOfLeftPeersAreForgotten(t *testing.T) {
	// A short resume grace: each viewer's dropped connection is a viewer
	// that left once it is over (suspend.go).
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 4}, Resume: ResumeConfig{Grace: 50 * time.Millisecond}})
	_, srcID := join(t, url, protocol.RoleSource, protocol.KindGo, "st", 4)
	report := func() {
		v, id := join(t, url, protocol.RoleViewer, protocol.KindGo, "st", 0)
		waitFor(t, 10*time.Second, "the viewer under the source", func() bool { return parentOf(s, "st", id) == srcID })
		v.send(`{"type":"stalled","peer":"` + srcID + `"}`)
		co := s.hub.get("st")
		waitFor(t, 10*time.Second, "the report is recorded", func() bool {
			co.mu.Lock()
			defer co.mu.Unlock()
			_, ok := co.stalls[srcID][id]
			return ok
		})
		_ = v.conn.Close()
		waitFor(t, 10*time.Second, "the viewer left", func() bool { return parentOf(s, "st", id) == "" })
	}
	const churn = 30
	for range churn {
		report()
	}
	time.Sleep(stallWindow + 100*time.Millisecond) // the reports age past the window
	report()
	co := s.hub.get("st")
	co.mu.Lock()
	n := len(co.stalls[srcID])
	co.mu.Unlock()
	if n != 1 {
		t.Errorf("the source's stall record holds %d reporters after %d left, want the 1 recent one", n, churn)
	}
}
