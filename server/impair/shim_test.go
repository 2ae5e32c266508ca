package impair

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A hop with loss and delay: tc netem where the kernel has it. This
// machine's kernel has no netem (CONFIG_NET_SCH_NETEM unset; tbf and htb
// only), so where netem is missing the lab puts a shim in the link
// instead: a namespace between the host and the bridge whose two links a
// pair of AF_PACKET sockets join in user space, delaying and dropping the
// frames towards the host as netem would (a fixed delay, independent
// random loss per frame). The bridge's port towards the shim segments GSO
// batches (gso_max_segs 1), so each frame is one datagram.

// impairment is a hop's loss and delay, changed while it runs.
type impairment interface {
	set(loss float64, delay time.Duration)
	name() string
}

// impairDownload makes what everybody sends h pass a lossy, delayed hop.
// Call it before anything connects to h: without netem the link is
// rebuilt through a shim.
func (l *lab) impairDownload(h *host) impairment {
	l.t.Helper()
	if run("tc", "-n", l.br, "qdisc", "replace", "dev", h.port, "root", "netem", "delay", "0ms") == nil {
		return &netem{l: l, h: h}
	}
	return l.shim(h)
}

type netem struct {
	l *lab
	h *host
}

func (n *netem) name() string { return "tc netem" }

func (n *netem) set(loss float64, delay time.Duration) {
	n.l.shapeDownload(n.h, "netem", "delay", fmt.Sprintf("%dms", delay.Milliseconds()), "loss", fmt.Sprintf("%.2f%%", 100*loss))
}

// shimLink is the user-space hop.
type shimLink struct {
	loss   atomic.Uint64 // math.Float64bits of the drop probability
	delay  atomic.Int64  // nanoseconds
	stop   atomic.Bool
	wg     sync.WaitGroup
	fds    [2]int
	ifidx  [2]int
	frames atomic.Uint64 // towards the host
	drops  atomic.Uint64
	large  atomic.Uint64 // frames above the MTU (GSO not segmented)
	// late is the most a frame towards the host left after its time (ns)
	// since lateness() last read it: the shim's own scheduling, which a
	// starved machine delays (netem runs in the kernel and is not).
	late atomic.Int64
}

// lateness returns the most a frame left after its time since the last
// call, and starts a new window.
func (s *shimLink) lateness() time.Duration { return time.Duration(s.late.Swap(0)) }

// shimPriority is the nice value of the shim's threads: netem runs in the
// kernel's softirqs, ahead of any process; the shim's threads should at
// least come before the browsers and peers they impair.
const shimPriority = -15

// prioritize locks the goroutine to its thread and raises the thread's
// priority (root may; elsewhere it stays as it was).
func prioritize() {
	runtime.LockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), shimPriority)
}

func (s *shimLink) name() string { return "user-space shim (no netem in this kernel)" }

func (s *shimLink) set(loss float64, delay time.Duration) {
	s.loss.Store(uint64(loss * 1e9))
	s.delay.Store(int64(delay))
}

// shim moves h's link to the bridge through a namespace of its own.
func (l *lab) shim(h *host) *shimLink {
	l.t.Helper()
	mid := h.ns + "-m"
	must := func(args ...string) {
		l.t.Helper()
		if err := run(args...); err != nil {
			l.t.Fatal(err)
		}
	}
	must("ip", "netns", "add", mid)
	l.t.Cleanup(func() { _ = run("ip", "netns", "del", mid) })
	// h's link: its bridge end moves into mid (as "toh"); a new link joins
	// mid ("tobr") to the bridge (port h.port+"s").
	must("ip", "-n", l.br, "link", "set", h.port, "nomaster")
	must("ip", "-n", l.br, "link", "set", h.port, "netns", mid)
	must("ip", "-n", mid, "link", "set", h.port, "name", "toh")
	must("ip", "-n", mid, "link", "add", "tobr", "type", "veth", "peer", "name", h.port+"s", "netns", l.br)
	must("ip", "-n", l.br, "link", "set", h.port+"s", "gso_max_segs", "1")
	must("ip", "-n", l.br, "link", "set", h.port+"s", "master", "br0")
	must("ip", "-n", l.br, "link", "set", h.port+"s", "up")
	must("ip", "-n", mid, "link", "set", "toh", "gso_max_segs", "1")
	for _, dev := range []string{"toh", "tobr"} {
		must("ip", "-n", mid, "link", "set", dev, "promisc", "on")
		must("ip", "-n", mid, "link", "set", dev, "up")
	}
	h.port = h.port + "s"
	s := &shimLink{}
	if err := inNamespace(mid, func() error {
		for i, dev := range []string{"tobr", "toh"} {
			ifi, err := net.InterfaceByName(dev)
			if err != nil {
				return err
			}
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
			if err != nil {
				return err
			}
			if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
				return err
			}
			// Each frame comes with a virtio-net header saying where its
			// checksum still has to go (veths leave it to the "hardware")
			// and how it is segmented; sending it back with the frame lets
			// the kernel finish both.
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
				return err
			}
			tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				return err
			}
			s.fds[i], s.ifidx[i] = fd, ifi.Index
		}
		return nil
	}); err != nil {
		l.t.Fatal(err)
	}
	s.wg.Go(func() { s.pump(0, 1, true) })  // bridge → host: impaired
	s.wg.Go(func() { s.pump(1, 0, false) }) // host → bridge: as is
	l.t.Cleanup(func() {
		s.stop.Store(true)
		s.wg.Wait()
		_ = unix.Close(s.fds[0])
		_ = unix.Close(s.fds[1])
		l.t.Logf("shim: %d frames towards the host, %d dropped, %d above the MTU", s.frames.Load(), s.drops.Load(), s.large.Load())
	})
	return s
}

type delayed struct {
	at    time.Time
	frame []byte
}

// pump copies the frames arriving on fds[from] out of fds[to], dropping
// and delaying them when impaired. One sender goroutine keeps the order.
func (s *shimLink) pump(from, to int, impaired bool) {
	q := make(chan delayed, 8192)
	var send sync.WaitGroup
	send.Go(func() {
		prioritize()
		dst := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: s.ifidx[to]}
		for d := range q {
			if w := time.Until(d.at); w > 0 {
				// Sleep in the kernel, on this thread: a Go timer would
				// wait for the runtime's other threads to notice it.
				ts := unix.NsecToTimespec(int64(w))
				for unix.Nanosleep(&ts, &ts) == unix.EINTR {
				}
			}
			_ = unix.Sendto(s.fds[to], d.frame, 0, dst)
			if impaired {
				for l := int64(time.Since(d.at)); ; {
					old := s.late.Load()
					if l <= old || s.late.CompareAndSwap(old, l) {
						break
					}
				}
			}
		}
	})
	defer send.Wait()
	defer close(q)
	prioritize()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(from)))
	buf := make([]byte, 65536)
	for !s.stop.Load() {
		n, sa, err := unix.Recvfrom(s.fds[from], buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if ll, ok := sa.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue // our own send on this device
		}
		frame := append([]byte(nil), buf[:n]...)
		at := time.Now()
		if impaired {
			s.frames.Add(1)
			if n > vnetHdrLen+1514 {
				s.large.Add(1)
			}
			if p := float64(s.loss.Load()) / 1e9; p > 0 && rng.Float64() < p {
				s.drops.Add(1)
				continue
			}
			at = at.Add(time.Duration(s.delay.Load()))
		}
		select {
		case q <- delayed{at, frame}:
		default: // a full queue drops, as a full netem queue would
		}
	}
}

// vnetHdrLen is the virtio_net_hdr before each frame with PACKET_VNET_HDR.
const vnetHdrLen = 10

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// inNamespace runs fn on a thread moved into namespace ns; sockets it
// makes stay there. The thread ends with its goroutine.
func inNamespace(ns string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	return <-done
}
