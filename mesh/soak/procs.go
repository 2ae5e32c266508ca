package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a process the soak started; its stderr goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // valid after done
}

// startProc starts bin; stdout, when non-nil, receives its standard output.
// The process dies with the soak (Pdeathsig), so an interrupted run leaves
// nothing behind.
func startProc(dir, name, bin string, stdout io.Writer, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = f
	cmd.Stdout = f
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) signal(s syscall.Signal) { _ = p.cmd.Process.Signal(s) }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to end (SIGTERM), then kills it after grace.
func (p *proc) stop(grace time.Duration) {
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.signal(syscall.SIGKILL)
		<-p.done
	}
}

// logTail is the last n bytes of the process's log.
func (p *proc) logTail(n int) string {
	data, _ := os.ReadFile(p.log)
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}

// freePort is a loopback TCP port nobody listens on (a moment ago).
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// server is one canopy server of the soak's cluster.
type server struct {
	*proc
	id  string
	url string
}

// startCluster starts n servers forming one NATS cluster on loopback,
// with the per-address and per-server limits lifted (every peer is on
// 127.0.0.1) and a shared resume secret, and waits until each serves.
func startCluster(ctx context.Context, cfg Config, dir string) ([]*server, error) {
	servers := make([]*server, cfg.Servers)
	routes := make([]string, cfg.Servers)
	listen := make([]string, cfg.Servers)
	for i := range servers {
		hp, err := freePort()
		if err != nil {
			return nil, err
		}
		rp, err := freePort()
		if err != nil {
			return nil, err
		}
		servers[i] = &server{id: fmt.Sprintf("s%d", i+1), url: fmt.Sprintf("http://127.0.0.1:%d", hp)}
		listen[i] = fmt.Sprintf("127.0.0.1:%d", rp)
		routes[i] = "nats://" + listen[i]
	}
	for i, s := range servers {
		args := []string{"-addr", strings.TrimPrefix(s.url, "http://"), "-server-id", s.id,
			"-demo=false", "-turn=false", "-loopback-only", "-log-level", "warn",
			"-max-conns-per-ip", "-1", "-join-rate", "-1", "-max-http-conns-per-ip", "-1", "-max-http-conns", "-1", "-max-peers", "-1",
			"-cluster-name", "soak", "-cluster-listen", listen[i], "-routes", strings.Join(routes, ","),
			"-store-dir", filepath.Join(dir, "store-"+s.id), "-resume-secret", "soak-resume-secret"}
		args = append(args, cfg.ServerFlags...)
		p, err := startProc(dir, s.id, cfg.ServerBin, nil, args...)
		if err != nil {
			return servers[:i], err
		}
		s.proc = p
	}
	for _, s := range servers {
		err := waitUntil(ctx, 90*time.Second, func() bool {
			if s.exited() {
				return true
			}
			resp, err := http.Get(s.url + "/healthz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		if s.exited() {
			return servers, fmt.Errorf("%s exited: %v\n%s", s.id, s.err, s.logTail(2000))
		}
		if err != nil {
			return servers, fmt.Errorf("%s not serving: %w", s.id, err)
		}
	}
	return servers, nil
}

// waitUntil polls cond every 100 ms until it holds, ctx ends or timeout
// passes.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// TreeNode is a row of GET /api/streams/:id/tree.
type TreeNode struct {
	ID     string `json:"id"`
	Parent string `json:"parent"`
	Role   string `json:"role"`
}

// TreeAt reads the stream's tree from a server (its owner's, wherever
// asked): GET /api/streams/<stream>/tree, false on any failure.
func TreeAt(url, stream string) ([]TreeNode, bool) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url + "/api/streams/" + stream + "/tree")
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false
	}
	var body struct {
		Nodes []TreeNode `json:"nodes"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return nil, false
	}
	return body.Nodes, true
}

// goroutines reads go_goroutines from a server's /metrics.
func goroutines(url string) (int, bool) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err == nil
		}
	}
	return 0, false
}

// rssMB is a process's resident memory from /proc, in MB.
func rssMB(pid int) (float64, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(string(v)), "kB")), 64)
			return kb / 1024, err == nil
		}
	}
	return 0, false
}

// loadAvg is /proc/loadavg's first three fields.
func loadAvg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// lineWriter calls fn with each line written to it.
type lineWriter struct {
	mu  sync.Mutex
	buf []byte
	fn  func([]byte)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.fn(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
