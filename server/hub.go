package main

import (
	"errors"
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

	mu      sync.Mutex
	streams map[string]*coordinator
	// ended holds the final figures of streams that are gone, and the joins
	// refused before any stream existed, so metrics never go backwards.
	ended streamTotals
}

func newHub(policy tree.Config, log *slog.Logger) *hub {
	return &hub{log: log, policy: policy, streams: make(map[string]*coordinator), ended: newStreamTotals()}
}

// join finds or creates the coordinator for hello's stream and places p.
func (h *hub) join(p *peerConn, hello *protocol.Message) (*coordinator, error) {
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
		var self *coordinator
		self = newCoordinator(hello.Stream, h.policy, h.log, func() { h.remove(self) })
		c = self
		h.streams[hello.Stream] = c
	}
	return c, nil
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
