//go:build !linux

package peer

import (
	"errors"
	"net"
)

var errGSOUnsupported = errors.New("peer: UDP GSO unsupported")

// gsoSupported is false: UDP segmentation offload is Linux's.
func gsoSupported(*net.UDPConn) bool { return false }

func gsoControl(oob []byte, _ int) []byte { return oob }

func gsoError(err error) error { return err }
