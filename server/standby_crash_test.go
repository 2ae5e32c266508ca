package main

import (
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestStandbyTakesOverWhenRelayProcessDies SIGKILLs a real `client relay`
// process: no goodbye, no DTLS close, its WebSocket closed by the kernel.
// The server keeps the dead relay's place for the resume grace (it cannot
// tell a crash from a blip) and tells its children their parent went quiet;
// the first child whose parent's media stopped switches to its standby link
// after a short silence, not after the stall timeout (1.5 s) it would
// otherwise wait, which ends the suspension and moves the rest. Each orphan ends
// under its standby parent, hot, and plays complete frames again.
func TestStandbyTakesOverWhenRelayProcessDies(t *testing.T) {
	const stream = "crash"
	var mu sync.Mutex
	var promotes []time.Time
	_, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2}, onMessage: func(m *protocol.Message) {
		if m.Type == protocol.TypePromote {
			mu.Lock()
			promotes = append(promotes, time.Now())
			mu.Unlock()
		}
	}})
	src := startSource(t, url, stream, 2)
	bin := buildClient(t)
	relay := exec.Command(bin, "relay", "-server", url, "-stream", stream, "-capacity", "8", "-loopback-only")
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = relay.Process.Kill(); _ = relay.Wait() })
	var relayID string
	waitFor(t, 30*time.Second, "the relay process under the source", func() bool {
		var tr treeResponse
		getJSON(t, url+"/api/streams/"+stream+"/tree", &tr)
		for _, n := range tr.Nodes {
			if n.Parent == src.node.ID() && n.Kind == "go" && n.Role == "relay" {
				relayID = n.ID
			}
		}
		return relayID != ""
	})
	other := startPeer(t, url, stream, protocol.RoleRelay, 8, src)
	waitFor(t, 30*time.Second, "the second relay under the source", func() bool { return other.node.Parent() == src.node.ID() })
	viewers := startViewers(t, url, stream, 6, 30, src)
	var orphans []*testViewer
	for _, v := range viewers {
		if v.node.Parent() == relayID {
			orphans = append(orphans, v)
		}
	}
	if len(orphans) == 0 {
		t.Fatalf("no viewer under the relay process %s", relayID)
	}
	standby := map[*testViewer]string{}
	for _, o := range orphans {
		waitFor(t, 30*time.Second, "a standby for every orphan-to-be", func() bool { return o.node.Standby() != "" })
		standby[o] = o.node.Standby()
	}
	before := make([]int, len(orphans))
	for i, o := range orphans {
		before[i], _, _ = o.counts()
	}

	killed := time.Now()
	if err := relay.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var stalls, gaps []float64
	for i, o := range orphans {
		waitFor(t, 30*time.Second, "orphan plays again", func() bool { f, _, _ := o.counts(); return f >= before[i]+30 })
		stalls = append(stalls, float64(o.firstFrameAfter(killed).Sub(killed).Milliseconds()))
		gaps = append(gaps, float64(o.gapAround(killed, 3*time.Second).Milliseconds()))
		if got := o.node.Parent(); got != standby[o] {
			t.Errorf("orphan %s: parent %s after the kill, standby was %s", o.node.ID(), got, standby[o])
		}
		if _, mismatch, _ := o.counts(); mismatch != 0 {
			t.Errorf("orphan %s: %d frames differ from the source's", o.node.ID(), mismatch)
		}
	}
	mu.Lock()
	got := slices.Clone(promotes)
	mu.Unlock()
	if len(got) == 0 {
		t.Fatal("no orphan promoted its standby link")
	}
	// The first promote ends the dead relay's suspension (its child played
	// from it and says its media stopped), and the server's plan moves the
	// other orphans to their standbys at once. Without the quiet notice a child switches only once its parent has
	// been silent for the stall timeout (1.5 s): every promote would come
	// later than that.
	first := got[0].Sub(killed)
	t.Logf("SIGKILL → first promote %v; kill → next frame per orphan, ms: %v; stall (largest frame gap around the kill) per orphan, ms: %v; load %s",
		first.Round(time.Millisecond), stalls, gaps, loadAverage())
	if first >= 1500*time.Millisecond {
		t.Errorf("the first orphan switched %v after the kill: it waited out the stall timeout", first)
	}
}
