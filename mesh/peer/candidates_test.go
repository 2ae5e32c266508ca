package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/stun/v4"

	"canopy/mesh/protocol"
)

// candidateFor is a host candidate signal for addr.
func candidateFor(t testing.TB, i int, addr *net.UDPAddr) protocol.Signal {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"candidate":     fmt.Sprintf("candidate:%d 1 udp 2130706431 %s %d typ host", 9000+i, addr.IP, addr.Port),
		"sdpMid":        "0",
		"sdpMLineIndex": 0,
	})
	if err != nil {
		t.Fatal(err)
	}
	return protocol.Signal{Kind: protocol.SignalCandidate, Candidate: raw}
}

// withCandidate adds a host candidate for addr to sdp's first media
// section, after its a=mid line.
func withCandidate(t testing.TB, sdp string, addr *net.UDPAddr) string {
	t.Helper()
	line := fmt.Sprintf("a=candidate:9000 1 udp 2130706431 %s %d typ host\r\n", addr.IP, addr.Port)
	i := strings.Index(sdp, "a=mid:")
	if i < 0 {
		t.Fatal("the answer has no a=mid line")
	}
	end := strings.Index(sdp[i:], "\n")
	if end < 0 {
		t.Fatal("the answer's a=mid line does not end")
	}
	at := i + end + 1
	return sdp[:at] + line + sdp[at:]
}

// TestPendingCandidatesBounded: a child that never answers cannot make its
// parent queue candidates without bound; past MaxEdgeCandidates they are
// refused.
func TestPendingCandidatesBounded(t *testing.T) {
	a := newTestAPI(t)
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	d, err := a.NewDownstream("child", []*Forwarder{f}, func(protocol.Signal) {})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	refused := 0
	for i := range 10000 {
		err := d.HandleSignal(candidateFor(t, i, addr))
		switch {
		case err == nil && i < protocol.MaxEdgeCandidates:
		case errors.Is(err, ErrTooManyCandidates) && i >= protocol.MaxEdgeCandidates:
			refused++
		default:
			t.Fatalf("candidate %d: %v", i, err)
		}
	}
	d.remoteMu.Lock()
	queued := len(d.pendingRemote)
	d.remoteMu.Unlock()
	if queued != protocol.MaxEdgeCandidates || refused != 10000-protocol.MaxEdgeCandidates {
		t.Fatalf("%d queued, %d refused; want %d queued", queued, refused, protocol.MaxEdgeCandidates)
	}
}

// TestRepeatedCandidatesCountOnce: a candidate sent again (a bundled
// description lists it in every m-section, a neighbour re-trickles it)
// counts once against MaxEdgeCandidates, so 90 repeats of a few
// candidates leave room for new ones.
func TestRepeatedCandidatesCountOnce(t *testing.T) {
	a := newTestAPI(t)
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	d, err := a.NewDownstream("child", []*Forwarder{f}, func(protocol.Signal) {})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	for range 90 {
		for i := range 3 {
			if err := d.HandleSignal(candidateFor(t, i, addr)); err != nil {
				t.Fatalf("a repeated candidate was refused: %v", err)
			}
		}
	}
	for i := 3; i < protocol.MaxEdgeCandidates; i++ {
		if err := d.HandleSignal(candidateFor(t, i, addr)); err != nil {
			t.Fatalf("new candidate %d after repeats: %v", i, err)
		}
	}
	if err := d.HandleSignal(candidateFor(t, protocol.MaxEdgeCandidates, addr)); !errors.Is(err, ErrTooManyCandidates) {
		t.Fatalf("candidate past the bound: %v, want ErrTooManyCandidates", err)
	}
}

// stunListener counts the STUN messages that arrive on a loopback socket.
type stunListener struct {
	conn *net.UDPConn
	got  chan struct{}
}

func listenSTUN(t *testing.T) *stunListener {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	l := &stunListener{conn: conn, got: make(chan struct{}, 1)}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if stun.IsMessage(buf[:n]) {
				select {
				case l.got <- struct{}{}:
				default:
				}
			}
		}
	}()
	return l
}

func (l *stunListener) addr() *net.UDPAddr { return l.conn.LocalAddr().(*net.UDPAddr) }

// probe connects a Downstream from parentAPI to an Upstream whose answer
// carries a candidate pointing at l (inSDP: an a=candidate line of the
// answer; else trickled just before it), and reports whether STUN reached l
// within wait once the pair is connected. Only a candidate in the answer is
// sure to be checked: ICE pings every pair until one is valid, and on
// loopback the honest pair is valid within a millisecond, so a trickled
// candidate that pion adds a moment later may never be pinged at all.
func probe(t *testing.T, parentAPI *API, l *stunListener, inSDP bool, wait time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := NewForwarder(vp8Track, testLogger())
	defer f.Close()
	var d *Downstream
	var u *Upstream
	toParent := newPump(t, func() func(protocol.Signal) error { return d.HandleSignal })
	defer toParent.close()
	toChild := newPump(t, func() func(protocol.Signal) error { return u.HandleSignal })
	defer toChild.close()
	var err error
	u, err = newTestAPI(t).NewUpstream("parent", []protocol.Track{vp8Track}, func(s protocol.Signal) {
		if s.Kind == protocol.SignalAnswer {
			if inSDP {
				s.SDP = withCandidate(t, s.SDP, l.addr())
			} else {
				toParent.send(candidateFor(t, 0, l.addr())) // the extra candidate, before the answer
			}
		}
		toParent.send(s)
	}, func(protocol.Track, *rtp.Packet) {})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	d, err = parentAPI.NewDownstream("child", []*Forwarder{f}, toChild.send)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.WaitConnected(ctx); err != nil {
		t.Fatalf("the honest pair did not connect: %v", err)
	}
	select {
	case <-l.got:
		return true
	case <-time.After(wait):
		return false
	}
}

// TestRemoteCandidateFilter: a parent whose API refuses a port never sends
// STUN to a candidate naming it, and still connects to the child; without
// the filter the same candidate draws STUN (the test can see it).
func TestRemoteCandidateFilter(t *testing.T) {
	l := listenSTUN(t)
	port := l.addr().Port
	filtered, err := NewAPI(Config{LoopbackOnly: true, Logger: testLogger(),
		RemoteCandidateFilter: func(a netip.Addr, p int) bool { return p != port }})
	if err != nil {
		t.Fatal(err)
	}
	for _, inSDP := range []bool{false, true} {
		if probe(t, filtered, l, inSDP, 3*time.Second) {
			t.Fatalf("STUN reached a candidate the filter refuses (in the answer: %v)", inSDP)
		}
	}
	if !probe(t, newTestAPI(t), l, true, 10*time.Second) {
		t.Fatal("no STUN reached the candidate without a filter: the probe sees nothing")
	}
}
