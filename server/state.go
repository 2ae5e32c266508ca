package main

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
	"canopy/server/cluster"
)

// A stream's state as its owner publishes it to the cluster
// (cluster/state.go), as keyed entries, so a change costs its own
// entries and not the whole state:
//   - "n/<id>": a peer's tree row (tree.NodeInfo, depth and children
//     left out: the copy derives them from the parents) with what the
//     owner knows of the peer beyond it (peerState) and its standby parent;
//   - "m": the stream's tracks and source key;
//   - "b/<key>": a bar for tampering (bars.go) and when it ends.
// The coordinator records which keys changed (the tree's journal for the
// rows, marks for the rest) once a cluster asks for its state.

const (
	stateNodePrefix = "n/"
	stateBarPrefix  = "b/"
	stateMetaKey    = "m"
)

// nodeState is one "n/" entry.
type nodeState struct {
	Node    tree.NodeInfo `json:"node"`
	Peer    *peerState    `json:"peer,omitempty"`
	Standby string        `json:"standby,omitempty"`
}

// metaState is the "m" entry.
type metaState struct {
	Tracks    []protocol.Track `json:"tracks,omitempty"`
	SourceKey string           `json:"sourceKey,omitempty"`
}

// clusterState is a stream's state for the cluster: its coordinator's,
// whichever coordinator the hub has for it now.
type clusterState struct {
	h      *hub
	stream string
}

// locked runs f with the stream's coordinator locked; nil when the hub
// has none (or it was removed).
func (s clusterState) locked(f func(c *coordinator) []cluster.Entry) []cluster.Entry {
	c := s.h.get(s.stream)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return nil
	}
	return f(c)
}

// Changed implements cluster.StateSource.
func (s clusterState) Changed() []cluster.Entry { return s.locked(changedEntries) }

// changedEntries are the entries changed since the last call. Called
// with c.mu held.
func changedEntries(c *coordinator) []cluster.Entry {
	if c.stateDirty == nil {
		// Its first: a coordinator made after the claim (or before its
		// first snapshot) says everything once.
		c.startState()
		c.markAllState()
	}
	for _, id := range c.tree.Touched() {
		c.stateDirty[stateNodePrefix+id] = struct{}{}
	}
	if len(c.stateDirty) == 0 {
		return nil
	}
	keys := make([]string, 0, len(c.stateDirty))
	for k := range c.stateDirty {
		keys = append(keys, k)
	}
	clear(c.stateDirty)
	slices.Sort(keys)
	out := make([]cluster.Entry, 0, len(keys))
	for _, k := range keys {
		out = append(out, cluster.Entry{Key: k, Value: c.stateEntry(k)})
	}
	return out
}

// All implements cluster.StateSource.
func (s clusterState) All() []cluster.Entry { return s.locked(allEntries) }

// allEntries is the whole state. Called with c.mu held.
func allEntries(c *coordinator) []cluster.Entry {
	if c.stateDirty == nil {
		c.startState() // this snapshot says everything so far
	}
	nodes := c.tree.Snapshot()
	out := make([]cluster.Entry, 0, len(nodes)+1+len(c.bars))
	out = append(out, cluster.Entry{Key: stateMetaKey, Value: c.stateEntry(stateMetaKey)})
	for _, n := range nodes {
		out = append(out, cluster.Entry{Key: stateNodePrefix + n.ID, Value: c.nodeEntry(n)})
	}
	for k := range c.bars {
		out = append(out, cluster.Entry{Key: stateBarPrefix + k, Value: c.stateEntry(stateBarPrefix + k)})
	}
	return out
}

// startState starts recording what changes. Called with c.mu held.
func (c *coordinator) startState() {
	c.stateDirty = make(map[string]struct{})
	c.tree.Journal(true)
	c.standby.changed = c.markPeer
}

// markAllState marks every entry changed. Called with c.mu held.
func (c *coordinator) markAllState() {
	c.stateDirty[stateMetaKey] = struct{}{}
	for _, n := range c.tree.Snapshot() {
		c.stateDirty[stateNodePrefix+n.ID] = struct{}{}
	}
	for k := range c.bars {
		c.stateDirty[stateBarPrefix+k] = struct{}{}
	}
}

// markState records that key changed; nothing while no cluster asked for
// the state (single mode). Called with c.mu held.
func (c *coordinator) markState(key string) {
	if c.stateDirty != nil {
		c.stateDirty[key] = struct{}{}
	}
}

// markPeer records that what the state says of peer id changed.
func (c *coordinator) markPeer(id string) { c.markState(stateNodePrefix + id) }

// stateEntry is key's value now, nil if it is gone. Called with c.mu held.
func (c *coordinator) stateEntry(key string) []byte {
	switch {
	case key == stateMetaKey:
		b, _ := json.Marshal(metaState{Tracks: c.tracks, SourceKey: c.signed.key})
		return b
	case strings.HasPrefix(key, stateBarPrefix):
		until, ok := c.bars[strings.TrimPrefix(key, stateBarPrefix)]
		if !ok {
			return nil
		}
		b, _ := json.Marshal(until.UnixMilli())
		return b
	case strings.HasPrefix(key, stateNodePrefix):
		info, ok := c.tree.Info(strings.TrimPrefix(key, stateNodePrefix))
		if !ok {
			return nil
		}
		return c.nodeEntry(info)
	}
	return nil
}

// nodeEntry is the "n/" entry of the node info describes. Called with
// c.mu held.
func (c *coordinator) nodeEntry(info tree.NodeInfo) []byte {
	if info.Depth >= 0 {
		info.Depth = 0 // the copy derives it (tree.Depths); only "unplaced" is the node's own
	}
	info.Hops, info.Children, info.Unverified = 0, nil, false
	ns := nodeState{Node: info, Standby: c.standby.of[info.ID]}
	if p := c.peers[info.ID]; p != nil {
		ps := c.peerStateOf(p)
		ns.Peer = &ps
	}
	b, _ := json.Marshal(ns)
	return b
}

// peerStateOf is what the owner knows of p beyond its tree node. Called
// with c.mu held.
func (c *coordinator) peerStateOf(p *peerConn) peerState {
	ps := peerState{Private: p.private, Hosted: p.hosted, Reclaim: p.reclaim}
	if p.hello != nil {
		ps.Role, ps.Kind = p.hello.Role, p.hello.Kind
	}
	if t := p.token.Load(); t != nil {
		ps.Gen = t.gen
	}
	if rc, ok := p.conn.(*remoteConn); ok && rc.o.r.ID() != p.id {
		ps.Link = rc.o.r.ID()
	}
	for parent := range c.trust.played[p.id] {
		ps.Played = append(ps.Played, parent)
	}
	sort.Strings(ps.Played)
	return ps
}

// decodeState makes a streamState of a copy's entries; entries it cannot
// read are skipped (their peers join again).
func decodeState(entries map[string][]byte) *streamState {
	st := &streamState{Peers: make(map[string]peerState), Standby: make(map[string]string), Bars: make(map[string]time.Time)}
	for k, v := range entries {
		switch {
		case k == stateMetaKey:
			var m metaState
			if json.Unmarshal(v, &m) == nil {
				st.Tracks, st.SourceKey = m.Tracks, m.SourceKey
			}
		case strings.HasPrefix(k, stateBarPrefix):
			var ms int64
			if json.Unmarshal(v, &ms) == nil {
				st.Bars[strings.TrimPrefix(k, stateBarPrefix)] = time.UnixMilli(ms)
			}
		case strings.HasPrefix(k, stateNodePrefix):
			var ns nodeState
			if json.Unmarshal(v, &ns) != nil || ns.Node.ID != strings.TrimPrefix(k, stateNodePrefix) {
				continue
			}
			st.Nodes = append(st.Nodes, ns.Node)
			if ns.Peer != nil {
				st.Peers[ns.Node.ID] = *ns.Peer
			}
			if ns.Standby != "" {
				st.Standby[ns.Node.ID] = ns.Standby
			}
		}
	}
	slices.SortFunc(st.Nodes, func(a, b tree.NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	tree.Depths(st.Nodes)
	return st
}
