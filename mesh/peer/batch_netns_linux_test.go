package peer

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/pion/transport/v5/stdnet"
	"golang.org/x/sys/unix"
)

// netnsPair makes two network namespaces joined by a veth pair, a device
// with an Ethernet MTU of 1500 unlike loopback's 64 KiB, addressed
// 10.77.0.1 and 10.77.0.2. Nothing touches the host's own namespace. It
// skips where namespaces cannot be made (no root, no iproute2).
func netnsPair(t *testing.T) (a, b string) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command (iproute2)")
	}
	a, b = fmt.Sprintf("canopy-a-%d", os.Getpid()), fmt.Sprintf("canopy-b-%d", os.Getpid())
	run := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
		return nil
	}
	if err := run("netns", "add", a); err != nil {
		t.Skipf("cannot make a network namespace here: %v", err)
	}
	t.Cleanup(func() { _ = run("netns", "del", a) })
	if err := run("netns", "add", b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run("netns", "del", b) })
	for _, args := range [][]string{
		{"-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", b},
		{"-n", a, "addr", "add", "10.77.0.1/24", "dev", "veth0"},
		{"-n", b, "addr", "add", "10.77.0.2/24", "dev", "veth1"},
		{"-n", a, "link", "set", "veth0", "up"},
		{"-n", b, "link", "set", "veth1", "up"},
	} {
		if err := run(args...); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// inNetns runs fn on a thread moved into namespace name; sockets fn opens
// stay in that namespace, whichever thread uses them later.
func inNetns(t *testing.T, name string, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		// The thread is left locked: it ends with this goroutine rather
		// than return to the pool in another namespace.
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + name)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestBatchConnOverEthernetMTU: across a veth device (MTU 1500), a frame's
// datagrams go out in one GSO send and arrive as the datagrams written; a
// run whose datagrams exceed the MTU is refused by GSO, goes out one by one
// (IP fragments) and arrives whole, and GSO stays on for the next run.
func TestBatchConnOverEthernetMTU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nsA, nsB := netnsPair(t)

	var (
		n   *batchNet
		c   *batchConn
		rcv *net.UDPConn
	)
	inNetns(t, nsA, func() {
		base, err := stdnet.NewNet()
		if err != nil {
			t.Error(err)
			return
		}
		n = newBatchNet(base)
		uc, err := n.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 77, 0, 1)})
		if err != nil {
			t.Error(err)
			return
		}
		c = uc.(*batchConn)
	})
	inNetns(t, nsB, func() {
		var err error
		if rcv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 77, 0, 2), Port: 40000}); err != nil {
			t.Error(err)
		}
	})
	if t.Failed() {
		return
	}
	defer c.Close()
	defer rcv.Close()
	if !c.gso {
		t.Skip("this kernel has no UDP_SEGMENT")
	}
	to := netip.MustParseAddrPort("10.77.0.2:40000")

	var want []int
	send := func(sizes ...int) {
		n.begin()
		for i, s := range sizes {
			if _, err := c.WriteToAddrPort(datagram(len(want)+i, s), to); err != nil {
				t.Fatal(err)
			}
		}
		n.flush()
		want = append(want, sizes...)
	}
	send(1200, 1200, 1200, 1200, 1200, 1200, 1200, 1200, 1200, 700) // one frame
	send(1600, 1600, 1600)                                          // above the MTU
	send(1000, 1000, 1000, 1000)                                    // GSO again

	buf := make([]byte, 65536)
	for i, size := range want {
		_ = rcv.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, _, err := rcv.ReadFromUDPAddrPort(buf)
		if err != nil || ctx.Err() != nil {
			t.Fatalf("datagram %d of %d: %v", i, len(want), err)
		}
		if k != size || string(buf[:k]) != string(datagram(i, size)) {
			t.Fatalf("datagram %d: %d bytes, want %d (or different bytes)", i, k, size)
		}
	}
	packets, sends, errs := n.stats()
	// 1 send for the frame, 3 for the oversized run, 1 for the last run.
	if packets != uint64(len(want)) || sends != 5 || errs != 0 || !c.gso {
		t.Fatalf("%d datagrams in %d sends, %d errors, GSO %v; want %d in 5, none, on", packets, sends, errs, c.gso, len(want))
	}
}
