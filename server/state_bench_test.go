package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// wholeState is the state as owners published it before deltas (session
// 5): every node and peer in one JSON message, at most every 250 ms.
func wholeState(c *coordinator) []byte {
	c.mu.Lock()
	st := streamState{Tracks: c.tracks, SourceKey: c.signed.key, Nodes: c.tree.Snapshot(),
		Peers: make(map[string]peerState, len(c.peers)), Standby: make(map[string]string, len(c.standby.of))}
	for id, p := range c.peers {
		st.Peers[id] = c.peerStateOf(p)
	}
	for k, v := range c.standby.of {
		st.Standby[k] = v
	}
	c.mu.Unlock()
	b, _ := json.Marshal(st)
	return b
}

// BenchmarkStatePerChange measures what one change (a viewer joins, or a
// peer leaves: churn) costs the owner to publish, in a stream of 1 000 and
// 10 000 peers that played (relays of capacity 4 and viewers): "whole"
// is the state as one message (the old publication, made at most every
// 250 ms whatever the number of changes in between), "delta" the entries
// the change touched (published every 5 ms). bytes/change is what goes on
// the wire, publish-ns/change the CPU of making it (JSON included; ns/op
// adds the join or leave itself).
func BenchmarkStatePerChange(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, mode := range []string{"whole", "delta"} {
			b.Run(fmt.Sprintf("peers=%d/%s", n, mode), func(b *testing.B) {
				h := newHub(tree.Config{SourceCapacity: 4}, testLogger())
				h.mu.Lock()
				c := h.create("bench")
				h.mu.Unlock()
				src := clusterState{h: h, stream: "bench"}
				rng := rand.New(rand.NewPCG(1, 2))
				var peers []*peerConn
				join := func(i int) *peerConn {
					role, capacity := protocol.RoleViewer, 0
					if i == 0 {
						role, capacity = protocol.RoleSource, 4
					} else if i%4 == 1 {
						role, capacity = protocol.RoleRelay, 4
					}
					hello := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role, Kind: protocol.KindGo, Stream: "bench", Capacity: capacity}
					if role == protocol.RoleSource {
						hello.Tracks = []protocol.Track{{ID: "video", Kind: "video", MimeType: "video/VP8", ClockRate: 90000}}
					}
					p := newTestPeer(hello)
					if err := c.join(p, hello); err != nil {
						b.Fatal(err)
					}
					c.mu.Lock()
					if parent, ok := c.tree.Parent(p.id); ok && parent != "" {
						c.onLive(p.id, parent) // it plays: its trust grows, and its capacity
					}
					c.mu.Unlock()
					p.conn.(*recordConn).take(p)
					return p
				}
				src.All() // the state is asked for: changes are recorded from here
				for i := range n {
					peers = append(peers, join(i))
					if i%256 == 255 {
						for _, q := range peers {
							q.conn.(*recordConn).take(q)
						}
					}
				}
				src.Changed()
				var bytes, changes int
				var spent time.Duration
				publish := func() {
					defer func(at time.Time) { spent += time.Since(at) }(time.Now())
					if mode == "whole" {
						bytes += len(wholeState(c))
						return
					}
					for _, e := range src.Changed() {
						bytes += len(e.Key) + len(e.Value) + 4 // the two lengths, as uvarints
					}
				}
				b.ResetTimer()
				for i := range b.N {
					if i%2 == 0 {
						peers = append(peers, join(n+i))
					} else {
						k := 1 + rng.IntN(len(peers)-1) // not the source
						c.gone(peers[k], "left")
						peers[k] = peers[len(peers)-1]
						peers = peers[:len(peers)-1]
					}
					publish()
					changes++
					if i%256 == 255 {
						b.StopTimer()
						for _, q := range peers {
							q.conn.(*recordConn).take(q)
						}
						b.StartTimer()
					}
				}
				b.ReportMetric(float64(bytes)/float64(changes), "bytes/change")
				b.ReportMetric(float64(spent.Nanoseconds())/float64(changes), "publish-ns/change")
			})
		}
	}
}
