package mesh

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"canopy/mesh/protocol"
)

// Resume (README "Resume"). The server hands each peer a resume token in
// its welcome and keeps a peer whose signaling connection dropped in the
// tree for a grace period. A node whose WebSocket drops keeps every
// PeerConnection (its parent's, its children's, its standby links) and
// dials again, the same server first and then the others of Config.Server
// in turn, with a hello carrying the token. The resumed welcome says where
// the node stands now (parent, depth, standby, children, standby
// children); the node makes its connections match, which is a no-op when
// nothing moved meanwhile. What it sent while the connection was down is
// held and sent once it is back. Signals lost in the cut itself are
// repaired as any lost negotiation is: a child whose link never comes up
// reports its parent stalled after stallTimeout.

// ErrResumeFailed means the node's signaling dropped and it could not get
// its place back: the server refused its token (its grace period ended,
// say) or no server answered in time. Join again with a new node.
var ErrResumeFailed = errors.New("mesh: resume failed")

// Resume timings.
const (
	// resumeBackoff is the first delay between resume attempts after one
	// at once: 250 ms doubling to resumeBackoffMax, so a node tries ~6
	// times within a 10 s grace period.
	resumeBackoff    = 250 * time.Millisecond
	resumeBackoffMax = 2 * time.Second
	// maxPending bounds the messages a node holds while it resumes, as the
	// signaling send buffer does.
	maxPending = 256
)

// link is the node's signaling of the moment: the connection, or the
// messages held while the node resumes. sig is replaced only by the run
// goroutine, under mu; other goroutines send through Node.send.
type link struct {
	mu       sync.Mutex
	sig      *signaling
	resuming bool
	pending  []*protocol.Message
}

// send sends m on the current connection, or holds it while the node
// resumes. Stats are not held: the next report replaces them.
func (n *Node) send(m *protocol.Message) error {
	n.link.mu.Lock()
	defer n.link.mu.Unlock()
	if n.link.resuming {
		if m.Type != protocol.TypeStats && len(n.link.pending) < maxPending {
			n.link.pending = append(n.link.pending, m)
		}
		return nil
	}
	return n.link.sig.send(m)
}

// splitServers is Config.Server as a list: one URL, or several separated
// by commas, tried in turn.
func splitServers(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// dialAny connects to the first of servers that answers, starting at
// start; it returns the index of the one it reached.
func dialAny(ctx context.Context, servers []string, start int, handshake time.Duration) (*signaling, int, error) {
	if len(servers) == 0 {
		return nil, 0, errors.New("mesh: no server address")
	}
	var errs []error
	for k := range servers {
		i := (start + k) % len(servers)
		sig, err := dialSignaling(ctx, servers[i], handshake)
		if err == nil {
			return sig, i, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, 0, errors.Join(errs...)
}

// awaitWelcome waits for the server's answer to a hello: its welcome, or
// its error as a *ServerError.
func awaitWelcome(ctx context.Context, sig *signaling) (*protocol.Message, error) {
	for {
		select {
		case m, ok := <-sig.in:
			if !ok {
				return nil, fmt.Errorf("server closed the connection before welcome: %v", sig.err)
			}
			switch m.Type {
			case protocol.TypeWelcome:
				return m, nil
			case protocol.TypeError:
				return nil, &ServerError{Code: m.Code, Reason: m.Reason}
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// resumeResult is what a resume attempt hands the run goroutine.
type resumeResult struct {
	sig     *signaling
	welcome *protocol.Message
	server  int
	err     error
}

// beginResume starts getting the node's place back after its signaling
// ended; false when it cannot (an in-process transport, no token, a
// server that keeps no places, or the node is leaving).
func (n *Node) beginResume() bool {
	if n.cfg.Transport != nil || n.resumeToken == "" || n.grace <= 0 || n.leaving {
		return false
	}
	select {
	case <-n.done:
		return false // stopped (Kill): nothing to resume
	default:
	}
	n.link.mu.Lock()
	n.link.resuming = true
	n.link.mu.Unlock()
	deadline := time.Now().Add(n.grace)
	n.log.Info("signaling dropped; resuming", "err", n.link.sig.err, "grace", n.grace)
	n.emit(Event{Kind: EventResuming, Reason: fmt.Sprint(n.link.sig.err)})
	hello := n.hello()
	hello.Resume = n.resumeToken
	first := n.server
	if errors.Is(n.link.sig.err, errSilent) {
		first++ // stopped, not gone: it would hold the first attempt
	}
	n.wg.Add(1)
	go n.resumeLoop(hello, first, deadline)
	return true
}

// resumeLoop dials until a server resumes the node, refuses it, or the
// grace period is over: at once, then with a back-off, from servers[first]
// (the server it was on, or the next one when that one went silent) and
// then the others in turn.
func (n *Node) resumeLoop(hello *protocol.Message, first int, deadline time.Time) {
	defer n.wg.Done()
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	go func() {
		select {
		case <-n.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	b := Backoff{Base: resumeBackoff, Max: resumeBackoffMax}
	var last error
	at := first // the server to try next
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(b.Next()):
			case <-ctx.Done():
				n.resumeDone(resumeResult{err: fmt.Errorf("%w: no server resumed it within %s: %v", ErrResumeFailed, n.grace, last)})
				return
			}
		}
		r := n.tryResume(ctx, hello, at)
		var se *ServerError
		if !errors.As(r.err, &se) || se.Code != protocol.CodeResumeLive {
			// The next server; one that answered resume_live is checking
			// the old connection and asked for a retry shortly: it again
			// (the next may be the silent one, holding an attempt 6 s).
			at++
		}
		switch {
		case r.err == nil:
			n.resumeDone(r)
			return
		case errors.As(r.err, &se) && se.Code != protocol.CodeFull && se.Code != protocol.CodeInternal &&
			se.Code != protocol.CodeRateLimited && se.Code != protocol.CodeResumeLive:
			// Refused: the token, the credential or the hello; another try repeats it.
			n.resumeDone(resumeResult{err: fmt.Errorf("%w: %w", ErrResumeFailed, r.err)})
			return
		}
		last = r.err
		if ctx.Err() != nil {
			n.resumeDone(resumeResult{err: fmt.Errorf("%w: no server resumed it within %s: %v", ErrResumeFailed, n.grace, last)})
			return
		}
	}
}

// tryResume makes one attempt on servers[start%len] (and, if that does
// not answer, the next ones).
func (n *Node) tryResume(ctx context.Context, hello *protocol.Message, start int) resumeResult {
	sig, i, err := dialAny(ctx, n.servers, start%len(n.servers), silenceTimeout)
	if err != nil {
		return resumeResult{err: err}
	}
	if err := sig.send(hello); err != nil {
		sig.close()
		return resumeResult{err: err}
	}
	w, err := awaitWelcome(ctx, sig)
	if err == nil && !w.Resumed {
		err = errors.New("the server answered a resume with a fresh welcome")
	}
	if err != nil {
		sig.close()
		return resumeResult{err: err}
	}
	return resumeResult{sig: sig, welcome: w, server: i}
}

// resumeDone hands r to the run goroutine, or closes r's connection when
// the node stopped meanwhile.
func (n *Node) resumeDone(r resumeResult) {
	select {
	case n.resumed <- r:
	case <-n.done:
		if r.sig != nil {
			r.sig.close()
		}
	}
}

// adoptResumed makes r's connection the node's, sends what was held
// meanwhile and makes the node's connections match its place. It returns
// the connection's incoming messages.
func (n *Node) adoptResumed(r resumeResult) <-chan *protocol.Message {
	n.link.mu.Lock()
	n.link.sig = r.sig
	n.link.resuming = false
	pending := n.link.pending
	n.link.pending = nil
	for _, m := range pending {
		_ = r.sig.send(m)
	}
	n.link.mu.Unlock()
	n.server = r.server
	n.resumeToken = r.welcome.Resume
	if r.welcome.Grace > 0 {
		n.grace = time.Duration(r.welcome.Grace) * time.Millisecond
	}
	n.reconcile(r.welcome)
	n.log.Info("resumed", "server", n.servers[r.server], "parent", r.welcome.Peer, "children", len(r.welcome.Children), "held", len(pending))
	n.emit(Event{Kind: EventResumed, Peer: r.welcome.Peer, Depth: r.welcome.Depth, Standby: r.welcome.Standby})
	return r.sig.in
}

// reconcile makes the node's connections match the place a resumed
// welcome describes: what moved while the node was away (a new parent, a
// child detached or attached, a standby link) is done now; what did not
// move is left alone, its connections untouched.
func (n *Node) reconcile(w *protocol.Message) {
	n.setTracks(w.Tracks)
	n.offline.Store(false) // an offline message follows when the source is away
	if n.cfg.Role != protocol.RoleSource {
		switch {
		case w.Peer == "":
			if n.cur != nil {
				n.detach(n.cur.parent) // queued: no parent now
			}
		case n.cur == nil || n.cur.parent != w.Peer:
			n.setParent(w.Peer, w.Depth, w.Standby)
		default:
			n.depth.Store(int64(w.Depth))
		}
		if n.Standby() != w.Standby {
			n.setStandby(w.Standby)
		}
	}
	want := make(map[string]bool, len(w.Children))
	for _, id := range w.Children {
		want[id] = true
	}
	for id := range n.downstreams {
		if !want[id] {
			n.detach(id)
		}
	}
	for _, id := range w.Children {
		switch {
		case n.downstreams[id] != nil:
		case n.sb.held[id] != nil:
			n.promoteChild(id) // promoted while the node was away
		default:
			n.attach(id) // attached while the node was away: offer now
		}
	}
	held := make(map[string]bool, len(w.Held))
	for _, id := range w.Held {
		held[id] = true
	}
	for id := range n.sb.held {
		if !held[id] {
			n.dropStandby(id)
		}
	}
	for _, id := range w.Held {
		if n.sb.held[id] == nil && n.downstreams[id] == nil {
			n.holdStandby(id)
		}
	}
}
