package peer

import "canopy/mesh/protocol"

// NewStandbyDownstream creates a hot standby link to a child: the same
// PeerConnection and tracks as NewDownstream, negotiated the same way (the
// parent offers), so ICE and DTLS complete and keep themselves alive, but
// no track joins its Forwarder, and so no RTP is sent and no keyframe is
// asked for, until Promote. Promoting costs no negotiation: the child's
// tracks join their Forwarders at once and each video track starts from
// the cached GOP, so a child whose parent failed decodes within a frame or
// two of the promote arriving.
func (a *API) NewStandbyDownstream(childID string, fwds []*Forwarder, send func(protocol.Signal), opts ...DownstreamOption) (*Downstream, error) {
	return a.newDownstream(childID, fwds, send, make(chan struct{}), opts...)
}

// Promote starts media on a standby link (see NewStandbyDownstream). It
// does nothing on a link that is not a standby one or is already promoted.
// If the connection is not up yet, media starts when it is.
func (d *Downstream) Promote() {
	if d.hold != nil {
		d.promoteOnce.Do(func() { close(d.hold) })
	}
}

// Standby reports whether d is a standby link not yet promoted.
func (d *Downstream) Standby() bool {
	if d.hold == nil {
		return false
	}
	select {
	case <-d.hold:
		return false
	default:
		return true
	}
}

// Connected reports whether the connection has been up (ICE and DTLS
// done) and has not failed or closed since.
func (u *Upstream) Connected() bool {
	select {
	case <-u.done:
		return false
	default:
	}
	select {
	case <-u.connected:
		return true
	default:
		return false
	}
}

// HasRemote reports whether the parent's offer has been applied.
func (u *Upstream) HasRemote() bool {
	u.remoteMu.Lock()
	defer u.remoteMu.Unlock()
	return u.remoteSet
}
