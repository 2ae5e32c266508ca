// Package impair holds Canopy's impairment tests: the real server binary
// and real pion peers, each in a network namespace of its own joined by a
// bridge, with tc shaping the links between them (tbf caps a relay's
// upload; netem adds loss and delay on a hop). They need root and
// iproute2; they skip without them, and fail instead under CI=true. The
// package has no code of its own: its tests build and run the server
// binary, and run their peers as copies of the test binary (peer_test.go)
// or as real headless Chromium browsers (browser_test.go, which also need
// Chromium) inside the namespaces.
package impair
