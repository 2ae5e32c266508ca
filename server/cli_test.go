package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// buildClient compiles the client command once per test.
func buildClient(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "client")
	cmd := exec.Command("go", "build", "-o", bin, "../client")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ../client: %v\n%s", err, out)
	}
	return bin
}

// TestClientCommands drives the real client binary: broadcast publishes a
// stream that a Go viewer receives, watch -json reports frames from it and
// exits 0, a relay joins it, and watch of a missing stream fails clearly.
func TestClientCommands(t *testing.T) {
	bin := buildClient(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 1})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	broadcast := exec.CommandContext(ctx, bin, "broadcast", "-server", url, "-stream", "cli", "-capacity", "1", "-loopback-only")
	var bcastErr bytes.Buffer
	broadcast.Stderr = &bcastErr
	if err := broadcast.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = broadcast.Wait() }()
	waitFor(t, 20*time.Second, "the broadcast is live", func() bool {
		var streams []streamInfo
		getJSON(t, url+"/api/streams", &streams)
		return len(streams) == 1 && streams[0].Live
	})

	relay := exec.CommandContext(ctx, bin, "relay", "-server", url, "-stream", "cli", "-capacity", "2", "-loopback-only")
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = relay.Wait() }()

	var out, errOut bytes.Buffer
	watch := exec.Command(bin, "watch", "-server", url, "-stream", "cli", "-frames", "60", "-json", "-timeout", "60s", "-loopback-only")
	watch.Stdout, watch.Stderr = &out, &errOut
	if err := watch.Run(); err != nil {
		t.Fatalf("watch: %v\nstderr: %s\nbroadcast: %s", err, errOut.String(), bcastErr.String())
	}
	var r struct {
		Frames       int     `json:"frames"`
		Depth        int     `json:"depth"`
		FirstFrameMs float64 `json:"firstFrameMs"`
		AudioPackets int     `json:"audioPackets"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("watch -json printed %q: %v", out.String(), err)
	}
	t.Logf("watch: %s", strings.TrimSpace(out.String()))
	if r.Frames < 60 || r.FirstFrameMs <= 0 || r.AudioPackets == 0 {
		t.Errorf("watch report %+v: want 60 frames, a first-frame time and audio", r)
	}
	if r.Depth != 2 {
		t.Errorf("watcher at depth %d; with the source full it belongs under the relay (depth 2)", r.Depth)
	}

	// A viewer in this process receives the broadcast's frames too.
	v := startPeer(t, url, "cli", protocol.RoleViewer, 0, nil)
	waitFor(t, 30*time.Second, "an in-process viewer plays the broadcast", func() bool { f, _, _ := v.counts(); return f >= 30 })

	missing := exec.Command(bin, "watch", "-server", url, "-stream", "nope", "-loopback-only")
	msg, err := missing.CombinedOutput()
	if err == nil {
		t.Fatal("watch of a missing stream exited 0")
	}
	if !strings.Contains(string(msg), `stream "nope" does not exist`) {
		t.Errorf("watch of a missing stream said %q", msg)
	}
}
