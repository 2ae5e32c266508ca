package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

const h264Clip = "../mesh/media/testdata/short.h264"

// TestWHIPPublishFromOBS publishes as OBS does (H264 packetization-mode 1
// + Opus, the whole offer at once) and checks that Go viewers two hops
// down get complete frames, that they see the stream offline when the
// publisher stops, and that a publisher coming back resumes the same tree
// for viewers that waited, without them rejoining.
func TestWHIPPublishFromOBS(t *testing.T) {
	_, url := startServer(t, tree.Config{SourceCapacity: 1})
	obs := newWHIPClient(t)
	if code, body := obs.publish(url, "live", ""); code != http.StatusCreated {
		t.Fatalf("POST /whip/live: %d %s", code, body)
	}
	obs.play(h264Clip)
	for _, h := range []string{"Location", "ETag"} {
		if obs.resp.Header.Get(h) == "" {
			t.Errorf("201 without %s", h)
		}
	}
	if ct := obs.resp.Header.Get("Content-Type"); ct != "application/sdp" {
		t.Errorf("answer Content-Type %q", ct)
	}
	waitFor(t, 20*time.Second, "the stream is live", func() bool {
		var streams []streamInfo
		getJSON(t, url+"/api/streams", &streams)
		return len(streams) == 1 && streams[0].Live
	})
	relay := startPeer(t, url, "live", protocol.RoleRelay, 2, nil)
	waitFor(t, 20*time.Second, "the relay under the WHIP source", func() bool { return relay.node.Parent() != "" })
	viewers := []*testViewer{
		startPeer(t, url, "live", protocol.RoleViewer, 0, obs.src),
		startPeer(t, url, "live", protocol.RoleViewer, 0, obs.src),
	}
	for _, v := range viewers {
		waitFor(t, 30*time.Second, "viewers play the WHIP stream", func() bool { f, _, _ := v.counts(); return f >= 60 })
		if v.node.Depth() != 2 || v.node.Parent() != relay.node.ID() {
			t.Errorf("viewer at depth %d under %s; want depth 2 under the relay %s", v.node.Depth(), v.node.Parent(), relay.node.ID())
		}
		if _, mismatch, audio := v.counts(); mismatch != 0 || audio == 0 {
			t.Errorf("viewer: %d frames differ from what OBS sent, %d audio packets", mismatch, audio)
		}
	}
	var tr treeResponse
	getJSON(t, url+"/api/streams/live/tree", &tr)
	if !tr.Live {
		t.Error("tree API: not live")
	}

	// The publisher stops: viewers see the stream offline and stay.
	if code := obs.stop(); code != http.StatusOK {
		t.Fatalf("DELETE: %d", code)
	}
	for _, v := range viewers {
		waitFor(t, 20*time.Second, "viewers see the stream offline", func() bool { return v.offlineCount() >= 1 })
	}

	// It comes back: the viewers that waited play again, in the same tree.
	back := newWHIPClient(t)
	for _, v := range viewers {
		v.checkAgainst(back.src)
	}
	if code, body := back.publish(url, "live", ""); code != http.StatusCreated {
		t.Fatalf("POST again: %d %s", code, body)
	}
	back.play(h264Clip)
	for _, v := range viewers {
		waitFor(t, 30*time.Second, "waiting viewers play the returning publisher", func() bool { f, _, _ := v.counts(); return f >= 120 })
		if _, mismatch, _ := v.counts(); mismatch != 0 {
			t.Errorf("viewer: %d frames differ from what the returning publisher sent", mismatch)
		}
		if v.node.Parent() != relay.node.ID() {
			t.Errorf("viewer moved to %s; the tree should resume as it was", v.node.Parent())
		}
		t.Logf("viewer: first frame %s after the returning publisher's POST", v.firstFrameAfter(back.posted).Sub(back.posted).Round(time.Millisecond))
	}
	if !strings.HasPrefix(back.location, url+"/whip/live/") {
		t.Errorf("Location %q", back.location)
	}
}
