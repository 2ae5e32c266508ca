package main

import (
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/pion/webrtc/v4"

	"canopy/mesh"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
	"canopy/server/whip"
)

// whipRoutes serves WHIP and WHEP (server/whip): publishers and players
// whose sessions the server hosts as nodes of the tree, on in-process
// signaling connections (LocalTransport).
func (s *Server) whipRoutes(r *gin.Engine) {
	h, err := whip.New(whip.Config{
		Admit:              s.admitHosted,
		HasSource:          s.hasSource,
		ICEServers:         s.sessionICEServers,
		ClientKey:          func(r *http.Request) string { return clientKey(r.RemoteAddr).String() },
		Arrive:             func(r *http.Request) error { return s.guard.ips.arrive(clientKey(r.RemoteAddr)) },
		Slot:               s.peers.acquire,
		Peer:               s.cfg.Hosted,
		LocalPeer:          s.isHosted,
		SourceCapacity:     s.cfg.Policy.SourceCapacity,
		MaxSessionsPerAddr: s.cfg.WHIPSessionsPerIP,
		Logger:             s.log,
	})
	if err != nil {
		s.log.Error("WHIP/WHEP disabled", "err", err)
		return
	}
	s.whip = h
	h.Routes(r)
}

// admitHosted asks the gate (gate.go) about a WHIP or WHEP request: its
// bearer token, its origin and the stream's policy, as for any entry
// point. A WHIP source node is admitted with the grant the gate returns;
// the WHEP relay is the server's own node, granted relaying of that stream
// once the player may watch it.
func (s *Server) admitHosted(r *http.Request, stream string, role protocol.Role) (whip.Connect, error) {
	act := ActionView
	if role == protocol.RoleSource {
		act = ActionPublish
	}
	who, err := s.gate.caller(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", whip.ErrUnauthorized, err)
	}
	_, gr, err := s.gate.check(who, helloFor(stream, act))
	if err != nil {
		switch StatusOf(err) {
		case http.StatusNotFound:
			return nil, fmt.Errorf("%w: %q", whip.ErrNoStream, stream)
		case http.StatusForbidden:
			return nil, fmt.Errorf("%w: %v", whip.ErrForbidden, err)
		case http.StatusUnauthorized:
			return nil, fmt.Errorf("%w: %v", whip.ErrUnauthorized, err)
		}
		return nil, err
	}
	if role != protocol.RoleSource {
		gr = &grant{stream: stream, relay: true, maxChildren: -1}
	}
	return func() mesh.Transport { return s.LocalTransport(gr) }, nil
}

// hasSource reports whether stream exists and whether it has a source.
func (s *Server) hasSource(stream string) (exists, live bool) {
	co := s.hub.get(stream)
	if co == nil {
		return false, false
	}
	return true, co.info().Live
}

// sessionICEServers are what a WHIP/WHEP client is told in Link headers:
// the configured STUN servers and TURN credentials of its own.
func (s *Server) sessionICEServers(r *http.Request, session string) []protocol.ICEServer {
	out := append([]protocol.ICEServer(nil), s.cfg.ICEServers...)
	if s.guard.turn != nil {
		out = append(out, s.guard.turn.ICEServer(session, r.Host, time.Now()))
	}
	return out
}

// webrtcICEServers converts the servers handed to peers for the server's
// own PeerConnections.
func webrtcICEServers(in []protocol.ICEServer) []webrtc.ICEServer {
	out := make([]webrtc.ICEServer, 0, len(in))
	for _, s := range in {
		out = append(out, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return out
}

// KindWHEP is the kind the tree API gives WHEP players: children of the
// server's WHEP relay, served outside the tree.
const KindWHEP = "whep"

// withPlayers adds the stream's WHEP players to a tree snapshot, as
// children of the server's relay node.
func (s *Server) withPlayers(stream string, nodes []tree.NodeInfo) []tree.NodeInfo {
	if s.whip == nil {
		return nodes
	}
	relayID, players := s.whip.Players(stream)
	if len(players) == 0 {
		return nodes
	}
	for i := range nodes {
		if nodes[i].ID != relayID {
			continue
		}
		depth, hops := nodes[i].Depth, nodes[i].Hops
		kids := append([]string(nil), nodes[i].Children...)
		for _, p := range players {
			kids = append(kids, p.ID)
			nodes = append(nodes, tree.NodeInfo{ID: p.ID, Parent: relayID, Role: protocol.RoleViewer, Kind: KindWHEP,
				Depth: depth + 1, Hops: hops, Children: []string{}, Unverified: true}) // no signatures: stripped for it
		}
		sort.Strings(kids)
		nodes[i].Children = kids
		return nodes
	}
	return nodes
}

// withPlayerViews adds the stream's WHEP players to the dashboard's nodes.
func (s *Server) withPlayerViews(r statsResponse) statsResponse {
	if s.whip == nil {
		return r
	}
	_, players := s.whip.Players(r.Stream)
	since := map[string]whip.Player{}
	for _, p := range players {
		since[p.ID] = p
	}
	infos := make([]tree.NodeInfo, len(r.Nodes))
	for i, n := range r.Nodes {
		infos[i] = n.NodeInfo
	}
	infos = s.withPlayers(r.Stream, infos)
	for i := range r.Nodes {
		r.Nodes[i].Children = infos[i].Children
	}
	for _, n := range infos[len(r.Nodes):] {
		v := nodeView{NodeInfo: n, State: stateJoining}
		if p := since[n.ID]; p.Connected {
			v.State = stateLive
		}
		v.UptimeMs = ms(r.At.Sub(since[n.ID].Since))
		r.Nodes = append(r.Nodes, v)
		r.Figures.Peers++
	}
	return r
}

// closeHosted ends every WHIP and WHEP session: publishers' source nodes
// leave their trees (viewers see the stream offline), relays close.
func (s *Server) closeHosted() {
	if s.whip != nil {
		s.whip.Close()
	}
}
