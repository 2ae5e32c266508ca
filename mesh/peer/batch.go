package peer

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pion/transport/v5"
)

// Send batching. Each datagram a relay sends costs a trip through the
// kernel's UDP stack, and on a relay that trip is most of the CPU a
// forwarded packet costs (FIELD-NOTES: one sendto per packet per child is
// "where the time goes"). A child's writer drains its queue a frame or more
// at a time, so its datagrams to the same address come in runs of equal
// size; batchConn hands such a run to the kernel in one sendmsg with UDP
// generic segmentation offload (UDP_SEGMENT), which walks the stack once per
// run instead of once per packet. Where GSO is missing (not Linux, an old
// kernel, a device without checksum offload) the run is written a datagram
// at a time, as without batching.
//
// pion writes through the net.PacketConn its ICE agent opened, so the
// batching sits below pion: a batchNet is the transport.Net of one
// Downstream's PeerConnection and wraps every UDP socket that agent opens
// (or of the mux NewUDPMuxFromPort makes, whose sockets every Downstream
// shares).
// While one of the Downstream's writers is in a pass (begin … flush),
// datagrams written to those sockets (SRTP from the writers, and any RTCP or
// STUN written meanwhile) are queued; flush sends them. Outside a pass a
// write goes straight out.

// Batch bounds: UDP_SEGMENT takes at most 64 segments (UDP_MAX_SEGMENTS on
// older kernels) and one datagram of at most 64 KiB before segmentation.
const (
	maxBatchPackets = 64
	maxBatchBytes   = 60 << 10
)

// Send errors that make a batchConn send a run one datagram at a time: for
// good when the device cannot segment, for this run when the kernel
// refused its segment size.
var (
	errGSOUnsupported = errors.New("peer: UDP GSO unsupported")
	errGSORefused     = errors.New("peer: UDP GSO segment refused")
)

// batchNet is the transport.Net of one PeerConnection, or of a shared mux:
// the host's network, with every UDP socket wrapped in a batchConn.
type batchNet struct {
	transport.Net

	mu    sync.Mutex
	conns []*batchConn

	queued atomic.Uint64 // datagrams its sockets queued in passes, all told
}

func newBatchNet(base transport.Net) *batchNet { return &batchNet{Net: base} }

// ListenUDP opens a socket for the ICE agent and wraps it.
func (n *batchNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	b := newBatchConn(c)
	b.counted = &n.queued
	n.mu.Lock()
	n.conns = append(n.conns, b)
	n.mu.Unlock()
	return b, nil
}

// begin starts a pass: datagrams are queued until the matching flush.
// Passes of several writers (a child's audio and video) may overlap; the
// queue goes out at each flush and writes go straight out again after the
// last one. A nil batchNet does nothing.
func (n *batchNet) begin() {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.conns {
		c.begin()
	}
}

// flush sends what was queued since begin and ends the pass.
func (n *batchNet) flush() {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.conns {
		c.flush()
	}
}

// stats sums the conns' counters: datagrams sent in batches, the sendmsg
// calls that carried them, and the calls that failed.
func (n *batchNet) stats() (packets, sends, errs uint64) {
	if n == nil {
		return 0, 0, 0
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.conns {
		packets += c.batched.Load()
		sends += c.sends.Load()
		errs += c.errs.Load()
	}
	return packets, sends, errs
}

// queuedTotal counts the datagrams queued in passes so far, over every
// socket: a pass that wrote k packets and saw this grow by k knows they all
// went through the connection's own sockets, not a TCP or TURN path.
func (n *batchNet) queuedTotal() uint64 {
	if n == nil {
		return 0
	}
	return n.queued.Load()
}

// queued is one datagram waiting in a batchConn: buf[off:off+n] to to.
type queued struct {
	off, n int
	to     netip.AddrPort
}

// batchConn is a UDP socket whose writes are queued during a pass and sent
// in runs, one sendmsg per run of equal-sized datagrams to one address.
type batchConn struct {
	transport.UDPConn
	raw *net.UDPConn // nil if the socket is not the host's (a vnet): no GSO

	mu    sync.Mutex
	depth int // passes in progress
	gso   bool
	buf   []byte
	q     []queued
	sys   sendmsg // the system call's arguments, reused (batch_linux.go)

	counted *atomic.Uint64 // its batchNet's count of queued datagrams; nil: none
	batched atomic.Uint64  // datagrams sent from the queue
	sends   atomic.Uint64  // system calls that sent them
	errs    atomic.Uint64
}

func newBatchConn(c transport.UDPConn) *batchConn {
	b := &batchConn{UDPConn: c} // buffers come with the first pass that queues
	if raw, ok := c.(*net.UDPConn); ok {
		b.raw = raw
		b.gso = b.sys.init(raw)
	}
	return b
}

func (c *batchConn) begin() {
	c.mu.Lock()
	c.depth++
	c.mu.Unlock()
}

func (c *batchConn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sendQueued()
	if c.depth > 0 {
		c.depth--
	}
}

// WriteToAddrPort sends b to addr, or queues it during a pass. It is what
// pion's ICE candidates write through (ice.AddrPortReaderWriter).
func (c *batchConn) WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	c.mu.Lock()
	if c.depth == 0 || len(b) > maxBatchBytes {
		// Outside a pass the queue is empty (the last flush sent it); a
		// datagram too large to queue goes after what is queued.
		c.sendQueued()
		c.mu.Unlock()
		return c.writeOne(b, addr)
	}
	if c.buf == nil {
		c.buf, c.q = make([]byte, 0, maxBatchBytes), make([]queued, 0, maxBatchPackets)
	}
	if len(c.q) == maxBatchPackets || len(c.buf)+len(b) > maxBatchBytes {
		c.sendQueued()
	}
	off := len(c.buf)
	c.buf = append(c.buf, b...)
	c.q = append(c.q, queued{off: off, n: len(b), to: addr})
	c.mu.Unlock()
	if c.counted != nil {
		c.counted.Add(1)
	}
	return len(b), nil
}

// WriteTo is net.PacketConn's write; UDP addresses take the batched path.
func (c *batchConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		return c.WriteToUDP(b, ua)
	}
	return c.UDPConn.WriteTo(b, addr)
}

// WriteToUDP is transport.UDPConn's write.
func (c *batchConn) WriteToUDP(b []byte, addr *net.UDPAddr) (int, error) {
	return c.WriteToAddrPort(b, addr.AddrPort())
}

// ReadFromAddrPort completes ice.AddrPortReaderWriter, so pion keeps its
// allocation-free read path.
func (c *batchConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	if c.raw != nil {
		return c.raw.ReadFromUDPAddrPort(b)
	}
	n, addr, err := c.UDPConn.ReadFrom(b)
	var ap netip.AddrPort
	if ua, ok := addr.(*net.UDPAddr); ok {
		ap = ua.AddrPort()
	}
	return n, ap, err
}

func (c *batchConn) writeOne(b []byte, addr netip.AddrPort) (int, error) {
	if c.raw != nil {
		return c.raw.WriteToUDPAddrPort(b, addr)
	}
	return c.UDPConn.WriteTo(b, net.UDPAddrFromAddrPort(addr))
}

// sendQueued sends the queue, called with mu held: each run of datagrams
// to one address with one size (the run's last may be shorter, as GSO
// allows) in one sendmsg, the rest one by one. Errors are counted, not
// returned: the writes they belong to have returned already, and a socket
// that fails stays failed for the writes that follow.
func (c *batchConn) sendQueued() {
	q := c.q
	for i := 0; i < len(q); {
		j := i + 1
		if c.gso {
			for j < len(q) && q[j].to == q[i].to && q[j].n <= q[i].n && q[j-1].n == q[i].n {
				j++
			}
		}
		first, last := q[i], q[j-1]
		err := c.send(c.buf[first.off:last.off+last.n], first.n, first.to)
		if errors.Is(err, errGSOUnsupported) || errors.Is(err, errGSORefused) {
			c.gso = c.gso && errors.Is(err, errGSORefused)
			for ; i < j; i++ {
				if err := c.send(c.buf[q[i].off:q[i].off+q[i].n], q[i].n, q[i].to); err != nil {
					c.errs.Add(1)
				}
				c.sends.Add(1)
				c.batched.Add(1)
			}
			continue
		}
		if err != nil {
			c.errs.Add(1)
		}
		c.sends.Add(1)
		c.batched.Add(uint64(j - i))
		i = j
	}
	c.q, c.buf = q[:0], c.buf[:0]
}
