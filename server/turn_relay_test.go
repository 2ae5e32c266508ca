package main

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/transport/v5/vnet"
	"github.com/pion/webrtc/v4"

	"canopy/mesh"
	"canopy/mesh/media"
	"canopy/mesh/media/demo"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// relayNet is a virtual internet: the TURN server on a public address and
// two peers, each behind its own symmetric NAT (mapping and filtering
// depend on the remote address and port), so no direct or server-reflexive
// path exists between them.
type relayNet struct {
	wan        *vnet.Router
	turnNet    *vnet.Net
	netA, netB *vnet.Net
	fromTURN   atomic.Int64 // chunks the TURN server sent to B's NAT
}

const (
	vnetTURNIP = "1.2.3.4"
	vnetNATA   = "27.1.1.1"
	vnetNATB   = "28.1.1.1"
)

func newRelayNet(t *testing.T) *relayNet {
	t.Helper()
	lf := pionLogs{log: testLogger()}
	symmetric := &vnet.NATType{MappingBehavior: vnet.EndpointAddrPortDependent, FilteringBehavior: vnet.EndpointAddrPortDependent}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	r := &relayNet{}
	var err error
	r.wan, err = vnet.NewRouter(&vnet.RouterConfig{CIDR: "0.0.0.0/0", LoggerFactory: lf})
	must(err)
	r.turnNet, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vnetTURNIP}})
	must(err)
	must(r.wan.AddNet(r.turnNet))
	lan := func(nat, cidr, ip string) *vnet.Net {
		router, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: cidr, StaticIPs: []string{nat}, NATType: symmetric, LoggerFactory: lf})
		must(err)
		n, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
		must(err)
		must(router.AddNet(n))
		must(r.wan.AddRouter(router))
		return n
	}
	r.netA = lan(vnetNATA, "192.168.0.0/24", "192.168.0.1")
	r.netB = lan(vnetNATB, "10.2.0.0/24", "10.2.0.1")
	r.wan.AddChunkFilter(func(c vnet.Chunk) bool {
		if c.SourceAddr().String() == net.JoinHostPort(vnetTURNIP, "3478") && c.DestinationAddr().(*net.UDPAddr).IP.String() == vnetNATB {
			r.fromTURN.Add(1)
		}
		return true
	})
	must(r.wan.Start())
	t.Cleanup(func() { _ = r.wan.Stop() })
	return r
}

// A viewer that cannot reach its parent directly gets the stream through
// the embedded TURN relay, with the credentials the server hands out.
func TestRelayThroughEmbeddedTURNWhenDirectFails(t *testing.T) {
	lightTest(t)
	vn := newRelayNet(t)
	conn, err := vn.turnNet.ListenPacket("udp4", net.JoinHostPort(vnetTURNIP, "3478"))
	if err != nil {
		t.Fatal(err)
	}
	// The default permission policy stays on: the NATs' addresses are public.
	ts, err := StartTURN(TURNConfig{PacketConn: conn, RelayIP: net.ParseIP(vnetTURNIP), RelayNet: vn.turnNet, Secret: turnSecret, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	creds := &TURNCredentials{URLs: []string{"turn:" + vnetTURNIP + ":3478?transport=udp"}, Secret: turnSecret, TTL: time.Hour}
	iceFor := func(id string) []webrtc.ICEServer {
		s := creds.ICEServer(id, "", time.Now())
		return []webrtc.ICEServer{{URLs: s.URLs, Username: s.Username, Credential: s.Credential}}
	}

	video, audio, err := demo.Open()
	if err != nil {
		t.Fatal(err)
	}
	track := mesh.TracksFor(video, audio)[0]
	fwd := peer.NewForwarder(track, testLogger())
	defer fwd.Close()

	apiA, err := peer.NewAPI(peer.Config{Net: vn.netA, ICEServers: iceFor("parent"), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	apiB, err := peer.NewAPI(peer.Config{Net: vn.netB, ICEServers: iceFor("child"), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}

	// Signals travel through channels, as through the server: never a
	// synchronous call back into the sender.
	toUp, toDown := make(chan protocol.Signal, 64), make(chan protocol.Signal, 64)
	var received atomic.Int64
	up, err := apiB.NewUpstream("parent", []protocol.Track{track}, func(s protocol.Signal) { toDown <- s },
		func(protocol.Track, *rtp.Packet) { received.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	down, err := apiA.NewDownstream("child", []*peer.Forwarder{fwd}, func(s protocol.Signal) { toUp <- s })
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		for {
			select {
			case s := <-toUp:
				if err := up.HandleSignal(s); err != nil {
					t.Logf("upstream signal: %v", err)
				}
			case s := <-toDown:
				if err := down.HandleSignal(s); err != nil {
					t.Logf("downstream signal: %v", err)
				}
			case <-ctx.Done():
				return
			}
		}
	}()

	pk, err := media.NewPacketizer(video.Codec())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = media.Play(ctx, video, pk, func(pkts []*rtp.Packet, _ media.Frame) error {
			for _, p := range pkts {
				_ = fwd.WriteRTP(p)
			}
			return nil
		})
	}()

	start := time.Now()
	if err := up.WaitConnected(ctx); err != nil {
		t.Fatalf("viewer never connected through TURN: %v", err)
	}
	t.Logf("connected through TURN in %v", time.Since(start).Round(time.Millisecond))
	waitFor(t, 30*time.Second, "media through the relay", func() bool { return received.Load() >= 100 })
	if n := ts.srv.AllocationCount(); n == 0 {
		t.Error("no TURN allocation: the media did not go through the relay")
	}
	if n := vn.fromTURN.Load(); n < 100 {
		t.Errorf("%d packets from the TURN server to the viewer's NAT, want ≥ 100", n)
	}
	t.Logf("%d RTP packets received, %d datagrams relayed to the viewer, %d allocations",
		received.Load(), vn.fromTURN.Load(), ts.srv.AllocationCount())
}
