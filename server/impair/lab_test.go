package impair

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"canopy/mesh/protocol"
)

// node is one row of the server's GET /api/streams/<id>/tree.
type node struct {
	ID       string   `json:"id"`
	Parent   string   `json:"parent"`
	Role     string   `json:"role"`
	Capacity int      `json:"capacity"`
	Usable   int      `json:"usable"`
	Trust    string   `json:"trust"`
	Depth    int      `json:"depth"`
	Children []string `json:"children"`
}

// server is the real server binary running in a lab host.
type server struct {
	*proc
	url    string
	client *http.Client
}

// startServer builds (once) and runs the server in h's namespace, without
// the demo stream, and waits until it answers.
func startServer(t *testing.T, h *host, args ...string) *server {
	t.Helper()
	if err := buildOnce(); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(h.ip, "8080") // a namespace of its own: no port to share
	p := start(t, h, "server", nil, append([]string{serverBin, "-addr", addr, "-demo=false", "-log-level", "info"}, args...)...)
	s := &server{proc: p, url: "http://" + addr, client: &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DialContext: h.dial},
	}}
	waitFor(t, 60*time.Second, "the server answers", func() bool {
		r, err := s.client.Get(s.url + "/healthz")
		if err != nil {
			return false
		}
		_ = r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
	return s
}

// tree returns the stream's nodes by id.
func (s *server) tree(t *testing.T) map[string]node {
	t.Helper()
	r, err := s.client.Get(s.url + "/api/streams/impair/tree")
	if err != nil {
		return nil
	}
	defer r.Body.Close()
	var v struct {
		Nodes []node `json:"nodes"`
	}
	if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
		return nil
	}
	out := make(map[string]node, len(v.Nodes))
	for _, n := range v.Nodes {
		out[n.ID] = n
	}
	return out
}

// startSource runs a Go source of the demo clip in h and waits until the
// stream is live: a relay or viewer that asks before is refused.
func startSource(t *testing.T, h *host, srv *server, capacity int) *proc {
	t.Helper()
	p := startPeer(t, h, "source", srv.url, protocol.RoleSource, capacity)
	waitFor(t, 30*time.Second, "the stream is live", func() bool { return len(srv.tree(t)) > 0 })
	return p
}

// waitFor polls cond every 100 ms until it holds or timeout passes; the
// timeout is a safety net, never a measurement.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitPlaying waits until each peer has an id and has played frames more
// than it had.
func waitPlaying(t *testing.T, timeout time.Duration, frames uint64, ps ...*proc) {
	t.Helper()
	for _, p := range ps {
		f0 := p.state().Frames
		waitFor(t, timeout, p.name+" plays", func() bool { return p.state().Frames >= f0+frames })
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func ms(v float64) string { return fmt.Sprintf("%.0f ms", v) }
