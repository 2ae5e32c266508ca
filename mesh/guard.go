package mesh

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// ErrPanic means the node stopped because handling a message or one of its
// timers panicked. The node's neighbours are anyone (their signals reach
// it through the server), and a server hosts nodes of its own (the demo,
// WHIP sources, WHEP relays): a bug one of them trips stops that node, as a
// panic in one peer's session ends only that session, never the process.
var ErrPanic = errors.New("mesh: node stopped by a panic")

// recoverRun, deferred in run, turns a panic into the node's stop.
func (n *Node) recoverRun() {
	r := recover()
	if r == nil {
		return
	}
	n.log.Error("panic in the node's loop; it stops", "panic", r, "stack", string(debug.Stack()))
	n.stop(fmt.Errorf("%w: %v", ErrPanic, r))
}
