package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// syncBuffer is a bytes.Buffer safe for a process's writes and a test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// peersOf lists the ids of a stream's connected peers with role r.
func peersOf(s *Server, stream string, r protocol.Role) []string {
	co := s.hub.get(stream)
	if co == nil {
		return nil
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	var ids []string
	for id, p := range co.peers {
		if p.hello != nil && p.hello.Role == r {
			ids = append(ids, id)
		}
	}
	return ids
}

// blink cuts the signaling connection of peer id, as a proxy or a network
// blink would: the server forgets the peer, its media connections stay.
func blink(s *Server, stream, id string) {
	co := s.hub.get(stream)
	co.mu.Lock()
	p := co.peers[id]
	co.mu.Unlock()
	if p != nil {
		p.close()
	}
}

// TestClientsResumeWhenSignalingBlinks is finding 1 of issue 11 for the Go
// commands, with issue 14's resume: `client broadcast`, `client relay` and
// `client watch` whose signaling drops keep their node and resume their
// place (same id, the tree unmoved) instead of exiting or rejoining; the
// watcher finishes its frames, a new viewer plays from the tree.
func TestClientsResumeWhenSignalingBlinks(t *testing.T) {
	lightTest(t)
	bin := buildClient(t)
	s, url := startServer(t, tree.Config{SourceCapacity: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func(args ...string) (*exec.Cmd, *syncBuffer, chan error) {
		cmd := exec.CommandContext(ctx, bin, append(args, "-server", url, "-stream", "blink", "-loopback-only")...)
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		return cmd, &out, exited
	}
	_, bOut, bExit := start("broadcast", "-capacity", "1")
	waitFor(t, 20*time.Second, "the broadcast is live", func() bool { return len(peersOf(s, "blink", protocol.RoleSource)) == 1 })
	_, rOut, rExit := start("relay", "-capacity", "2")
	waitFor(t, 20*time.Second, "the relay joins", func() bool { return len(peersOf(s, "blink", protocol.RoleRelay)) == 1 })
	_, wOut, wExit := start("watch", "-frames", "450", "-timeout", "90s")
	waitFor(t, 20*time.Second, "the watcher joins", func() bool { return len(peersOf(s, "blink", protocol.RoleViewer)) == 1 })

	waitFor(t, 30*time.Second, "the watcher plays from the relay", func() bool {
		v, r := peersOf(s, "blink", protocol.RoleViewer), peersOf(s, "blink", protocol.RoleRelay)
		return len(v) == 1 && len(r) == 1 && parentOf(s, "blink", v[0]) == r[0]
	})
	edges := edgesOf(s, "blink")
	for _, role := range []protocol.Role{protocol.RoleSource, protocol.RoleRelay, protocol.RoleViewer} {
		id := peersOf(s, "blink", role)[0]
		co := s.hub.get("blink")
		co.mu.Lock()
		old := co.peers[id]
		co.mu.Unlock()
		blink(s, "blink", id)
		waitFor(t, 30*time.Second, string(role)+" resumes with its id", func() bool { return resumedFrom(s, "blink", id, old) })
	}
	if after := edgesOf(s, "blink"); !sameEdges(edges, after) {
		t.Errorf("the tree moved across the blinks: %v → %v", edges, after)
	}
	for name, ch := range map[string]chan error{"broadcast": bExit, "relay": rExit} {
		select {
		case err := <-ch:
			t.Fatalf("%s exited after its signaling blinked: %v\n%s%s", name, err, bOut, rOut)
		default:
		}
	}
	for _, out := range []*syncBuffer{bOut, rOut, wOut} {
		// The server hands the place over before the command reads its welcome.
		waitFor(t, 10*time.Second, "a clear resume line in:\n"+out.String(), func() bool {
			return strings.Contains(out.String(), "lost the server") && strings.Contains(out.String(), "client: resumed")
		})
	}
	select {
	case err := <-wExit:
		if err != nil {
			t.Fatalf("watch: %v\n%s", err, wOut)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("watch did not finish:\n%s", wOut)
	}
	v := startPeer(t, url, "blink", protocol.RoleViewer, 0, nil)
	waitFor(t, 30*time.Second, "a viewer plays from the rejoined tree", func() bool { f, _, _ := v.counts(); return f >= 30 })
	t.Logf("relay said:\n%s", rOut)
}
