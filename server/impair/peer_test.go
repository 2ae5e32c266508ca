package impair

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/rtp"

	"canopy/mesh"
	"canopy/mesh/media"
	"canopy/mesh/media/demo"
	"canopy/mesh/protocol"
)

// The tests' peers are this test binary run again, inside a namespace
// (ip netns exec), with CANOPY_IMPAIR_ROLE set: a Go source publishing the
// demo clip, or a relay or viewer that assembles every video frame it
// receives and prints what it saw, one JSON line per statusInterval.
const (
	envRole     = "CANOPY_IMPAIR_ROLE"
	envServer   = "CANOPY_IMPAIR_SERVER"
	envStream   = "CANOPY_IMPAIR_STREAM"
	envCapacity = "CANOPY_IMPAIR_CAPACITY"
	// statusInterval is how often a peer reports; a frame gap is measured
	// to the millisecond whatever it is.
	statusInterval = 250 * time.Millisecond
)

// status is one line a peer prints.
type status struct {
	ID       string `json:"id"`
	Parent   string `json:"parent"`
	Children int    `json:"children"`
	Frames   uint64 `json:"frames"`  // complete, decodable video frames so far
	Dropped  uint64 `json:"dropped"` // packets of frames that could not be completed
	Lost     uint64 `json:"lost"`    // packets never received
	// GapMs is the longest time without a frame since the last line,
	// counting the gap still open; 0 before the first frame.
	GapMs float64 `json:"gapMs"`
}

var serverBin string // built once by TestMain

func TestMain(m *testing.M) {
	if role := os.Getenv(envRole); role != "" {
		os.Exit(runPeer(protocol.Role(role)))
	}
	dir, err := os.MkdirTemp("", "canopy-impair-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	serverBin = filepath.Join(dir, "server")
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// buildServer builds the real server binary, once.
var buildOnce = sync.OnceValue(func() error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	out, err := exec.Command(goTool, "build", "-o", serverBin, "canopy/server").CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build canopy/server: %v: %s", err, out)
	}
	return nil
})

// runPeer is a peer process's main. It runs until its standard input
// closes (the test ended) or it is signalled.
func runPeer(role protocol.Role) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	capacity, _ := strconv.Atoi(os.Getenv(envCapacity))
	cfg := mesh.Config{Server: os.Getenv(envServer), Stream: os.Getenv(envStream), Role: role, Capacity: capacity, Logger: log}
	var (
		mu      sync.Mutex
		asm     *media.Assembler
		last    time.Time
		gap     time.Duration
		started bool
	)
	if role == protocol.RoleSource {
		video, audio, err := demo.Open()
		if err != nil {
			log.Error("demo", "err", err)
			return 1
		}
		cfg.Tracks = mesh.TracksFor(video, audio)
		n, err := mesh.Dial(ctx, cfg)
		if err != nil {
			log.Error("dial", "err", err)
			return 1
		}
		defer n.Close()
		_ = n.Play(ctx, video, audio)
		return 0
	}
	cfg.OnPacket = func(t protocol.Track, p *rtp.Packet) {
		if t.Kind != "video" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if asm == nil {
			var err error
			asm, err = media.NewAssembler(media.Codec{MimeType: t.MimeType, ClockRate: t.ClockRate}, func(media.Frame) {
				now := time.Now()
				if started {
					gap = max(gap, now.Sub(last))
				}
				started, last = true, now
			})
			if err != nil {
				log.Error("assembler", "err", err)
				return
			}
		}
		asm.Push(p)
	}
	n, err := mesh.Dial(ctx, cfg)
	if err != nil {
		log.Error("dial", "err", err)
		return 1
	}
	defer n.Close()
	enc := json.NewEncoder(os.Stdout)
	tick := time.NewTicker(statusInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0
		case <-n.Done():
			log.Error("node ended", "err", n.Err())
			return 1
		case <-tick.C:
		}
		mu.Lock()
		s := status{ID: n.ID(), Parent: n.Parent(), Children: n.Children()}
		if asm != nil {
			st := asm.Stats()
			s.Frames, s.Dropped, s.Lost = st.Frames, st.Dropped, st.Lost
		}
		if started {
			gap = max(gap, time.Since(last))
			s.GapMs = float64(gap.Microseconds()) / 1000
		}
		gap = 0
		mu.Unlock()
		if err := enc.Encode(&s); err != nil {
			return 0
		}
	}
}

// proc is a process the test started in a namespace.
type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu   sync.Mutex
	logs []string // stderr, the last maxLogLines
	now  status   // the latest status line
	at   time.Time
	// gaps since the test last asked (worst per window; see worstGap)
	worst float64
}

const maxLogLines = 200

// start runs argv in h's namespace with env added; the test's Cleanup
// ends it (stdin closed, then SIGKILL if it lingers).
func start(t *testing.T, h *host, name string, env []string, argv ...string) *proc {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{name: name, cmd: cmd}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.logs = append(p.logs, sc.Text())
			if len(p.logs) > maxLogLines {
				p.logs = p.logs[len(p.logs)-maxLogLines:]
			}
			p.mu.Unlock()
		}
	})
	wg.Go(func() {
		dec := json.NewDecoder(stdout)
		for {
			var s status
			if err := dec.Decode(&s); err != nil {
				return
			}
			p.mu.Lock()
			p.now, p.at = s, time.Now()
			p.worst = max(p.worst, s.GapMs)
			p.mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = p.stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		wg.Wait()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("--- %s: last log lines:", p.name)
			for _, l := range p.logs[max(0, len(p.logs)-40):] {
				t.Logf("%s: %s", p.name, l)
			}
			p.mu.Unlock()
		}
	})
	return p
}

// startPeer runs a peer of role in h's namespace.
func startPeer(t *testing.T, h *host, name, server string, role protocol.Role, capacity int) *proc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return start(t, h, name, []string{
		envRole + "=" + string(role), envServer + "=" + server, envStream + "=" + "impair",
		envCapacity + "=" + strconv.Itoa(capacity),
	}, self, "-test.run=^$")
}

// state returns the latest status line.
func (p *proc) state() status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.now
}

// worstGap returns the longest frame gap since the last call, and starts
// a new window.
func (p *proc) worstGap() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.worst
	p.worst = 0
	return w
}

// grep returns the log lines containing s.
func (p *proc) grep(s string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, l := range p.logs {
		if contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}
