package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"canopy/mesh"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Private mode on the media plane: real pion peers through the embedded
// TURN relay on loopback, as a -loopback-only server runs it.

// startPrivacyTURN runs the embedded TURN relay on loopback with loopback
// peers allowed (what main does for -loopback-only), and a server that
// hands out its credentials and records what it forwards.
func startPrivacyTURN(t *testing.T, cfg Config) (*TURNServer, *Server, string, *forwardLog) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts, err := StartTURN(TURNConfig{PacketConn: conn, RelayIP: net.IPv4(127, 0, 0, 1), Secret: turnSecret,
		AllowLoopback: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	log := &forwardLog{}
	cfg.TURN = &TURNCredentials{Port: ts.Addr().(*net.UDPAddr).Port, Secret: turnSecret, TTL: time.Hour}
	cfg.onForward = log.record
	s, url := startServerWith(t, cfg)
	return ts, s, url, log
}

// startPrivatePeer is startPeer for a viewer with mesh.Config.Private set.
func startPrivatePeer(t *testing.T, server, stream string, private bool, src *testSource) *testViewer {
	t.Helper()
	v := &testViewer{src: src}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	node, err := mesh.Dial(ctx, mesh.Config{
		Server: server, Stream: stream, Role: protocol.RoleViewer, Capacity: 2, Private: private,
		LoopbackOnly: true, Logger: testLogger(), OnPacket: v.onPacket,
	})
	if err != nil {
		t.Fatalf("private viewer: %v", err)
	}
	v.node = node
	t.Cleanup(func() { _ = node.Close() })
	return v
}

// checkOnlyRelayCandidates fails unless everything the server forwarded
// from peer id names relay candidates only, with blank related addresses,
// and at least one relay candidate went out.
func checkOnlyRelayCandidates(t *testing.T, log *forwardLog, id string) {
	t.Helper()
	relays := 0
	sigs := log.from(id)
	for _, f := range sigs {
		var lines []string
		switch f.sig.Kind {
		case protocol.SignalCandidate:
			var init struct {
				Candidate string `json:"candidate"`
			}
			if err := json.Unmarshal(f.sig.Candidate, &init); err != nil {
				t.Errorf("forwarded candidate %s: %v", f.sig.Candidate, err)
			}
			lines = []string{init.Candidate}
		default:
			for _, l := range strings.Split(f.sig.SDP, "\n") {
				if l = strings.TrimSpace(l); strings.HasPrefix(l, "a=candidate:") {
					lines = append(lines, l)
				}
				if strings.HasPrefix(l, "c=") && l != "c=IN IP4 0.0.0.0" {
					t.Errorf("forwarded %s names an address: %s", f.sig.Kind, l)
				}
			}
		}
		for _, l := range lines {
			if l == "" {
				continue
			}
			if !strings.Contains(l, " typ relay") || (strings.Contains(l, " raddr ") && !strings.Contains(l, " raddr 0.0.0.0 rport 0")) {
				t.Errorf("forwarded from the private viewer to %s: %q", f.to, l)
				continue
			}
			relays++
		}
	}
	if relays == 0 {
		t.Errorf("no relay candidate forwarded from the private viewer (%d signals)", len(sigs))
	}
}

// A Go viewer in private mode under a Go relay plays the source's frames
// through the embedded TURN relay; nothing but relay candidates of its
// leaves the server, and it is given no children.
func TestGoPrivateViewerPlaysThroughTURN(t *testing.T) {
	lightTest(t)
	ts, s, url, log := startPrivacyTURN(t, Config{Policy: tree.Config{SourceCapacity: 1}})
	src := startSource(t, url, "privgo", 1)
	relay := startPeer(t, url, "privgo", protocol.RoleRelay, 4, nil)
	waitFor(t, 20*time.Second, "the relay under the source", func() bool { return relay.node.Parent() == src.node.ID() })

	v := startPrivatePeer(t, url, "privgo", true, src)
	waitFor(t, 60*time.Second, "the private viewer plays", func() bool { f, _, _ := v.counts(); return f >= 60 })
	frames, mismatch, audio := v.counts()
	if mismatch != 0 || audio == 0 {
		t.Errorf("private viewer: %d frames, %d not the source's, %d audio packets", frames, mismatch, audio)
	}
	if !v.node.Private() || v.node.Parent() != relay.node.ID() {
		t.Errorf("private %v, parent %s (relay %s)", v.node.Private(), v.node.Parent(), relay.node.ID())
	}
	if ts.Allocations() == 0 {
		t.Error("no TURN allocation: the media did not go through the relay")
	}
	checkOnlyRelayCandidates(t, log, v.node.ID())
	if n, _ := nodeOf(s, "privgo", v.node.ID()); n.Capacity != 0 {
		t.Errorf("private viewer's capacity %d, want 0", n.Capacity)
	}
	t.Logf("private viewer: %d frames through TURN, %d allocations, %d signals forwarded from it", frames, ts.Allocations(), len(log.from(v.node.ID())))
}

// `client watch` on a server whose -privacy covers the stream is made
// private without asking, and `client watch -private` asks; both play
// through the embedded TURN and say so in their report.
func TestClientWatchPrivate(t *testing.T) {
	lightTest(t)
	bin := buildClient(t)
	for _, c := range []struct {
		name    string
		privacy PrivacyConfig
		args    []string
	}{
		{"-private", PrivacyConfig{}, []string{"-private"}},
		{"-privacy relay", PrivacyConfig{All: true}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ts, _, url, log := startPrivacyTURN(t, Config{Policy: tree.Config{SourceCapacity: 4}, Privacy: c.privacy})
			startSource(t, url, "privcli", 4)
			args := append([]string{"watch", "-server", url, "-stream", "privcli", "-frames", "60", "-json", "-timeout", "60s", "-loopback-only"}, c.args...)
			var out, errOut bytes.Buffer
			watch := exec.Command(bin, args...)
			watch.Stdout, watch.Stderr = &out, &errOut
			if err := watch.Run(); err != nil {
				t.Fatalf("watch: %v\nstderr: %s", err, errOut.String())
			}
			var r struct {
				Peer    string `json:"peer"`
				Frames  int    `json:"frames"`
				Private bool   `json:"private"`
			}
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("watch -json printed %q: %v", out.String(), err)
			}
			if r.Frames < 60 || !r.Private {
				t.Errorf("watch report %s: want 60 frames in private mode", strings.TrimSpace(out.String()))
			}
			if ts.lim.refused[refusedPeer].Load() != 0 {
				t.Errorf("the TURN relay refused %d peers", ts.lim.refused[refusedPeer].Load())
			}
			checkOnlyRelayCandidates(t, log, r.Peer)
		})
	}
}

// privatePageJS reads what the watch page says about private mode: the
// client's flag, the type of the local candidate its parent connection
// uses, the stats panel's line and the relay switch.
const privatePageJS = `(async () => {
  const c = window.canopy && window.canopy.client;
  const out = {private: !!(c && c.private), id: (c && c.id) || '', localType: '', panel: '', relayDisabled: false, note: ''};
  if (c && c.pc) {
    const r = await c.pc.getStats();
    let pair = '';
    r.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = s.selectedCandidatePairId; });
    r.forEach((s) => {
      if (s.type === 'candidate-pair' && s.id === pair) {
        const l = r.get(s.localCandidateId);
        out.localType = l ? l.candidateType : '';
      }
    });
  }
  const p = document.getElementById('player');
  const cell = p && p.shadowRoot && p.shadowRoot.getElementById('p-privacy');
  out.panel = cell ? cell.textContent : '';
  out.relayDisabled = document.getElementById('relay').disabled;
  out.note = document.getElementById('relay-note').textContent;
  return out;
})()`

type privatePage struct {
	Private       bool   `json:"private"`
	ID            string `json:"id"`
	LocalType     string `json:"localType"`
	Panel         string `json:"panel"`
	RelayDisabled bool   `json:"relayDisabled"`
	Note          string `json:"note"`
}

// A Chromium viewer in private mode (?private=1) under a Go relay decodes
// the stream through the embedded TURN relay: its connection's local
// candidate is a relay one, no candidate of its host reaches any peer
// (what the server forwarded from it is relay candidates only), it feeds
// nobody, and the page says it is private.
func TestBrowserPrivateViewerPlaysThroughTURN(t *testing.T) {
	browserTest(t)
	ts, s, url, log := startPrivacyTURN(t, Config{Policy: tree.Config{SourceCapacity: 1}})
	src := startSource(t, url, "privbr", 1)
	relay := startPeer(t, url, "privbr", protocol.RoleRelay, 4, nil)
	waitFor(t, 20*time.Second, "the relay under the source", func() bool { return relay.node.Parent() == src.node.ID() })

	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"/watch/privbr?private=1&stats=1")); err != nil {
		t.Fatal(err)
	}
	first := waitPlaying(t, ctx, 10, 60*time.Second)
	later := waitPlaying(t, ctx, first.FramesDecoded+30, 30*time.Second)
	page, err := chromedp.Run(ctx, chromedp.Evaluate[privatePage](privatePageJS, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("browser: %+v then %+v; page %+v; %d TURN allocations", first, later, page, ts.Allocations())
	if !page.Private || page.LocalType != "relay" || page.Panel != "private" || !page.RelayDisabled {
		t.Errorf("page %+v: want private, a relay local candidate, \"private\" in the panel, the relay switch off", page)
	}
	if !strings.Contains(page.Note, "network address") {
		t.Errorf("the relay switch does not explain what relaying shares: %q", page.Note)
	}
	if n, ok := nodeOf(s, "privbr", page.ID); !ok || n.Parent != relay.node.ID() || n.Capacity != 0 {
		t.Errorf("browser in the tree: %+v (ok %v), want under the relay %s with capacity 0", n, ok, relay.node.ID())
	}
	if ts.Allocations() == 0 {
		t.Error("no TURN allocation")
	}
	checkOnlyRelayCandidates(t, log, page.ID)
	if relay.node.Children() != 1 {
		t.Errorf("relay feeds %d children, want the browser", relay.node.Children())
	}
}
