//go:build !linux

package peer

import (
	"net"
	"net/netip"
)

// sendmsg is empty: UDP segmentation offload is Linux's, so elsewhere a
// batchConn sends its queue one datagram at a time.
type sendmsg struct{}

func (*sendmsg) init(*net.UDPConn) bool { return false }

func (c *batchConn) send(buf []byte, seg int, to netip.AddrPort) error {
	if seg < len(buf) {
		return errGSOUnsupported
	}
	_, err := c.writeOne(buf, to)
	return err
}
