package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"canopy/mesh"
	"canopy/mesh/protocol"
)

// Re-dialing: a peer whose signaling drops (the server restarted, a proxy
// cut an idle connection, the network blinked) first resumes: its
// mesh.Node keeps its connections and gets its place back with its resume
// token, within the server's grace period (mesh resume.go). Only when that
// fails does it join again with a new mesh.Node, after a jittered
// exponential back-off, reset once a session has been live. Only Ctrl-C
// or a final error ends the command.
const (
	// stableAfter is how long a session must last to count as live when
	// it has no parent's media to prove it (a source).
	stableAfter = 10 * time.Second
	// notFoundTries is how many times in a row a stream that was never
	// joined may be missing before that is final: long enough (~15 s) for
	// a relay started just before its source.
	notFoundTries = 5
)

// Errors of a session.
var (
	// errSessionEnded means a node stopped without saying why; it is retried.
	errSessionEnded = errors.New("signaling ended")
	// errFinalMedia means a source's media could not be read: not something
	// a new connection fixes.
	errFinalMedia = errors.New("reading the media failed")
)

// session is what one run of a node reports to redial.
type session struct {
	joinedAt atomic.Int64 // unix nanoseconds of the welcome; 0 before
	live     atomic.Bool  // media from a parent arrived
	stderr   io.Writer    // where resumes are told
}

// joined records that the server admitted the node.
func (s *session) joined() { s.joinedAt.Store(time.Now().UnixNano()) }

// wasLive reports whether the session played, or for a source lasted.
func (s *session) wasLive() bool {
	at := s.joinedAt.Load()
	return s.live.Load() || (at != 0 && time.Since(time.Unix(0, at)) >= stableAfter)
}

// onEvent marks the session live on the node's first media from a parent.
// It also says when the node's signaling dropped and when it resumed.
func (s *session) onEvent(e mesh.Event) {
	switch e.Kind {
	case mesh.EventLive:
		s.live.Store(true)
	case mesh.EventResuming:
		fmt.Fprintf(s.stderr, "client: lost the server (%s); resuming with the same place\n", e.Reason)
	case mesh.EventResumed:
		fmt.Fprintf(s.stderr, "client: resumed its place (parent %q)\n", e.Peer)
	}
}

// redial runs sessions until one returns nil (the command is done), ctx
// ends (its error is returned), or an error is final: see finalError.
func redial(ctx context.Context, stderr io.Writer, stream string, allowNotFound bool, run func(context.Context, *session) error) error {
	var backoff mesh.Backoff
	everJoined := false
	missing := 0
	for {
		s := &session{stderr: stderr}
		err := run(ctx, s)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			return nil
		}
		everJoined = everJoined || s.joinedAt.Load() != 0
		if s.wasLive() {
			backoff.Reset()
		}
		var se *mesh.ServerError
		isServer := errors.As(err, &se)
		if isServer && se.Code == protocol.CodeNotFound {
			missing++
		} else {
			missing = 0
		}
		if ferr := finalError(err, stream, everJoined, allowNotFound && missing < notFoundTries); ferr != nil {
			return ferr
		}
		wait := backoff.Next()
		switch {
		case isServer && se.Code == protocol.CodeNotFound && everJoined:
			fmt.Fprintf(stderr, "client: stream %q is gone; waiting for it to return (retrying in %s)\n", stream, wait.Round(100*time.Millisecond))
		case isServer && se.Code == protocol.CodeNotFound:
			fmt.Fprintf(stderr, "client: stream %q does not exist yet; retrying in %s\n", stream, wait.Round(100*time.Millisecond))
		case s.joinedAt.Load() != 0:
			fmt.Fprintf(stderr, "client: lost the server (%v); reconnecting in %s\n", err, wait.Round(100*time.Millisecond))
		default:
			fmt.Fprintf(stderr, "client: cannot join (%v); retrying in %s\n", err, wait.Round(100*time.Millisecond))
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// finalError says whether err ends the command, and how to say it: a token
// the server refuses never becomes valid by retrying; a stream that does
// not exist, or already has a source, is final only if this command never
// joined it (afterwards it is the stream coming back, or the server still
// holding this command's previous connection).
func finalError(err error, stream string, everJoined, retryNotFound bool) error {
	if errors.Is(err, errFinalMedia) {
		return err
	}
	var se *mesh.ServerError
	if !errors.As(err, &se) {
		return nil
	}
	switch se.Code {
	case protocol.CodeUnauthorized:
		return fmt.Errorf("the server refused the credential for %q: %s", stream, se.Reason)
	case protocol.CodeNotFound:
		if !everJoined && !retryNotFound {
			return fmt.Errorf("stream %q does not exist: %w", stream, err)
		}
	case protocol.CodeStreamTaken:
		if !everJoined {
			return fmt.Errorf("stream %q already has a source: %w", stream, err)
		}
	case protocol.CodeBadMessage, protocol.CodeTooLarge, protocol.CodeState, protocol.CodeUnavailable:
		return err // this client and the server disagree, or it cannot serve us: retrying repeats it
	}
	return nil
}

// checkServer refuses a -server no retry can fix: one address, or several
// separated by commas (tried in turn on connect and on resume).
func checkServer(list string) error {
	n := 0
	for _, server := range strings.Split(list, ",") {
		if server = strings.TrimSpace(server); server == "" {
			continue
		}
		n++
		if err := checkOneServer(server); err != nil {
			return err
		}
	}
	if n == 0 {
		return fmt.Errorf("-server %q: no address", list)
	}
	return nil
}

func checkOneServer(server string) error {
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil {
		return fmt.Errorf("-server %q: %w", server, err)
	}
	switch u.Scheme {
	case "http", "https", "ws", "wss":
		return nil
	}
	return fmt.Errorf("-server %q: the scheme must be http or https", server)
}

// nodeEnd is why a node stopped, never nil.
func nodeEnd(n *mesh.Node) error {
	if err := n.Err(); err != nil {
		return err
	}
	return errSessionEnded
}
