package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/rtp"
	"github.com/pion/stun/v4"

	"canopy/mesh"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// stunTrap is a loopback UDP socket that notes any STUN message sent to it.
type stunTrap struct {
	conn *net.UDPConn
	hit  chan struct{}
}

func newSTUNTrap(t *testing.T) *stunTrap {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tr := &stunTrap{conn: conn, hit: make(chan struct{}, 1)}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if stun.IsMessage(buf[:n]) {
				select {
				case tr.hit <- struct{}{}:
				default:
				}
			}
		}
	}()
	return tr
}

func (tr *stunTrap) port() int { return tr.conn.LocalAddr().(*net.UDPAddr).Port }

// trickler is a real pion viewer that, with its answer, trickles one extra
// candidate of its choosing: what a hostile viewer would send.
type trickler struct {
	up        *peer.Upstream
	connected chan struct{}
}

func startTrickler(t *testing.T, url, stream string, bogus string) *trickler {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(wsURLOf(url), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var wmu sync.Mutex
	write := func(m *protocol.Message) {
		data, err := protocol.Encode(m)
		if err != nil {
			panic(err)
		}
		wmu.Lock()
		defer wmu.Unlock()
		_ = conn.WriteMessage(websocket.TextMessage, data)
	}
	write(&protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: protocol.RoleViewer,
		Kind: protocol.KindBrowser, Stream: stream})
	api, err := peer.NewAPI(peer.Config{LoopbackOnly: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	tr := &trickler{connected: make(chan struct{})}
	var tracks []protocol.Track
	go func() {
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			m, err := protocol.Decode(data)
			if err != nil {
				continue
			}
			switch m.Type {
			case protocol.TypeWelcome:
				tracks = m.Tracks
			case protocol.TypeParent:
				parent := m.Peer
				up, err := api.NewUpstream(parent, tracks, func(s protocol.Signal) {
					if s.Kind == protocol.SignalAnswer {
						raw, _ := json.Marshal(map[string]any{"candidate": bogus, "sdpMid": "0", "sdpMLineIndex": 0})
						write(&protocol.Message{Type: protocol.TypeSignal, Peer: parent,
							Sig: &protocol.Signal{Kind: protocol.SignalCandidate, Candidate: raw}})
					}
					write(&protocol.Message{Type: protocol.TypeSignal, Peer: parent, Sig: &s})
				}, func(protocol.Track, *rtp.Packet) {})
				if err != nil {
					t.Error(err)
					return
				}
				tr.up = up
				go func() {
					if up.WaitConnected(context.Background()) == nil {
						close(tr.connected)
					}
				}()
			case protocol.TypeSignal:
				if tr.up != nil {
					_ = tr.up.HandleSignal(*m.Sig)
				}
			}
		}
	}()
	t.Cleanup(func() {
		if tr.up != nil {
			_ = tr.up.Close()
		}
	})
	return tr
}

// TestDemoIgnoresHostileCandidates is the candidate item of issue 11's
// finding 12: a viewer trickles a candidate that points at a UDP socket on
// the server's host (a loopback port of the server's own; a loopback port
// of anything, when the server is not loopback-only). The demo source never
// sends STUN there, and still connects to that viewer and to honest ones.
func TestDemoIgnoresHostileCandidates(t *testing.T) {
	lightTest(t)
	for _, c := range []struct {
		name         string
		loopbackOnly bool
		ownPort      bool
	}{
		{"loopback-only server, its own port", true, true},
		{"public server, a loopback port", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			trap := newSTUNTrap(t)
			srv, url := startServer(t, tree.Config{SourceCapacity: 4})
			var own []int
			if c.ownPort {
				own = append(own, trap.port()) // stands for the server's TURN or mux port
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				runDemo(ctx, demoConfig{connect: func() mesh.Transport { return srv.LocalTransport(nil) }, stream: "demo", capacity: 4, loopbackOnly: c.loopbackOnly,
					candidates: newCandidatePolicy(c.loopbackOnly, own...), log: testLogger()})
			}()
			defer func() { cancel(); <-done }()
			waitFor(t, 20*time.Second, "the demo is live", func() bool {
				var streams []streamInfo
				getJSON(t, url+"/api/streams", &streams)
				return len(streams) == 1 && streams[0].Live
			})

			bogus := fmt.Sprintf("candidate:666 1 udp 2130706431 127.0.0.1 %d typ host", trap.port())
			tr := startTrickler(t, url, "demo", bogus)
			select {
			case <-tr.connected:
			case <-time.After(20 * time.Second):
				t.Fatal("the hostile viewer never connected: the filter cost it its honest path too")
			}
			v := startPeer(t, url, "demo", protocol.RoleViewer, 0, nil)
			waitFor(t, 30*time.Second, "an honest viewer plays the demo", func() bool { f, _, _ := v.counts(); return f >= 30 })
			select {
			case <-trap.hit:
				t.Fatal("the demo sent STUN to the candidate the viewer chose")
			default:
			}
		})
	}
}
