package main

import (
	"context"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canopy/mesh"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Resume across addresses: server lists, proxies that cut, hang up or
// leave half-open connections behind (README "Resume").

// cuttableProxy forwards TCP connections to target (a server URL). cut
// closes every connection it carries, both sides, as a network fault does;
// with refuse it also stops listening, so nobody reaches target through it
// again.
func cuttableProxy(t *testing.T, target string) (url string, cut func(refuse bool)) {
	url, cut, _ = pausableProxy(t, target)
	return url, cut
}

// pausableProxy is cuttableProxy that can also hang up on new connections
// for a while: with cut(false) and pause set, connections are accepted
// and closed at once, until pause is cleared.
func pausableProxy(t *testing.T, target string) (url string, cut func(refuse bool), pause *atomic.Bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(target, "http://")
	var mu sync.Mutex
	var conns []net.Conn
	pause = new(atomic.Bool)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if pause.Load() {
				_ = c.Close()
				continue
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				_ = c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
	cut = func(refuse bool) {
		if refuse {
			_ = ln.Close()
		}
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
		conns = nil
	}
	t.Cleanup(func() { cut(true) })
	return "http://" + ln.Addr().String(), cut, pause
}

// TestServerListTriedInTurn: a node whose -server list starts with a
// server that is down joins through the next; one whose server stops
// answering resumes through the next in the list, with its id and place.
func TestServerListTriedInTurn(t *testing.T) {
	lightTest(t)
	s, url := startServer(t, tree.Config{SourceCapacity: 1})
	src := startSource(t, url, "list", 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	_ = ln.Close()

	relay := startPeer(t, down+","+url, "list", protocol.RoleRelay, 1, nil)
	waitFor(t, 10*time.Second, "relay joined through the second server", func() bool { return relay.node.Parent() == src.node.ID() })

	proxy, cut := cuttableProxy(t, url)
	v := startPeer(t, proxy+","+url, "list", protocol.RoleViewer, 0, src)
	waitFor(t, 30*time.Second, "viewer plays from the relay", func() bool {
		f, _, _ := v.counts()
		return f >= 30 && v.node.Parent() == relay.node.ID()
	})
	id := v.node.ID()
	co := s.hub.get("list")
	co.mu.Lock()
	old := co.peers[id]
	co.mu.Unlock()
	before := edgesOf(s, "list")
	f0, _, _ := v.counts()
	cut(true)
	waitFor(t, 15*time.Second, "the viewer resumes through the second address", func() bool { return resumedFrom(s, "list", id, old) })
	waitFor(t, 30*time.Second, "the viewer plays on", func() bool { f, _, _ := v.counts(); return f >= f0+30 })
	if v.node.ID() != id || !sameEdges(before, edgesOf(s, "list")) {
		t.Errorf("resume through another address moved the tree: %v → %v", before, edgesOf(s, "list"))
	}
}

// TestDialServerListAllDown: a list of servers that are all down fails
// with every address's error, not a hang.
func TestDialServerListAllDown(t *testing.T) {
	lightTest(t)
	var downs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		downs = append(downs, "http://"+ln.Addr().String())
		_ = ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := mesh.Dial(ctx, mesh.Config{Server: strings.Join(downs, ","), Stream: "x", LoopbackOnly: true, Logger: testLogger()})
	if err == nil || strings.Count(err.Error(), "connect to") != 2 {
		t.Fatalf("Dial to two servers that are down: %v", err)
	}
}

// TestCLIServerList: `client watch -server a,b` with a down plays from b,
// and a bad address anywhere in the list is refused at once.
func TestCLIServerList(t *testing.T) {
	lightTest(t)
	bin := buildClient(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 2})
	startSource(t, url, "clilist", 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	_ = ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "watch", "-server", down+","+url, "-stream", "clilist",
		"-frames", "30", "-loopback-only").CombinedOutput()
	if err != nil {
		t.Fatalf("watch through a list whose first server is down: %v\n%s", err, out)
	}
	out, err = exec.CommandContext(ctx, bin, "watch", "-server", url+",ftp://x", "-stream", "clilist").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "ftp://x") {
		t.Fatalf("a bad address in the list: %v\n%s", err, out)
	}
}

// halfOpenProxy forwards TCP connections to target. halfClose closes the
// clients' sides and stops listening, but keeps the server's sides open
// and silent, as a client that moved to another network leaves them: the
// server sees connections that are up but never answer.
func halfOpenProxy(t *testing.T, target string) (url string, halfClose func()) {
	t.Helper()
	px := startProxy(t, target)
	return px.url(), px.halfClose
}

// TestResumeOverHalfOpenConnection: a viewer whose network changed (its
// client side of the WebSocket is gone, the server's side half-open and
// silent) resumes through the next server address; the server first
// answers resume_live and checks the old connection, which does not answer,
// and then hands the place over. Nothing in the tree moves.
func TestResumeOverHalfOpenConnection(t *testing.T) {
	lightTest(t)
	s, url := startServer(t, tree.Config{SourceCapacity: 1})
	src := startSource(t, url, "halfopen", 1)
	proxy, halfClose := halfOpenProxy(t, url)
	v := startPeer(t, proxy+","+url, "halfopen", protocol.RoleViewer, 0, src)
	waitFor(t, 30*time.Second, "viewer plays", func() bool { f, _, _ := v.counts(); return f >= 30 })
	id := v.node.ID()
	co := s.hub.get("halfopen")
	co.mu.Lock()
	old := co.peers[id]
	co.mu.Unlock()
	before := edgesOf(s, "halfopen")
	f0, _, _ := v.counts()
	cut := time.Now()
	halfClose()
	waitFor(t, 15*time.Second, "the viewer resumes", func() bool { return resumedFrom(s, "halfopen", id, old) })
	took := time.Since(cut)
	waitFor(t, 30*time.Second, "the viewer plays on", func() bool { f, _, _ := v.counts(); return f >= f0+30 })
	if !sameEdges(before, edgesOf(s, "halfopen")) {
		t.Errorf("the tree moved: %v → %v", before, edgesOf(s, "halfopen"))
	}
	fams := scrape(t, url)
	if n := metric(fams, "canopy_resumes_total", "outcome", "refused"); n < 1 {
		t.Errorf("no resume_live answer before the check: refused = %v", n)
	}
	t.Logf("resumed %v after its network changed (check %v); largest frame gap %v",
		took.Round(time.Millisecond), probeTimeout, v.longestGapAfter(cut).Round(time.Millisecond))
}
