package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"canopy/mesh/peer"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// withCandidate adds a candidate line to every media section of an offer.
func withCandidate(offer, cand string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(offer, "\n") {
		b.WriteString(l)
		if strings.HasPrefix(l, "a=mid:") {
			b.WriteString("a=" + cand + "\r\n")
		}
	}
	return b.String()
}

// TestWHIPWHEPIgnoreHostileCandidates: a WHIP publisher and a WHEP player
// that name a UDP port of the server's own, in their offers and in trickle
// PATCHes, never make the server send STUN there, and still connect.
func TestWHIPWHEPIgnoreHostileCandidates(t *testing.T) {
	lightTest(t)
	trap := newSTUNTrap(t)
	policy := newCandidatePolicy(true, trap.port()) // the trap stands for the server's TURN or mux port
	_, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2},
		Hosted: peer.Config{LoopbackOnly: true, RemoteCandidateFilter: policy.allow}})
	bogus := fmt.Sprintf("candidate:666 1 udp 2130706431 127.0.0.1 %d typ host", trap.port())
	frag := func(sdp string) string {
		return "a=ice-ufrag:" + iceUfragOf(sdp) + "\r\na=ice-pwd:" + icePwdOf(sdp) + "\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=" + bogus + "\r\n"
	}

	obs := newWHIPClient(t)
	offer := withCandidate(obs.offer(), bogus)
	resp, body := post(t, http.MethodPost, url+"/whip/trap", "application/sdp", "", offer)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /whip: %d %s", resp.StatusCode, body)
	}
	obs.location = url + resp.Header.Get("Location")
	if err := obs.pc.SetRemoteDescription(webrtcAnswerOf(body)); err != nil {
		t.Fatal(err)
	}
	if resp, body := post(t, http.MethodPatch, obs.location, "application/trickle-ice-sdpfrag", "", frag(offer), "If-Match", resp.Header.Get("ETag")); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH /whip: %d %s", resp.StatusCode, body)
	}
	obs.play(h264Clip)

	player := newWHEPClient(t, obs.src)
	pOffer := whepOfferOf(t, player)
	resp, body = post(t, http.MethodPost, url+"/whep/trap", "application/sdp", "", withCandidate(pOffer, bogus))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /whep: %d %s", resp.StatusCode, body)
	}
	player.location = url + resp.Header.Get("Location")
	if err := player.pc.SetRemoteDescription(webrtcAnswerOf(body)); err != nil {
		t.Fatal(err)
	}
	if resp, body := post(t, http.MethodPatch, player.location, "application/trickle-ice-sdpfrag", "", frag(pOffer), "If-Match", resp.Header.Get("ETag")); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH /whep: %d %s", resp.StatusCode, body)
	}
	v := startPeer(t, url, "trap", protocol.RoleViewer, 0, obs.src)
	waitFor(t, 30*time.Second, "the WHEP player plays", func() bool { f, _, _ := player.counts(); return f >= 30 })
	waitFor(t, 30*time.Second, "a Go viewer plays", func() bool { f, _, _ := v.counts(); return f >= 30 })
	select {
	case <-trap.hit:
		t.Fatal("the server sent STUN to a candidate a WHIP or WHEP client named")
	default:
	}
}
