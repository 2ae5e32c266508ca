package main

import (
	"strings"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// Resume tokens: what is refused, and renewal (README "Resume").

// TestResumeTokensRefused: a forged token, an expired one, one for
// another stream, one replayed while its peer is still connected, one
// spent by an earlier resume, and one with another role are each refused
// with resume_refused and the connection closed; nothing in the tree
// changes.
func TestResumeTokensRefused(t *testing.T) {
	lightTest(t)
	s, url := startServer(t, tree.Config{SourceCapacity: 2})
	_, srcID := join(t, url, protocol.RoleSource, protocol.KindGo, "tok", 2)
	viewer := dialLive(t, url, nil)
	viewer.send(hello(protocol.RoleViewer, protocol.KindGo, "tok", 0, ""))
	w := viewer.next(protocol.TypeWelcome)
	if w.Resume == "" || w.Grace != int(DefaultResumeGrace/time.Millisecond) {
		t.Fatalf("welcome without a resume token or grace: %+v", w)
	}
	id := w.ID
	waitFor(t, 10*time.Second, "viewer placed", func() bool { return parentOf(s, "tok", id) == srcID })
	before := edgesOf(s, "tok")

	resumeHello := func(role protocol.Role, stream, token string) string {
		m := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: role, Kind: protocol.KindGo,
			Stream: stream, Resume: token}
		data, err := protocol.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	refused := func(what, helloMsg string, want error) {
		t.Helper()
		p := dialLive(t, url, nil)
		p.send(helloMsg)
		e := p.next(protocol.TypeError)
		code := protocol.CodeResumeRefused
		if want == errResumeLive {
			code = protocol.CodeResumeLive
		}
		if e.Code != code || !strings.Contains(e.Reason, strings.TrimPrefix(want.Error(), errResumeRefused.Error()+": ")) {
			t.Errorf("%s: got %s %q, want %s: %v", what, e.Code, e.Reason, code, want)
		}
		p.waitClosed(what)
		if after := edgesOf(s, "tok"); !sameEdges(before, after) {
			t.Errorf("%s changed the tree: %v → %v", what, before, after)
		}
	}
	r := s.hub.resumer
	dot := strings.LastIndexByte(w.Resume, '.')
	forged := w.Resume[:dot+1] + strings.Repeat("A", len(w.Resume)-dot-1)
	refused("forged MAC", resumeHello(protocol.RoleViewer, "tok", forged), errResumeForged)
	other := strings.Replace(w.Resume[:dot], ".tok.", ".tok2.", 1)
	refused("edited stream", resumeHello(protocol.RoleViewer, "tok2", other+w.Resume[dot:]), errResumeForged)
	refused("expired", resumeHello(protocol.RoleViewer, "tok",
		r.mint(resumeToken{stream: "tok", peer: id, gen: 1, exp: time.Now().Add(-time.Second)})), errResumeExpired)
	refused("another stream", resumeHello(protocol.RoleViewer, "tok2",
		r.mint(resumeToken{stream: "tok", peer: id, gen: 1, exp: time.Now().Add(time.Minute)})), errResumeStream)
	refused("replayed while connected", resumeHello(protocol.RoleViewer, "tok", w.Resume), errResumeLive)
	// The replay made the server check the viewer's connection; it answers
	// the ping, so it keeps its place.
	time.Sleep(probeTimeout + 500*time.Millisecond) // a check that must not fire: nothing to poll for
	co := s.hub.get("tok")
	co.mu.Lock()
	suspended := co.suspended[id] != nil
	co.mu.Unlock()
	if suspended || parentOf(s, "tok", id) != srcID {
		t.Fatal("a replayed token's check cut a live peer off")
	}
	refused("another server's secret", resumeHello(protocol.RoleViewer, "tok",
		newResumer(ResumeConfig{}).mint(resumeToken{stream: "tok", peer: id, gen: 1, exp: time.Now().Add(time.Minute)})), errResumeForged)

	// A real drop and resume spends the first token.
	viewer.drop()
	waitSuspended(t, s, "tok", id)
	again := dialLive(t, url, nil)
	again.send(resumeHello(protocol.RoleViewer, "tok", w.Resume))
	w2 := again.next(protocol.TypeWelcome)
	if !w2.Resumed || w2.ID != id || w2.Peer != srcID || w2.Resume == w.Resume {
		t.Fatalf("resumed welcome %+v, want id %s under %s with a new token", w2, id, srcID)
	}
	again.drop()
	waitSuspended(t, s, "tok", id)
	refused("a spent token", resumeHello(protocol.RoleViewer, "tok", w.Resume), errResumeStale)
	refused("another role", resumeHello(protocol.RoleRelay, "tok", w2.Resume), errResumeMismatch)
	refused("no such peer", resumeHello(protocol.RoleViewer, "tok",
		r.mint(resumeToken{stream: "tok", peer: "pnobody", gen: 1, exp: time.Now().Add(time.Minute)})), errResumeGone)
	// The genuine token still works after all that.
	last := dialLive(t, url, nil)
	last.send(resumeHello(protocol.RoleViewer, "tok", w2.Resume))
	if w3 := last.next(protocol.TypeWelcome); w3.ID != id || !w3.Resumed {
		t.Fatalf("genuine resume after refusals: %+v", w3)
	}
	fams := scrape(t, url)
	expectMetric(t, fams, 2, "canopy_resume_suspensions_total")
	expectMetric(t, fams, 2, "canopy_resumes_total", "outcome", "resumed")
	expectMetric(t, fams, 9, "canopy_resumes_total", "outcome", "refused")
	expectMetric(t, fams, 0, "canopy_suspended_peers")
}

// TestResumeTokenRenewed: a peer is sent a fresh token (a resume message)
// once half of its token's lifetime has passed, and the fresh one resumes.
func TestResumeTokenRenewed(t *testing.T) {
	s, url := startServerWith(t, Config{Policy: tree.Config{SourceCapacity: 2},
		Resume: ResumeConfig{TTL: 2 * time.Second}, Limits: Limits{PingInterval: 200 * time.Millisecond}})
	join(t, url, protocol.RoleSource, protocol.KindGo, "renew", 2)
	p := dialLive(t, url, nil)
	p.send(hello(protocol.RoleViewer, protocol.KindGo, "renew", 0, ""))
	w := p.next(protocol.TypeWelcome)
	fresh := p.next(protocol.TypeResume)
	if fresh.Resume == w.Resume {
		t.Fatal("the renewed token is the old one")
	}
	tok, err := s.hub.resumer.verify(fresh.Resume, "renew")
	if err != nil || tok.peer != w.ID || tok.gen != 1 {
		t.Fatalf("renewed token %+v: %v", tok, err)
	}
	p.drop()
	waitSuspended(t, s, "renew", w.ID)
	again := dialLive(t, url, nil)
	m := &protocol.Message{Type: protocol.TypeHello, Version: protocol.Version, Role: protocol.RoleViewer, Kind: protocol.KindGo,
		Stream: "renew", Resume: fresh.Resume}
	data, _ := protocol.Encode(m)
	again.send(string(data))
	if w2 := again.next(protocol.TypeWelcome); w2.ID != w.ID || !w2.Resumed {
		t.Fatalf("resume with the renewed token: %+v", w2)
	}
}
