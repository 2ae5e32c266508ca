package main

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/ice/v4"

	"canopy/mesh"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestDemoOnOneUDPPort runs the built-in demo source with all its WebRTC
// traffic on one UDP port (-udp-port) and checks that viewers play it.
func TestDemoOnOneUDPPort(t *testing.T) {
	lightTest(t)
	srv, url := startServer(t, tree.Config{SourceCapacity: 4})
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
		runDemo(ctx, demoConfig{connect: func() mesh.Transport { return srv.LocalTransport(nil) }, stream: "demo", capacity: 4, loopbackOnly: true, udpMux: mux, log: testLogger()})
	}()
	defer func() { cancel(); <-done }()

	waitFor(t, 20*time.Second, "the demo is live", func() bool {
		var streams []streamInfo
		getJSON(t, url+"/api/streams", &streams)
		return len(streams) == 1 && streams[0].Live
	})
	// The demo's signaling is in-process: 127.0.0.1 holds no connection.
	if n := openConns(srv, "127.0.0.1:1"); n != 0 {
		t.Errorf("127.0.0.1 holds %d signaling connections with only the demo on; want 0", n)
	}
	var viewers []*testViewer
	for range 2 {
		viewers = append(viewers, startPeer(t, url, "demo", protocol.RoleViewer, 0, nil))
	}
	for _, v := range viewers {
		waitFor(t, 30*time.Second, "viewers play the demo", func() bool { f, _, _ := v.counts(); return f >= 30 })
	}
	if n := openConns(srv, "127.0.0.1:1"); n != 2 {
		t.Errorf("127.0.0.1 holds %d signaling connections with two viewers; want 2 (the viewers, not the demo)", n)
	}
}

// openConns is how many signaling connections the per-address limiter
// counts for addr's client key.
func openConns(s *Server, addr string) int {
	l := s.guard.ips
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.ips[clientKey(addr)]; st != nil {
		return st.conns
	}
	return 0
}

// TestDemoInChromium plays the demo, whose source is hosted in-process, in
// headless Chromium.
func TestDemoInChromium(t *testing.T) {
	browserTest(t)
	srv, url := startServer(t, tree.Config{SourceCapacity: 4})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runDemo(ctx, demoConfig{connect: func() mesh.Transport { return srv.LocalTransport(nil) },
			stream: "demo", capacity: 4, loopbackOnly: true, log: testLogger()})
	}()
	defer func() { cancel(); <-done }()
	bctx := newBrowser(t)
	if err := chromedp.Do(bctx, chromedp.Navigate(url+"/watch/demo")); err != nil {
		t.Fatal(err)
	}
	s := waitPlaying(t, bctx, 30, 45*time.Second)
	t.Logf("chromium: %+v", s)
}
