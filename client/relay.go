package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"canopy/mesh"
	"canopy/mesh/protocol"
)

// relay joins a stream as a Go relay and keeps it joined: when its
// signaling drops it joins again (redial), so a relay process ends only on
// Ctrl-C or a final error.
func relay(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	var c common
	c.register(fs, 8)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	if err := checkServer(c.server); err != nil {
		return err
	}
	err = redial(ctx, stderr, c.stream, true, func(ctx context.Context, s *session) error {
		node, err := mesh.Dial(ctx, mesh.Config{
			Server: c.server, Stream: c.stream, Role: protocol.RoleRelay, Capacity: c.capacity,
			Token: c.token, LoopbackOnly: c.loopback, Logger: log,
			OnEvent: func(e mesh.Event) {
				s.onEvent(e)
				switch e.Kind {
				case mesh.EventParent:
					fmt.Fprintf(stderr, "relaying %q: parent %s, depth %d\n", c.stream, e.Peer, e.Depth)
				case mesh.EventOffline:
					fmt.Fprintf(stderr, "stream %q is offline: %s\n", c.stream, e.Reason)
				}
			},
		})
		if err != nil {
			return err
		}
		s.joined()
		defer node.Close()
		select {
		case <-ctx.Done():
			return nil
		case <-node.Done():
			return nodeEnd(node)
		}
	})
	if ctx.Err() != nil {
		return nil // interrupted: a normal end
	}
	return err
}
