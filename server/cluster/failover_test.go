package cluster_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// watchFull is watchReport with what a failover test reads.
type watchFull struct {
	watchReport
	StallMs       float64   `json:"stallMs"`
	ParentChanges int       `json:"parentChanges"`
	GapsMillis    []float64 `json:"gapsMs"`
}

// TestClusterEdgeKilledPeersResume: server 3 is SIGKILLed under a relay
// and a viewer connected to it. Their media is peer to peer, so it keeps
// flowing; their signaling resumes on another server of their -server
// lists with their resume tokens, and the owner gives them back their
// places: the same ids, the same parents, no parent change at any viewer,
// and every viewer gets all its frames.
func TestClusterEdgeKilledPeersResume(t *testing.T) {
	servers := startCluster(t, 3)
	_, client := binaries(t)
	const stream = "edgekill"
	s1, s2, s3 := servers[0].url, servers[1].url, servers[2].url
	sourceAndRelay(t, servers, client, stream, s1, 1, 2)
	// 20 s of frames: the kill lands in the middle.
	const frames = 600
	viewers := []*proc{
		start(t, "viewer2", client, "watch", "-server", s2+","+s1, "-stream", stream, "-frames", fmt.Sprint(frames), "-json", "-timeout", "120s", "-loopback-only"),
		start(t, "viewer3", client, "watch", "-server", s3+","+s1, "-stream", stream, "-frames", fmt.Sprint(frames), "-json", "-timeout", "120s", "-loopback-only"),
	}
	var before map[string]string
	waitFor(t, 60*time.Second, "both viewers under the relay", func() bool {
		nodes, _ := treeAt(s1, stream)
		before = parents(nodes)
		under := 0
		for _, n := range nodes {
			if n.Role == "viewer" && n.Parent != "" && strings.HasPrefix(n.Parent, "s3-") {
				under++
			}
		}
		return under == 2
	})
	waitFor(t, 60*time.Second, "both viewers playing", func() bool { return liveViewers(s1, stream) == 2 })
	servers[2].signal(syscall.SIGKILL)
	// The relay and viewer 3 resume elsewhere; the tree keeps its shape.
	waitFor(t, 30*time.Second, "the peers of server 3 resumed", func() bool {
		return resumed(servers[0].output(), 2)
	})
	nodes, _ := treeAt(s1, stream)
	if after := parents(nodes); !sameMap(before, after) {
		t.Errorf("the tree moved: before %v, after %v", before, after)
	}
	for _, v := range viewers {
		if err := v.wait(t, 2*time.Minute); err != nil {
			t.Fatalf("%s: %v\n%s", v.name, err, tail(v.output(), 2000))
		}
		var r watchFull
		decodeLast(t, v, &r)
		t.Logf("%s: %d frames, stalled %.0f ms, %d parent changes", v.name, r.Frames, r.StallMs, r.ParentChanges)
		if r.Frames < frames {
			t.Errorf("%s: %d frames, want %d", v.name, r.Frames, frames)
		}
		if r.ParentChanges != 0 {
			t.Errorf("%s: %d parent changes, want none", v.name, r.ParentChanges)
		}
		// The stall is logged, not asserted: the media path never crosses
		// a server, so what stalls it here is the machine (at a load
		// average of 70, 8 s over the 20 s at both viewers alike). What
		// the kill could cost is a move, which shows as a parent change.
	}
}

// liveViewers counts the viewers the owner's stats call live.
func liveViewers(url, stream string) int {
	resp, err := http.Get(url + "/api/streams/" + stream + "/stats")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var body struct {
		Nodes []struct {
			Role  string `json:"role"`
			State string `json:"state"`
		} `json:"nodes"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return 0
	}
	n := 0
	for _, x := range body.Nodes {
		if x.Role == "viewer" && x.State == "live" {
			n++
		}
	}
	return n
}

func parents(nodes []treeNode) map[string]string {
	m := make(map[string]string, len(nodes))
	for _, n := range nodes {
		m[n.ID] = n.Parent
	}
	return m
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// resumed reports whether the owner's log says n peers resumed.
func resumed(log []byte, n int) bool {
	return strings.Count(string(log), `msg="peer resumed"`) >= n
}

// ownerTree is a stream with its owner on server 1: the source connected
// there (its -server list goes on to server 2), a relay through server 3
// (room for 6) feeding a viewer on server 2 and one on server 3. Each viewer watches
// frames (30 fps) in all.
type ownerTree struct {
	servers []*server
	stream  string
	viewers []*proc
	started time.Time // when the viewers started
	before  map[string]string
}

func startOwnerTree(t *testing.T, stream string, frames int) *ownerTree {
	t.Helper()
	servers := startCluster(t, 3)
	_, client := binaries(t)
	s1, s2, s3 := servers[0].url, servers[1].url, servers[2].url
	sourceAndRelay(t, servers, client, stream, s1+","+s2, 1, 6)
	o := &ownerTree{servers: servers, stream: stream, started: time.Now()}
	o.viewers = []*proc{
		start(t, "viewer2", client, "watch", "-server", s2+","+s3, "-stream", stream, "-frames", fmt.Sprint(frames), "-json", "-timeout", "180s", "-loopback-only"),
		start(t, "viewer3", client, "watch", "-server", s3+","+s2, "-stream", stream, "-frames", fmt.Sprint(frames), "-json", "-timeout", "180s", "-loopback-only"),
	}
	waitFor(t, 60*time.Second, "both viewers under the relay", func() bool {
		nodes, _ := treeAt(s1, stream)
		o.before = parents(nodes)
		under := 0
		for _, n := range nodes {
			if n.Role == "viewer" && strings.HasPrefix(n.Parent, "s3-") {
				under++
			}
		}
		return under == 2
	})
	waitFor(t, 60*time.Second, "both viewers playing", func() bool { return liveViewers(s1, stream) == 2 })
	return o
}

// newOwner waits for server 2 or 3 to own the stream (any server answers
// the tree, from its owner: the owner's id says which) with a tree as big
// as before, and returns it.
func (o *ownerTree) newOwner(t *testing.T, within time.Duration) (*server, []treeNode) {
	t.Helper()
	var owner *server
	var nodes []treeNode
	waitFor(t, within, "a new owner with the stream's tree", func() bool {
		for _, s := range o.servers[1:] {
			if n, ok := treeAt(s.url, o.stream); ok && len(n) >= len(o.before) && ownerAt(s.url, o.stream) == s.id {
				owner, nodes = s, n
				return true
			}
		}
		return false
	})
	return owner, nodes
}

// keptTree checks that the new owner's tree has every old edge.
func (o *ownerTree) keptTree(t *testing.T, nodes []treeNode) {
	t.Helper()
	after := parents(nodes)
	for id, parent := range o.before {
		if after[id] != parent {
			t.Errorf("the tree moved: before %v, after %v", o.before, after)
			return
		}
	}
}

// gaps checks each viewer's frames and compares its largest frame gap
// before the event at `at` with the one after it (the second holding it
// counts as after).
func (o *ownerTree) gaps(t *testing.T, at time.Time, frames int) (before, after float64) {
	t.Helper()
	cut := int(at.Sub(o.started) / time.Second)
	for _, v := range o.viewers {
		if err := v.wait(t, 3*time.Minute); err != nil {
			t.Fatalf("%s: %v\n%s", v.name, err, tail(v.output(), 2000))
		}
		var r watchFull
		decodeLast(t, v, &r)
		b, a := 0.0, 0.0
		for i, g := range r.GapsMillis {
			if i < cut {
				b = max(b, g)
			} else {
				a = max(a, g)
			}
		}
		t.Logf("%s: %d frames, %d parent changes, largest frame gap %.0f ms before, %.0f ms after", v.name, r.Frames, r.ParentChanges, b, a)
		if r.Frames < frames {
			t.Errorf("%s: %d frames, want %d", v.name, r.Frames, frames)
		}
		if r.ParentChanges != 0 {
			t.Errorf("%s: %d parent changes, want none", v.name, r.ParentChanges)
		}
		// A safety net, not a timing: the old behaviour (a new tree) cost
		// seconds; the machine's own noise (load 30-80) stays well below.
		if a > max(2*b, 1500) {
			t.Errorf("%s: largest frame gap grew from %.0f ms to %.0f ms", v.name, b, a)
		}
		before, after = max(before, b), max(after, a)
	}
	return before, after
}

// restoredOK reports whether the owner's log says it rebuilt the stream
// and its tree passed Check.
func restoredOK(log []byte) bool {
	s := string(log)
	return strings.Contains(s, `msg="stream restored from its last state"`) && strings.Contains(s, "check=ok")
}

// TestClusterOwnerKilledTreeKept: SIGKILL the stream's owner (server 1,
// where its source is connected). The other servers keep its peers'
// sessions (orphaned, not closed), one of them takes the lease once it
// expires and rebuilds the tree from the state the owner published, which
// passes Check, and the edges adopt their peers there; the source resumes
// on server 2. Nothing moves: the same parents, no parent change at any
// viewer, no frame gap larger than before the kill. A viewer that joins
// through server 3 right after the kill waits at its edge and is placed
// once the new owner runs the stream.
func TestClusterOwnerKilledTreeKept(t *testing.T) { killTrial(t, 900) }

// killTrial is one owner SIGKILL with frames at each viewer (30 fps; the
// kill after 8 s); it returns the time to a new owner and to the late
// join's placement, and the viewers' largest frame gaps before and after.
func killTrial(t *testing.T, frames int) (took, accepted time.Duration, before, after float64) {
	o := startOwnerTree(t, "ownerkill", frames)
	_, client := binaries(t)
	for time.Since(o.started) < 8*time.Second { // a baseline of frame gaps
		time.Sleep(100 * time.Millisecond)
	}
	o.servers[0].signal(syscall.SIGKILL)
	killed := time.Now()
	late := start(t, "viewer-late", client, "watch", "-server", o.servers[2].url, "-stream", o.stream, "-frames", "60", "-json", "-timeout", "90s", "-loopback-only")
	owner, nodes := o.newOwner(t, 60*time.Second)
	took = time.Since(killed)
	o.keptTree(t, nodes)
	if !restoredOK(owner.output()) {
		t.Errorf("%s did not log a restored tree that passed Check", owner.id)
	}
	waitFor(t, 60*time.Second, "the late viewer placed", func() bool {
		n, _ := treeAt(owner.url, o.stream)
		return len(n) == len(o.before)+1
	})
	accepted = time.Since(killed)
	t.Logf("server 1 killed: %s owns the stream after %v, the late join placed after %v",
		owner.id, took.Round(time.Millisecond), accepted.Round(time.Millisecond))
	if err := late.wait(t, 2*time.Minute); err != nil {
		t.Fatalf("late viewer: %v\n%s", err, tail(late.output(), 2000))
	}
	before, after = o.gaps(t, killed, frames)
	return took, accepted, before, after
}

// TestClusterOwnerKilledLastJoinKept: a viewer placed 20 ms before its
// stream's owner is SIGKILLed keeps its place. The owner publishes each
// change within a few ms (cluster/state.go), so the state the new owner
// rebuilds from holds the viewer: its edge adopts it there (no fresh
// join), under the same parent. With the state published every 250 ms
// (session 5) the join was in it 1 time in 12.
func TestClusterOwnerKilledLastJoinKept(t *testing.T) {
	servers := startCluster(t, 3)
	_, client := binaries(t)
	const stream = "lastjoin"
	s1, s2, s3 := servers[0].url, servers[1].url, servers[2].url
	sourceAndRelay(t, servers, client, stream, s1+","+s2, 2, 4)
	known := map[string]bool{}
	nodes, _ := treeAt(s1, stream)
	for _, n := range nodes {
		known[n.ID] = true
	}
	const frames = 450 // 15 s: the kill and the takeover fall inside
	late := start(t, "viewer-late", client, "watch", "-server", s2+","+s3, "-stream", stream, "-frames", fmt.Sprint(frames), "-json", "-timeout", "60s", "-loopback-only")
	// Polled without a pause: the kill must come 20 ms after the
	// placement, not a poll interval later.
	var id, parent string
	var placed time.Time
	deadline := time.Now().Add(60 * time.Second)
	for id == "" {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the late viewer's placement")
		}
		nodes, _ := treeAt(s1, stream)
		for _, n := range nodes {
			if !known[n.ID] && n.Parent != "" {
				id, parent, placed = n.ID, n.Parent, time.Now()
			}
		}
	}
	time.Sleep(time.Until(placed.Add(20 * time.Millisecond))) // the age of the join at the kill
	servers[0].signal(syscall.SIGKILL)
	t.Logf("viewer %s placed under %s; server 1 killed %v later", id, parent, time.Since(placed).Round(time.Millisecond))
	var owner *server
	waitFor(t, 60*time.Second, "a new owner with the late viewer adopted", func() bool {
		for _, s := range servers[1:] {
			if ownerAt(s.url, stream) == s.id && strings.Contains(string(s.output()), "stream taken over") {
				owner = s
				nodes, _ := treeAt(s.url, stream)
				for _, n := range nodes {
					if n.ID == id {
						return true
					}
				}
			}
		}
		return false
	})
	log := string(owner.output())
	if strings.Contains(log, "joining it afresh") && strings.Contains(log, id) {
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, "joining it afresh") && strings.Contains(line, id) {
				t.Errorf("the late viewer was not in the new owner's state: %s", line)
			}
		}
	}
	waitFor(t, 30*time.Second, "the late viewer adopted", func() bool {
		for _, line := range strings.Split(string(owner.output()), "\n") {
			if strings.Contains(line, `msg="peer adopted"`) && strings.Contains(line, "peer="+id) {
				return true
			}
		}
		return false
	})
	nodes, _ = treeAt(owner.url, stream)
	if got := parents(nodes)[id]; got != parent {
		t.Errorf("the late viewer's parent is %q after the takeover, %q before", got, parent)
	}
	// Its negotiation with its parent may have been in flight at the kill,
	// and the signals the dead owner held are lost: its stall reports get
	// it a new connection from its parent (trust.go, renewEdge). Before,
	// 3 runs in 4 left it waiting for its parent's offer for good.
	if err := late.wait(t, 2*time.Minute); err != nil {
		t.Fatalf("late viewer did not play its %d frames: %v: %s", frames, err, tail(late.output(), 600))
	}
	var r watchFull
	decodeLast(t, late, &r)
	t.Logf("late viewer: %d frames, %d parent changes, stalled %.0f ms", r.Frames, r.ParentChanges, r.StallMs)
}

// sourceAndRelay starts a source on srcServers (capacity srcCap, with
// extra flags) and a relay of relayCap on s3,s2, and waits for both in
// server 1's tree; it returns the source.
func sourceAndRelay(t *testing.T, servers []*server, client, stream, srcServers string, srcCap, relayCap int, extra ...string) *proc {
	t.Helper()
	s1, s2, s3 := servers[0].url, servers[1].url, servers[2].url
	args := append([]string{"broadcast", "-server", srcServers, "-stream", stream, "-capacity", fmt.Sprint(srcCap), "-loopback-only"}, extra...)
	source := start(t, "source", client, args...)
	waitFor(t, 30*time.Second, "the source at server 1", func() bool {
		nodes, ok := treeAt(s1, stream)
		return ok && len(nodes) == 1
	})
	start(t, "relay", client, "relay", "-server", s3+","+s2, "-stream", stream, "-capacity", fmt.Sprint(relayCap), "-loopback-only")
	waitFor(t, 30*time.Second, "the relay under the source", func() bool {
		nodes, _ := treeAt(s1, stream)
		return len(nodes) == 2 && nodes[0].Parent+nodes[1].Parent != ""
	})
	return source
}
