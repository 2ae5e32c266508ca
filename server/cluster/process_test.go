package cluster_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"canopy/mesh/soak"
)

// The tests here run real processes: three canopy servers forming a NATS
// cluster on loopback, and the client binary's broadcast, relay and watch
// commands as the peers. They live in this package, not the server's, so
// go test runs them beside the server package's long end-to-end tests.

var bins struct {
	once   sync.Once
	dir    string
	err    error
	server string
	client string
}

// binaries builds the server and client once per test binary.
func binaries(t *testing.T) (server, client string) {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "canopy-cluster-bin-")
		if bins.err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", bins.dir+string(filepath.Separator), "canopy/server", "canopy/client")
		out, err := cmd.CombinedOutput()
		if err != nil {
			bins.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
		bins.server, bins.client = filepath.Join(bins.dir, "server"), filepath.Join(bins.dir, "client")
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.server, bins.client
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		_ = os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// freePort is a loopback TCP port nobody listens on (a moment ago), below
// the kernel's ephemeral range: a port bound with :0, or the local end of
// an outgoing connection, is taken from that range, and the server
// package's tests beside these open thousands of both. A port from inside
// it was once taken between this pick and the server's listen, and that
// server never started its NATS routes.
func freePort(t *testing.T) int {
	t.Helper()
	low := ephemeralLow()
	ports.Lock()
	defer ports.Unlock()
	if ports.given == nil {
		ports.given = map[int]bool{}
	}
	for range 1000 {
		port := 10000 + rand.IntN(low-10000)
		if ports.given[port] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		ports.given[port] = true
		return port
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return 0
}

// ports are those freePort gave this test binary: each once.
var ports struct {
	sync.Mutex
	given map[int]bool
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768 by
// default, and when it cannot be read).
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				low = n
			}
		}
	}
	return low
}

// proc is a process the test started; its output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGCONT)
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() || os.Getenv("CANOPY_CLUSTER_LOGS") != "" {
			data, _ := os.ReadFile(logPath)
			n := 3000
			if os.Getenv("CANOPY_CLUSTER_LOGS") == "full" {
				n = len(data)
			}
			t.Logf("--- %s log (last %d bytes) ---\n%s", name, n, tail(data, n))
		}
	})
	return p
}

func (p *proc) signal(s syscall.Signal) { _ = p.cmd.Process.Signal(s) }

// wait waits for the process to exit, up to timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s still running after %s", p.name, timeout)
		return nil
	}
}

func (p *proc) output() []byte {
	data, _ := os.ReadFile(p.log)
	return data
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// server is one canopy server of a test cluster.
type server struct {
	*proc
	id    string
	url   string
	route string
}

// startCluster starts n servers forming one NATS cluster, and waits until
// each serves HTTP (it does once its lease bucket is open).
func startCluster(t *testing.T, n int, extra ...string) []*server {
	t.Helper()
	bin, _ := binaries(t)
	servers := make([]*server, n)
	routes := make([]string, n)
	for i := range servers {
		servers[i] = &server{id: fmt.Sprintf("s%d", i+1)}
		servers[i].url = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
		servers[i].route = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		routes[i] = "nats://" + servers[i].route
	}
	for _, s := range servers {
		args := append([]string{"-addr", strings.TrimPrefix(s.url, "http://"), "-server-id", s.id,
			"-demo=false", "-turn=false", "-loopback-only",
			"-cluster-name", "canopy-test", "-cluster-listen", s.route, "-routes", strings.Join(routes, ","),
			"-store-dir", filepath.Join(t.TempDir(), s.id),
			// Shared, so any server checks a token another issued (a new
			// owner, the resumes of a dead owner's peers).
			"-resume-secret", "cluster-test-secret"}, extra...)
		s.proc = start(t, s.id, bin, args...)
	}
	for _, s := range servers {
		waitFor(t, 90*time.Second, s.id+" serving", func() bool {
			select {
			case <-s.done:
				t.Fatalf("%s exited: %v\n%s", s.id, s.err, tail(s.output(), 2000))
			default:
			}
			resp, err := http.Get(s.url + "/healthz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	return servers
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// treeNode, treeAt: a stream's tree as a server's API gives it (the soak
// reads it the same way).
type treeNode = soak.TreeNode

var treeAt = soak.TreeAt

// watchReport is what `client watch -json` prints.
type watchReport struct {
	Peer        string `json:"peer"`
	Depth       int    `json:"depth"`
	Frames      int    `json:"frames"`
	Undecodable uint64 `json:"undecodableFrames"`
}

func readReport(t *testing.T, p *proc) watchReport {
	t.Helper()
	var r watchReport
	decodeLast(t, p, &r)
	return r
}

// decodeLast decodes the last JSON report a watch printed into v.
func decodeLast(t *testing.T, p *proc, v any) {
	t.Helper()
	out := p.output()
	i := bytes.LastIndex(out, []byte(`{"stream"`))
	if i < 0 {
		t.Fatalf("%s printed no report:\n%s", p.name, tail(out, 2000))
	}
	if err := json.NewDecoder(bytes.NewReader(out[i:])).Decode(v); err != nil {
		t.Fatalf("%s report: %v", p.name, err)
	}
}

// TestClusterViewersOnOtherServers: a source on server 1 (its owner), a
// relay attached through server 3 and viewers on servers 2 and 3. The
// source feeds one child, so the relay takes it and both viewers are fed
// by the relay: every signal between them crosses servers. Each viewer
// gets its complete frames.
func TestClusterViewersOnOtherServers(t *testing.T) {
	servers := startCluster(t, 3)
	_, client := binaries(t)
	const stream = "across"
	start(t, "source", client, "broadcast", "-server", servers[0].url, "-stream", stream, "-capacity", "1", "-loopback-only")
	waitFor(t, 30*time.Second, "the source in the tree at its owner", func() bool {
		nodes, ok := treeAt(servers[0].url, stream)
		return ok && len(nodes) == 1
	})
	start(t, "relay", client, "relay", "-server", servers[2].url, "-stream", stream, "-capacity", "2", "-loopback-only")
	var relayID string
	waitFor(t, 30*time.Second, "the relay under the source", func() bool {
		nodes, _ := treeAt(servers[0].url, stream)
		for _, n := range nodes {
			if n.Role == "relay" && n.Parent != "" {
				relayID = n.ID
				return true
			}
		}
		return false
	})
	if !strings.HasPrefix(relayID, "s3-") {
		t.Errorf("relay id %q: want the id of its edge, s3-…", relayID)
	}
	const frames = 150
	viewers := []*proc{
		start(t, "viewer2", client, "watch", "-server", servers[1].url, "-stream", stream, "-frames", fmt.Sprint(frames), "-json", "-timeout", "90s", "-loopback-only"),
		start(t, "viewer3", client, "watch", "-server", servers[2].url, "-stream", stream, "-frames", fmt.Sprint(frames), "-json", "-timeout", "90s", "-loopback-only"),
	}
	for i, v := range viewers {
		if err := v.wait(t, 2*time.Minute); err != nil {
			t.Fatalf("%s: %v\n%s", v.name, err, tail(v.output(), 2000))
		}
		r := readReport(t, v)
		if r.Frames < frames {
			t.Errorf("%s: %d complete frames, want %d", v.name, r.Frames, frames)
		}
		if want := servers[i+1].id + "-"; !strings.HasPrefix(r.Peer, want) {
			t.Errorf("%s: peer id %q, want one given by its edge (%s…)", v.name, r.Peer, want)
		}
		if r.Depth != 2 {
			t.Errorf("%s: depth %d, want 2 (under the relay)", v.name, r.Depth)
		}
	}
	// The tree lives at its owner; the others ask it (clusterapi.go).
	if owner := ownerAt(servers[1].url, stream); owner != servers[0].id {
		t.Errorf("server 2 names owner %q, want %s", owner, servers[0].id)
	}
}
