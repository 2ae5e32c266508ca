package main

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
	"canopy/server/cluster"
)

// startClusterServers runs n servers in this process, each with its own
// embedded NATS server, forming a real NATS cluster over loopback routes
// with JetStream (as cluster/lease_test.go's nodes), sharing a resume
// secret.
func startClusterServers(t *testing.T, n int) ([]*Server, []string) {
	t.Helper()
	addrs := make([]string, n)
	routes := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = ln.Addr().String()
		ln.Close()
		routes[i] = "nats://" + addrs[i]
	}
	nodes := make([]*cluster.Node, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			nodes[i], errs[i] = cluster.Start(cluster.Config{ID: fmt.Sprintf("s%d", i+1), Name: "state-test", Listen: addrs[i],
				Routes: routes, StoreDir: t.TempDir(), Log: testLogger()})
		}(i)
	}
	wg.Wait()
	servers := make([]*Server, n)
	urls := make([]string, n)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
		servers[i], urls[i] = startServerWith(t, Config{Cluster: nodes[i], Resume: ResumeConfig{Secret: []byte("state-test-secret")}})
	}
	return servers, urls
}

// TestClusterBarSurvivesHandover: a relay barred for tampering at its
// stream's owner (server 1) stays barred once another server owns the
// stream: the bar is in the state every server keeps (a "b/" entry,
// published as a delta), and the new owner, rebuilding the stream from
// it, bars the relay in its session too: trust barred, capacity 0,
// tampering in the tree. Real NATS between three servers in this
// process; the handover is server 1's SIGTERM path.
func TestClusterBarSurvivesHandover(t *testing.T) {
	lightTest(t)
	servers, urls := startClusterServers(t, 3)
	const stream = "bar-handover"
	startSource(t, urls[0], stream, 2)
	waitFor(t, 30*time.Second, "server 2 knowing the stream (its state)", func() bool {
		st, _, _ := servers[1].node.StateOf(stream)
		return len(st) > 0
	})
	relay := startPeer(t, urls[1], stream, protocol.RoleRelay, 4, nil)
	id := relay.node.ID()
	waitFor(t, 30*time.Second, "the relay placed at the owner", func() bool {
		n, ok := nodeOf(servers[0], stream, id)
		return ok && n.Parent != ""
	})
	c := servers[0].hub.get(stream)
	c.mu.Lock()
	c.barForStream(id, time.Now())
	c.apply(c.rebar(c.peers[id]))
	c.mu.Unlock()
	for _, s := range servers[1:] {
		waitFor(t, 10*time.Second, s.node.ID()+"'s copy of the state holding the bar", func() bool {
			st, _, _ := s.node.StateOf(stream)
			_, ok := st[stateBarPrefix+barPeer(id)]
			return ok
		})
	}
	servers[0].handOver()
	var owner *Server
	// Server 1 keeps running as an edge after its handover, so any of the
	// three may take the stream over (its own adoption loop too).
	waitFor(t, 30*time.Second, "a new owner of the stream with the relay", func() bool {
		for _, s := range servers {
			if _, ok := nodeOf(s, stream, id); ok && s.node.Owns(stream) {
				owner = s
				return true
			}
		}
		return false
	})
	waitFor(t, 30*time.Second, "the relay adopted at the new owner", func() bool {
		co := owner.hub.get(stream)
		co.mu.Lock()
		defer co.mu.Unlock()
		_, waiting := co.suspended[id]
		return co.peers[id] != nil && !waiting
	})
	n, _ := nodeOf(owner, stream, id)
	if n.Trust != tree.TrustBarred || n.Capacity != 0 || !n.Tampering || len(n.Children) != 0 {
		t.Errorf("the relay at the new owner %s: %+v; want barred, tampering, capacity 0, no children", owner.node.ID(), n)
	}
	co := owner.hub.get(stream)
	co.mu.Lock()
	_, kept := co.bars[barPeer(id)]
	co.mu.Unlock()
	if !kept {
		t.Errorf("the new owner has no bar on %s", id)
	}
	// What it claims now changes nothing: capacity 0 whatever it says.
	if err := relay.node.SetCapacity(8); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the claim's way to the owner: a bound, the assertion is its absence of effect
	if n, _ := nodeOf(owner, stream, id); n.Capacity != 0 {
		t.Errorf("the barred relay claimed 8 slots and got %d at the new owner", n.Capacity)
	}
}
