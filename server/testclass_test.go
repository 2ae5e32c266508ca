package main

import (
	"flag"
	"sync"
	"testing"
)

// The server package's tests fall into three classes, so that go test
// ./... stays near 10 minutes on 2 cores without one test's load
// distorting another's timing:
//
//   - Tests that measure or bound time (stalls, first frames, budgets,
//     CPU) and tests known to be sensitive to load run alone, first: they
//     call neither helper below.
//   - Tests that mostly wait (rate limits, grace periods, pion peers on
//     loopback: a few % of a core each) call lightTest and run up to
//     lightSlots at once.
//   - Browser tests (a Chromium uses a core while it starts and decodes)
//     call browserTest and run up to browserSlots at once, beside the
//     light tests; those that relay through Firefox between two other
//     browsers call heavyBrowserTest and take every browser slot.
//
// go test's own -parallel would cap both classes together, so TestMain
// raises it unless it was given, and the slots below do the capping.
const (
	lightSlots   = 6
	browserSlots = 2
)

var (
	lightPool   = make(chan struct{}, lightSlots)
	browserPool = make(chan struct{}, browserSlots)
)

// lightTest runs t in parallel with the other light and browser tests.
func lightTest(t *testing.T) { inPool(t, lightPool) }

// browserTest runs t in parallel with the light tests and at most
// browserSlots-1 other browser tests.
func browserTest(t *testing.T) { inPool(t, browserPool) }

// heavyBrowserTest runs t beside the light tests only: a Firefox that
// relays between other browsers (three browsers, one of them Firefox, whose
// start costs more than a Chromium's) next to another browser test starved
// its relaying on CI's 2 cores for 10 s (TestMixedBrowsersPassthroughBelowFirefox:
// its child moved off it).
func heavyBrowserTest(t *testing.T) {
	t.Helper()
	t.Parallel()
	heavyMu.Lock() // one heavy test gathers the slots at a time: no two hold half each
	for range browserSlots {
		browserPool <- struct{}{}
	}
	heavyMu.Unlock()
	t.Cleanup(func() {
		for range browserSlots {
			<-browserPool
		}
	})
}

var heavyMu sync.Mutex

func inPool(t *testing.T, pool chan struct{}) {
	t.Helper()
	t.Parallel()
	pool <- struct{}{}
	t.Cleanup(func() { <-pool }) // registered first, so it runs after the test's own cleanups
}

// raiseParallel lifts -test.parallel above the pools' sizes unless the
// command line set it, and go test's default timeout above what this
// package takes.
func raiseParallel() {
	if !flag.Parsed() {
		flag.Parse()
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", "64")
	}
	// go test passes -test.timeout=10m0s when it was given no -timeout,
	// and this package's end-to-end tests take 10-11 minutes on 2 cores
	// (README "Test it"): plain `go test ./...` would panic at 10 minutes
	// on a machine like CI's. That default becomes 30m; any other value
	// stands.
	if f := flag.Lookup("test.timeout"); f != nil && f.Value.String() == "10m0s" {
		_ = flag.Set("test.timeout", "30m")
	}
}
