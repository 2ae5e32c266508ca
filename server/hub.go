package main

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// errNoStream means a viewer or relay asked for a stream nobody publishes.
var errNoStream = errors.New("stream not found")

// hub maps stream ids to their coordinators. A stream exists from its
// source's hello until its last peer leaves.
type hub struct {
	log    *slog.Logger
	policy tree.Config

	// names keeps the names of streams whose source dropped (caps.go);
	// maxStreams caps len(streams), negative for no cap.
	names      *nameHolds
	maxStreams int
	// resumer makes and checks resume tokens (resume.go).
	resumer *resumer

	// owns says whether this server holds the stream's lease: only then
	// may it create the stream's coordinator. onRemoved gives the lease up
	// once the stream is gone. Both are called under mu.
	owns      func(stream string) bool
	onRemoved func(stream string)

	// gate makes a stream's gate (-p2p-min-viewers, p2pmin.go); nil: none.
	gate func(stream string) *p2pGate
	// keepRelay holds the server's relay node in a stream's tree
	// (Server.keepRelay); nil: none (noverify.go).
	keepRelay func(stream string) (stop func())

	mu      sync.Mutex
	streams map[string]*coordinator
	// ended holds the final figures of streams that are gone, and the joins
	// refused before any stream existed, so metrics never go backwards.
	ended streamTotals
}

func newHub(policy tree.Config, log *slog.Logger) *hub {
	return &hub{log: log, policy: policy, streams: make(map[string]*coordinator), ended: newStreamTotals(),
		names: newNameHolds(DefaultReclaimGrace), maxStreams: -1, resumer: newResumer(ResumeConfig{})}
}

// join finds or creates the coordinator for hello's stream and places p.
// A source must get past the name kept for a source that dropped; it is
// handed a fresh reclaim secret in its welcome.
func (h *hub) join(p *peerConn, hello *protocol.Message) (*coordinator, error) {
	if hello.Role == protocol.RoleSource {
		if err := h.names.check(hello.Stream, hello.Reclaim, p.grant); err != nil {
			h.refused(hello.Stream, hello.Role, outcomeStreamTaken)
			return nil, err
		}
		p.reclaim = newReclaimSecret()
	}
	c, err := h.place(p, hello)
	if err == nil && hello.Role == protocol.RoleSource {
		h.names.release(hello.Stream) // its name is its own again
	}
	return c, err
}

// place finds or creates the coordinator and places p in its tree.
func (h *hub) place(p *peerConn, hello *protocol.Message) (*coordinator, error) {
	for {
		c, err := h.find(hello)
		if err != nil {
			return nil, err
		}
		err = c.join(p, hello)
		if errors.Is(err, errRemoved) {
			continue // lost a race with the stream's removal: look again
		}
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

func (h *hub) find(hello *protocol.Message) (*coordinator, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.streams[hello.Stream]
	if c == nil {
		if hello.Role != protocol.RoleSource {
			h.ended.Joins[joinKey{hello.Role, outcomeNotFound}]++
			return nil, errNoStream
		}
		if h.owns != nil && !h.owns(hello.Stream) {
			return nil, errNotOwner
		}
		if h.maxStreams >= 0 && len(h.streams) >= h.maxStreams {
			h.ended.Joins[joinKey{hello.Role, outcomeRefused}]++
			return nil, fmt.Errorf("%w (%d)", errTooManyStreams, h.maxStreams)
		}
		c = h.create(hello.Stream)
	}
	return c, nil
}

// create makes and registers stream's coordinator. Called with h.mu held.
func (h *hub) create(stream string) *coordinator {
	var self *coordinator
	self = newCoordinator(stream, h.policy, h.log, func() { h.remove(self) })
	self.sourceLost = func(secret string) { h.names.hold(self.id, secret) }
	self.resume = h.resumer
	if h.gate != nil {
		self.gate = h.gate(stream)
	}
	self.keepRelay = h.keepRelay
	h.streams[stream] = self
	return self
}

// remove drops c when it is still the stream's coordinator. It runs under
// c.mu (from onEmpty), so it must not call back into c.
func (h *hub) remove(c *coordinator) {
	go func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.streams[c.id] != c {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.peers) == 0 {
			c.removed = true
			delete(h.streams, c.id)
			h.ended.add(c.obs.snapshot())
			if h.onRemoved != nil {
				h.onRemoved(c.id)
			}
		}
	}()
}

func (h *hub) get(id string) *coordinator {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams[id]
}

func (h *hub) list() []streamInfo {
	h.mu.Lock()
	cs := make([]*coordinator, 0, len(h.streams))
	for _, c := range h.streams {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	out := make([]streamInfo, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
