package impair

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// lab is a set of network namespaces, each with one veth link to a
// bridge in a namespace of its own (a switch): hosts 10.79.0.1, .2, … on
// one /24. Nothing touches the host's own namespace; Cleanup deletes
// every namespace, and with it every link.
type lab struct {
	t      *testing.T
	prefix string
	br     string
	hosts  map[string]*host
}

// host is one namespace of a lab.
type host struct {
	ns   string // namespace name
	ip   string
	port string // its link's end in the bridge namespace
}

// need skips (or, under CI=true, fails) when namespaces cannot be made.
func need(t *testing.T) {
	t.Helper()
	why := ""
	switch {
	case runtime.GOOS != "linux":
		why = "network namespaces are Linux"
	case os.Geteuid() != 0:
		why = "network namespaces need root"
	default:
		for _, tool := range []string{"ip", "tc"} {
			if _, err := exec.LookPath(tool); err != nil {
				why = "no " + tool + " command (iproute2)"
			}
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %s (.ci/run installs iproute2 and runs as root)", why)
	}
	t.Skip(why)
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// newLab makes the bridge namespace. Names carry the test process's pid,
// so parallel runs (and a crashed run's leftovers) never collide.
func newLab(t *testing.T, name string) *lab {
	t.Helper()
	need(t)
	l := &lab{t: t, prefix: fmt.Sprintf("cimp%d%s", os.Getpid()%100000, name), hosts: make(map[string]*host)}
	l.br = l.prefix + "-br"
	if err := run("ip", "netns", "add", l.br); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skipf("cannot make a network namespace here: %v", err)
	}
	t.Cleanup(func() { _ = run("ip", "netns", "del", l.br) })
	for _, args := range [][]string{
		{"ip", "-n", l.br, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", l.br, "link", "set", "br0", "up"},
	} {
		if err := run(args...); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// add makes host name, linked to the bridge, and returns it.
func (l *lab) add(name string) *host {
	l.t.Helper()
	i := len(l.hosts) + 1
	h := &host{ns: l.prefix + "-" + name, ip: fmt.Sprintf("10.79.0.%d", i), port: fmt.Sprintf("p%d", i)}
	if err := run("ip", "netns", "add", h.ns); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { _ = run("ip", "netns", "del", h.ns) })
	for _, args := range [][]string{
		{"ip", "-n", h.ns, "link", "add", "eth0", "type", "veth", "peer", "name", h.port, "netns", l.br},
		{"ip", "-n", l.br, "link", "set", h.port, "master", "br0"},
		{"ip", "-n", l.br, "link", "set", h.port, "up"},
		{"ip", "-n", h.ns, "addr", "add", h.ip + "/24", "dev", "eth0"},
		{"ip", "-n", h.ns, "link", "set", "eth0", "up"},
		{"ip", "-n", h.ns, "link", "set", "lo", "up"},
	} {
		if err := run(args...); err != nil {
			l.t.Fatal(err)
		}
	}
	l.hosts[name] = h
	return h
}

// shapeUpload sets (or replaces) the qdisc on h's own link: what h sends.
func (l *lab) shapeUpload(h *host, qdisc ...string) {
	l.t.Helper()
	if err := run(append([]string{"tc", "-n", h.ns, "qdisc", "replace", "dev", "eth0", "root"}, qdisc...)...); err != nil {
		l.t.Fatal(err)
	}
}

// shapeDownload sets (or replaces) the qdisc on h's link's end in the
// bridge: what everybody sends h.
func (l *lab) shapeDownload(h *host, qdisc ...string) {
	l.t.Helper()
	if err := run(append([]string{"tc", "-n", l.br, "qdisc", "replace", "dev", h.port, "root"}, qdisc...)...); err != nil {
		l.t.Fatal(err)
	}
}

// dial opens a TCP connection from inside h's namespace: the socket is
// made on a thread moved into it, and stays there whichever thread uses it
// later. The thread stays locked, and ends with its goroutine rather than
// go back to the pool in another namespace.
func (h *host) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + h.ns)
		if err != nil {
			done <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{nil, err}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}
