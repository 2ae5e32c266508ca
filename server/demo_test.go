package main

import (
	"context"
	"testing"
	"time"

	"github.com/pion/ice/v4"

	"canopy/mesh/peer"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestDemoOnOneUDPPort runs the built-in demo source with all its WebRTC
// traffic on one UDP port (-udp-port) and checks that viewers play it.
func TestDemoOnOneUDPPort(t *testing.T) {
	_, url := startServer(t, tree.Config{SourceCapacity: 4})
	mux, err := peer.NewUDPMuxFromPort(0, // as main does for -udp-port
		ice.UDPMuxFromPortWithLoopback(),
		ice.UDPMuxFromPortWithNetworks(ice.NetworkTypeUDP4),
		ice.UDPMuxFromPortWithInterfaceFilter(func(n string) bool { return n == "lo" }))
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	if addrs := mux.GetListenAddresses(); len(addrs) != 1 {
		t.Fatalf("mux listens on %v, want one loopback address", addrs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runDemo(ctx, demoConfig{server: url, stream: "demo", capacity: 4, loopbackOnly: true, udpMux: mux, log: testLogger()})
	}()
	defer func() { cancel(); <-done }()

	waitFor(t, 20*time.Second, "the demo is live", func() bool {
		var streams []streamInfo
		getJSON(t, url+"/api/streams", &streams)
		return len(streams) == 1 && streams[0].Live
	})
	var viewers []*testViewer
	for range 2 {
		viewers = append(viewers, startPeer(t, url, "demo", protocol.RoleViewer, 0, nil))
	}
	for _, v := range viewers {
		waitFor(t, 30*time.Second, "viewers play the demo", func() bool { f, _, _ := v.counts(); return f >= 30 })
	}
}
