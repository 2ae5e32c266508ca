package main

import (
	"fmt"
	"net/http"
	"testing"

	"canopy/mesh/peer"
	"canopy/mesh/tree"
)

// TestWHEPPostsPayTheJoinRate: WHIP and WHEP POSTs are charged to the
// address's join bucket, as /ws joins are. Before, the quota of sessions
// bounded only what an address held at once: POST and DELETE in a loop
// made the server build PeerConnections as fast as it could answer.
func TestWHEPPostsPayTheJoinRate(t *testing.T) {
	const burst = 4
	_, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2}, Hosted: peer.Config{LoopbackOnly: true},
		Limits: Limits{JoinRate: 0.001, JoinBurst: burst}})
	startSource(t, url, "show", 2) // one /ws join from 127.0.0.1
	for i := range burst - 1 {
		p := newWHEPClient(t, nil)
		if code, body := p.watch(url, "show", ""); code != http.StatusCreated {
			t.Fatalf("POST /whep %d of the burst: %d %s", i+1, code, body)
		}
		if resp, _ := post(t, http.MethodDelete, p.location, "", "", ""); resp.StatusCode != http.StatusOK {
			t.Fatalf("DELETE: %d", resp.StatusCode)
		}
	}
	resp, body := post(t, http.MethodPost, url+"/whep/show", "application/sdp", "", whepOfferOf(t, newWHEPClient(t, nil)))
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("POST /whep past the join burst: %d %q, want 429 with Retry-After", resp.StatusCode, body[:min(len(body), 120)])
	}
	if code, body := newWHIPClient(t).publish(url, "other", ""); code != http.StatusTooManyRequests {
		t.Errorf("POST /whip past the join burst: %d %q, want 429", code, body[:min(len(body), 120)])
	}
}

// TestWHEPPlayersTakePeerSlots: every WHEP player is a PeerConnection the
// server feeds from its own uplink, so it takes one of the -max-peers
// slots; past them a player gets 503, and a slot freed by DELETE serves
// the next. Before, only the WHEP relay node took a slot: players from
// many addresses were uncapped.
func TestWHEPPlayersTakePeerSlots(t *testing.T) {
	lightTest(t)
	// The source, the server's WHEP relay node and one player.
	_, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2}, Hosted: peer.Config{LoopbackOnly: true},
		Limits: Limits{MaxPeers: 3}})
	startSource(t, url, "show", 2)
	first := newWHEPClient(t, nil)
	if code, body := first.watch(url, "show", ""); code != http.StatusCreated {
		t.Fatalf("first player: %d %s", code, body)
	}
	resp, body := post(t, http.MethodPost, url+"/whep/show", "application/sdp", "", whepOfferOf(t, newWHEPClient(t, nil)))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a player past -max-peers: %d %q, want 503 with Retry-After", resp.StatusCode, body[:min(len(body), 120)])
	}
	if resp, _ := post(t, http.MethodDelete, first.location, "", "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	if code, body := newWHEPClient(t, nil).watch(url, "show", ""); code != http.StatusCreated {
		t.Errorf("a player after one left: %d %s, want 201", code, body)
	}
}

// TestWHIPICERestartsAreBudgeted: each ICE restart re-applies the offer
// and gathers the server's candidates again; a session gets restartBurst
// in a row, then 429. Before, a PATCH loop with fresh credentials had the
// server gather (and ask its STUN servers) as fast as it could.
func TestWHIPICERestartsAreBudgeted(t *testing.T) {
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	obs := newWHIPClient(t)
	if code, body := obs.publish(url, "restarts", ""); code != http.StatusCreated {
		t.Fatalf("POST: %d %s", code, body)
	}
	const burst = 3 // whip.restartBurst
	for i := range burst + 1 {
		frag := fmt.Sprintf("a=ice-ufrag:rst%d\r\na=ice-pwd:restartrestartrestart%04d\r\n", i, i)
		resp, body := post(t, http.MethodPatch, obs.location, "application/trickle-ice-sdpfrag", "", frag, "If-Match", "*")
		want := http.StatusOK
		if i == burst {
			want = http.StatusTooManyRequests
		}
		if resp.StatusCode != want {
			t.Fatalf("ICE restart %d: %d %q, want %d", i+1, resp.StatusCode, body[:min(len(body), 120)], want)
		}
	}
}
