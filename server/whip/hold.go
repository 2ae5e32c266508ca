package whip

import (
	"context"
	"sync"
)

// Hold keeps stream's WHEP relay in the tree whether it has players or
// not, joining one if there is none, until release is called: the server's
// relay that feeds a small audience itself (-p2p-min-viewers) is this node,
// so the source sends one stream for that audience and the WHEP players
// alike. done is closed when the relay node stops (the caller holds the
// next one); id is its peer id in the tree.
func (h *Handler) Hold(ctx context.Context, stream string, connect Connect) (id string, done <-chan struct{}, release func(), err error) {
	r, err := h.relayFor(ctx, stream, connect)
	if err != nil {
		return "", nil, nil, err
	}
	h.mu.Lock()
	r.holds++
	if r.idle != nil {
		r.idle.Stop()
		r.idle = nil
	}
	h.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			h.mu.Lock()
			r.holds--
			h.mu.Unlock()
			h.relayMaybeIdle(r)
		})
	}
	return r.node.ID(), r.node.Done(), release, nil
}
