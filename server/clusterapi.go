package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/gin-gonic/gin"

	"canopy/mesh/protocol"
	"canopy/server/cluster"
)

// The HTTP API on any server. A stream's tree and figures live in its
// owner's memory, so a server that does not own the stream asks the owner
// over NATS (cluster.Ask) and passes its answer on unchanged: the tree API
// of any server equals the owner's. The gate runs here, at the server the
// request reached, as for a hello. The stream list is gathered from every
// server, each naming the streams it owns (cluster.List).

// apiAskTimeout bounds a question to a stream's owner: it answers in well
// under a millisecond across loopback processes, a 20 000-peer tree in
// ~11 ms. An owner that does not answer in time is stopped, overloaded or
// dying with its lease: 503, so a caller retries rather than concluding
// the stream is gone.
const apiAskTimeout = 2 * time.Second

// apiListTimeout bounds the wait for the other servers' stream lists.
const apiListTimeout = time.Second

// Questions an owner answers about its stream (cluster.Querier); the empty
// one asks only whether it serves the stream (a waiting join's poll).
const (
	askServed = ""
	askTree   = "tree"
	askStats  = "stats"
	askInfo   = "info"
)

// errOwnerSilent is the 503 of a stream whose owner did not answer.
var errOwnerSilent = errors.New("the stream's server did not answer; try again")

// Query answers a question of another server's about a stream owned here.
func (h ownerHandler) Query(stream, what string) ([]byte, bool) { return h.s.answer(stream, what) }

// answer is this server's answer about a stream whose coordinator it runs.
func (s *Server) answer(stream, what string) ([]byte, bool) {
	co := s.hub.get(stream)
	if co == nil {
		return nil, false
	}
	var v any
	switch what {
	case askServed:
		return nil, true
	case askTree:
		v = treeResponse{Stream: co.id, Owner: s.node.ID(), Live: co.info().Live, Nodes: s.withPlayers(co.id, co.snapshot())}
	case askStats:
		v = s.withPlayerViews(co.statsView())
	case askInfo:
		v = co.info()
	default:
		return nil, false
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, false
	}
	return b, true
}

// ask answers what about stream from this server if it runs the stream's
// coordinator, else from the stream's owner. errNoStream: nobody serves
// it; errOwnerSilent: its owner did not answer.
func (s *Server) ask(stream, what string) ([]byte, error) {
	if b, ok := s.answer(stream, what); ok {
		return b, nil
	}
	if !protocol.ValidID(stream) {
		return nil, errNoStream
	}
	b, err := s.node.Ask(stream, what, apiAskTimeout)
	switch {
	case errors.Is(err, cluster.ErrNoAnswer):
		return nil, errOwnerSilent
	case err != nil:
		return nil, errNoStream
	}
	return b, nil
}

// serveAnswer answers an API request about one stream through the gate.
func (s *Server) serveAnswer(c *gin.Context, what string) {
	stream := c.Param("id")
	if !s.allowed(c, stream, ActionView) {
		return
	}
	b, err := s.ask(stream, what)
	switch {
	case errors.Is(err, errOwnerSilent):
		c.Header("Retry-After", "1")
		writeError(c, http.StatusServiceUnavailable, err)
		return
	case err != nil:
		writeError(c, http.StatusNotFound, errNotFound)
		return
	}
	if what == askStats {
		c.Header("Cache-Control", "no-store")
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", b)
}

// streamLive reports whether stream exists with its source connected,
// wherever it is owned.
func (s *Server) streamLive(stream string) bool {
	b, err := s.ask(stream, askInfo)
	if err != nil {
		return false
	}
	var info streamInfo
	return json.Unmarshal(b, &info) == nil && info.Live
}

// ownStreams is this server's answer to the cluster's listings.
func (s *Server) ownStreams() []byte {
	b, _ := json.Marshal(s.hub.list())
	return b
}

// clusterStreams is every stream of the cluster, by id. A stream two
// servers list (a fenced owner's moment of overlap) appears once, with the
// larger audience.
func (s *Server) clusterStreams() []streamInfo {
	answers, complete := s.node.List(apiListTimeout)
	if !complete {
		s.log.Warn("stream list: a server did not answer in time", "answers", len(answers))
	}
	byID := make(map[string]streamInfo)
	for _, a := range answers {
		var list []streamInfo
		if json.Unmarshal(a, &list) != nil {
			continue
		}
		for _, st := range list {
			if prev, ok := byID[st.ID]; !ok || st.Viewers > prev.Viewers {
				byID[st.ID] = st
			}
		}
	}
	out := make([]streamInfo, 0, len(byID))
	for _, st := range byID {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
