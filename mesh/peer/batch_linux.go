package peer

import (
	"encoding/binary"
	"errors"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errGSOUnsupported marks a sendmsg that failed because the socket or the
// route cannot segment: the caller falls back to one datagram per call.
var errGSOUnsupported = errors.New("peer: UDP GSO unsupported")

// gsoSupported reports whether the kernel knows UDP_SEGMENT (Linux 4.18+).
func gsoSupported(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
		ok = err == nil
	})
	return ok
}

// gsoControl appends the control message that asks the kernel to cut the
// datagram into segments of size bytes.
func gsoControl(oob []byte, size int) []byte {
	n := unix.CmsgSpace(2)
	if cap(oob) < n {
		oob = make([]byte, 0, n)
	}
	oob = oob[:n]
	clear(oob)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(size))
	return oob
}

// gsoError classifies a GSO sendmsg error: EIO (no checksum offload on the
// device), EINVAL and EOPNOTSUPP mean this socket cannot use GSO.
func gsoError(err error) error {
	if errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		return errGSOUnsupported
	}
	return err
}
