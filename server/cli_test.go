package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// buildClient compiles the client command once per test binary (a link
// takes seconds on a loaded 2-core machine, and a dozen tests run it);
// TestMain removes it.
func buildClient(t *testing.T) string {
	t.Helper()
	clientBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "canopy-client-")
		if err != nil {
			clientBuild.err = err
			return
		}
		clientBuild.dir = dir
		bin := filepath.Join(dir, "client")
		if out, err := exec.Command("go", "build", "-o", bin, "../client").CombinedOutput(); err != nil {
			clientBuild.err = fmt.Errorf("go build ../client: %v\n%s", err, out)
			return
		}
		clientBuild.bin = bin
	})
	if clientBuild.err != nil {
		t.Fatal(clientBuild.err)
	}
	return clientBuild.bin
}

// watchReport is what `client watch -json` prints, in part.
type watchReport struct {
	Frames         int     `json:"frames"`
	Depth          int     `json:"depth"`
	FirstFrameMs   float64 `json:"firstFrameMs"`
	AudioPackets   int     `json:"audioPackets"`
	Verified       bool    `json:"verified"`
	FramesVerified uint64  `json:"framesVerified"`
	FramesRejected uint64  `json:"framesRejected"`
}

// runWatch runs `client watch -json -timeout 60s -loopback-only` with
// args and returns its report; a failure shows the broadcast's stderr too.
func runWatch(t *testing.T, bin string, bcastErr *bytes.Buffer, args ...string) watchReport {
	t.Helper()
	var out, errOut bytes.Buffer
	watch := exec.Command(bin, append([]string{"watch", "-json", "-timeout", "60s", "-loopback-only"}, args...)...)
	watch.Stdout, watch.Stderr = &out, &errOut
	if err := watch.Run(); err != nil {
		t.Fatalf("watch: %v\nstderr: %s\nbroadcast: %s", err, errOut.String(), bcastErr.String())
	}
	var r watchReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("watch -json printed %q: %v", out.String(), err)
	}
	t.Logf("watch: %s", strings.TrimSpace(out.String()))
	return r
}

var clientBuild struct {
	once     sync.Once
	dir, bin string
	err      error
}

func TestMain(m *testing.M) {
	raiseParallel()
	code := m.Run()
	if clientBuild.dir != "" {
		os.RemoveAll(clientBuild.dir)
	}
	os.Exit(code)
}

// TestClientCommands drives the real client binary: broadcast publishes a
// stream that a Go viewer receives, watch -json reports frames from it and
// exits 0, a relay joins it, and watch of a missing stream fails clearly.
func TestClientCommands(t *testing.T) {
	lightTest(t)
	bin := buildClient(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 1})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, bcastErr := startBroadcast(t, ctx, bin, url, "cli", nil, "-capacity", "1")

	relay := exec.CommandContext(ctx, bin, "relay", "-server", url, "-stream", "cli", "-capacity", "2", "-loopback-only")
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = relay.Wait() }()

	r := runWatch(t, bin, bcastErr, "-server", url, "-stream", "cli", "-frames", "60")
	if r.Frames < 60 || r.FirstFrameMs <= 0 || r.AudioPackets == 0 {
		t.Errorf("watch report %+v: want 60 frames, a first-frame time and audio", r)
	}
	if r.Depth != 2 {
		t.Errorf("watcher at depth %d; with the source full it belongs under the relay (depth 2)", r.Depth)
	}
	// broadcast signs by default; through the Go relay, every frame checks.
	if !r.Verified || r.FramesVerified < uint64(r.Frames) || r.FramesRejected != 0 {
		t.Errorf("watch report %+v: want every frame verified, none rejected", r)
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
