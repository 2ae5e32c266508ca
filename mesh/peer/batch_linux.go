package peer

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sendmsg holds a batchConn's sendmsg(2) arguments. The call is made raw,
// outside the runtime's system-call accounting: a GSO send of a frame takes
// tens of microseconds on loopback (the receiver's softirq runs in it), long
// enough that the runtime's monitor would hand the P to another thread
// during every one, and that hand-off cost more than the send. The socket is
// non-blocking: EAGAIN parks the goroutine in the poller, as the net
// package's own writes do.
type sendmsg struct {
	rc     syscall.RawConn
	family int
	msg    unix.Msghdr
	iov    unix.Iovec
	sa4    unix.RawSockaddrInet4
	sa6    unix.RawSockaddrInet6
	oob    [32]byte
	err    error
	fn     func(fd uintptr) bool // m.do, bound once
}

// init prepares the arguments for socket c and reports whether the kernel
// knows UDP_SEGMENT (Linux 4.18+).
func (m *sendmsg) init(c *net.UDPConn) (gso bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	_ = rc.Control(func(fd uintptr) {
		if d, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil {
			m.family = d
		}
		_, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
		gso = err == nil
	})
	if m.family != unix.AF_INET && m.family != unix.AF_INET6 {
		return false
	}
	m.rc = rc
	m.fn = m.do
	return gso
}

// send writes buf to to: one datagram, or with GSO datagrams of seg bytes
// (the last may be shorter) when seg < len(buf).
func (c *batchConn) send(buf []byte, seg int, to netip.AddrPort) error {
	m := &c.sys
	if m.rc == nil || to.Addr().Zone() != "" {
		if seg < len(buf) {
			return errGSOUnsupported
		}
		_, err := c.writeOne(buf, to)
		return err
	}
	ip := to.Addr()
	switch {
	case m.family == unix.AF_INET && ip.Unmap().Is4():
		m.sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ip.Unmap().As4()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&m.sa4.Port))[:], to.Port())
		m.msg.Name, m.msg.Namelen = (*byte)(unsafe.Pointer(&m.sa4)), unix.SizeofSockaddrInet4
	case m.family == unix.AF_INET6:
		m.sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ip.As16()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&m.sa6.Port))[:], to.Port())
		m.msg.Name, m.msg.Namelen = (*byte)(unsafe.Pointer(&m.sa6)), unix.SizeofSockaddrInet6
	default:
		return &net.AddrError{Err: "address family mismatch", Addr: to.String()}
	}
	m.iov.Base = &buf[0]
	m.iov.SetLen(len(buf))
	m.msg.Iov = &m.iov
	m.msg.SetIovlen(1)
	m.msg.Control, m.msg.Controllen = nil, 0
	if seg < len(buf) {
		n := unix.CmsgSpace(2)
		clear(m.oob[:n])
		h := (*unix.Cmsghdr)(unsafe.Pointer(&m.oob[0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
		binary.NativeEndian.PutUint16(m.oob[unix.CmsgLen(0):], uint16(seg))
		m.msg.Control = &m.oob[0]
		m.msg.SetControllen(n)
	}
	m.err = nil
	err := m.rc.Write(m.fn)
	runtime.KeepAlive(buf)
	if err == nil {
		err = m.err
	}
	if seg < len(buf) {
		switch {
		case errors.Is(err, unix.EIO), errors.Is(err, unix.EOPNOTSUPP):
			return errGSOUnsupported // no checksum offload on the device
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EMSGSIZE):
			return errGSORefused // segments larger than the route allows
		}
	}
	return err
}

// do is the raw call; false asks the poller to wait until it can write.
func (m *sendmsg) do(fd uintptr) bool {
	for {
		_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&m.msg)), 0)
		switch e {
		case 0:
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			m.err = e
			return true
		}
	}
}
