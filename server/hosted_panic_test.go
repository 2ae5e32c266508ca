package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"canopy/mesh"
	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// TestHostedNodePanicStopsOnlyThatNode: a panic in the loop of a node the
// server hosts (here its event callback, standing for any bug a
// neighbour's message trips) stops that node with ErrPanic; the server and
// the stream carry on. Before, the panic ended the whole server process.
func TestHostedNodePanicStopsOnlyThatNode(t *testing.T) {
	lightTest(t)
	s, url := startServer(t, tree.Config{SourceCapacity: 2})
	src := startSource(t, url, "pan", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	node, err := mesh.Dial(ctx, mesh.Config{
		Transport: s.LocalTransport(nil), Stream: "pan", Role: protocol.RoleRelay, Capacity: 2, LoopbackOnly: true,
		Logger: testLogger(),
		OnEvent: func(e mesh.Event) {
			if e.Kind == mesh.EventParent {
				panic("a bug handling the parent message")
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-node.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the node did not stop")
	}
	if !errors.Is(node.Err(), mesh.ErrPanic) {
		t.Errorf("node stopped with %v, want ErrPanic", node.Err())
	}
	v := startPeer(t, url, "pan", protocol.RoleViewer, 0, src)
	waitFor(t, 30*time.Second, "a viewer plays after the hosted node's panic", func() bool { f, _, _ := v.counts(); return f >= 30 })
}
