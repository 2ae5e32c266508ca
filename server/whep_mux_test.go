package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/pion/ice/v4"

	"canopy/mesh/peer"
	"canopy/mesh/tree"
)

// TestWHEPOnOneUDPPort plays WHIP and WHEP sessions with the hosted
// connections on one UDP port, as -udp-port runs them. The WHEP relay's
// parent is the WHIP source, both hosted: their link runs on loopback
// sockets of its own (mesh.Config.LocalPeer), since two ICE agents on one
// mux socket never reach each other (before, no player ever played).
func TestWHEPOnOneUDPPort(t *testing.T) {
	lightTest(t)
	mux, err := peer.NewUDPMuxFromPort(0, // as main does for -udp-port
		ice.UDPMuxFromPortWithLoopback(),
		ice.UDPMuxFromPortWithNetworks(ice.NetworkTypeUDP4),
		ice.UDPMuxFromPortWithInterfaceFilter(func(n string) bool { return n == "lo" }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mux.Close() })
	_, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2},
		Hosted: peer.Config{LoopbackOnly: true, UDPMux: mux}})
	obs := newWHIPClient(t)
	if code, body := obs.publish(url, "mux", ""); code != http.StatusCreated {
		t.Fatalf("POST /whip: %d %s", code, body)
	}
	obs.play(h264Clip)
	var players []*whepClient
	for range 3 {
		p := newWHEPClient(t, obs.src)
		if code, body := p.watch(url, "mux", ""); code != http.StatusCreated {
			t.Fatalf("POST /whep: %d %s", code, body)
		}
		players = append(players, p)
	}
	for _, p := range players {
		waitFor(t, 30*time.Second, "WHEP players on the one-port mux play", func() bool { f, _, _ := p.counts(); return f >= 60 })
	}
}
