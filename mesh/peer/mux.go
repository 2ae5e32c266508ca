package peer

import (
	"fmt"

	"github.com/pion/ice/v4"
	"github.com/pion/transport/v5/stdnet"
)

// NewUDPMuxFromPort is ice.NewMultiUDPMuxFromPort (one UDP port for every
// PeerConnection, on each interface the options allow) with its sockets
// batched as a Downstream's own are (batch.go): give it to Config.UDPMux, and
// each child's frame still goes to the kernel in one sendmsg. A mux from
// ice directly works too, one datagram per call.
func NewUDPMuxFromPort(port int, opts ...ice.UDPMuxFromPortOption) (ice.UDPMux, error) {
	base, err := stdnet.NewNet()
	if err != nil {
		return nil, fmt.Errorf("peer: network: %w", err)
	}
	n := newBatchNet(base)
	m, err := ice.NewMultiUDPMuxFromPort(port, append(opts, ice.UDPMuxFromPortWithNet(n))...)
	if err != nil {
		return nil, err
	}
	return &batchedMux{MultiUDPMuxDefault: m, net: n}, nil
}

// batchedMux is an ICE UDP mux whose sockets are a batchNet's.
type batchedMux struct {
	*ice.MultiUDPMuxDefault
	net *batchNet
}
