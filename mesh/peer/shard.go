package peer

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Shards. A writer goroutine per child is what keeps a child whose writes
// block from stalling the others, but waking N goroutines for every frame
// costs more than writing the frame: on two cores, each wake-up of an idle
// goroutine was ~25 µs of scheduler work against ~3 µs per packet written.
// A child whose packets go out through its own UDP sockets (every child
// connected over host or server-reflexive UDP, the case bench-forward
// measures) cannot stall the others that way: a UDP send waits only when its
// socket's send buffer is full, that is when the host's network device falls
// behind, which holds up every child alike. Such a child is adopted by one
// of the Forwarder's shards (one per childrenPerShard children, at most one
// per core), which runs the passes of all its children in turn: one wake-up
// per shard per frame instead of one per child. A child whose packets go elsewhere (TURN
// over TCP, a shared UDP mux, a test's writer) keeps its own goroutine, and a
// shard gives back a child whose packets stop going through its sockets.

// shard runs the passes of the children it adopted.
type shard struct {
	mu     sync.Mutex // orders changes to kids
	kids   atomic.Pointer[[]*childWriter]
	notify chan struct{}
	idle   atomic.Bool
	stop   chan struct{}
	done   chan struct{}
}

func newShard() *shard {
	s := &shard{notify: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	s.kids.Store(&[]*childWriter{})
	go s.run()
	return s
}

// shardCount is the most shards a Forwarder spreads its children over: one
// per core the runtime uses, so a large fan-out still uses every core. A
// shard is added for every childrenPerShard children: waking a second
// goroutine on another core costs more than it saves for a few children,
// and a shard writes a frame to 16 children in about half a millisecond.
func shardCount() int { return max(1, min(runtime.GOMAXPROCS(0), 16)) }

const childrenPerShard = 16

func (s *shard) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// wakeIfIdle wakes the shard unless it is in a round of passes, which looks
// at every child's queue again before it sleeps.
func (s *shard) wakeIfIdle() {
	if s.idle.Load() && s.idle.CompareAndSwap(true, false) {
		s.wake()
	}
}

func (s *shard) size() int { return len(*s.kids.Load()) }

func (s *shard) add(c *childWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.kids.Load()
	next := append(append(make([]*childWriter, 0, len(old)+1), old...), c)
	s.kids.Store(&next)
}

func (s *shard) remove(c *childWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := without(*s.kids.Load(), c)
	s.kids.Store(&next)
}

// run makes rounds of passes over the children until stopped, sleeping when
// no child has anything queued.
func (s *shard) run() {
	defer close(s.done)
	for {
		kids := *s.kids.Load()
		for _, c := range kids {
			s.pass(c)
		}
		s.idle.Store(true)
		busy := false
		for _, c := range *s.kids.Load() {
			if c.tail.Load() != c.head.Load() {
				busy = true
				break
			}
		}
		if busy {
			s.idle.Store(false)
			continue
		}
		select {
		case <-s.notify:
		case <-s.stop:
			return
		}
		s.idle.Store(false)
	}
}

// pass runs one child's pass unless it left; a child whose packets no
// longer all go through its own sockets is given back to its goroutine.
func (s *shard) pass(c *childWriter) {
	c.passMu.Lock()
	defer c.passMu.Unlock()
	if c.gone {
		return
	}
	if sent, through := c.pass(); sent > 0 && !through {
		c.gone = true
		c.shard.Store(nil)
		s.remove(c)
		select {
		case c.demoted <- struct{}{}: // buffered(1); the goroutine waits for it
		default:
		}
	}
}

// adopt hands a child to the shard with the fewest children, starting the
// shards on first use. It reports false once the Forwarder is closed.
func (f *Forwarder) adopt(c *childWriter) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || c.stopped() {
		return false
	}
	total := 0
	for _, s := range f.shards {
		total += s.size()
	}
	if want := min(shardCount(), 1+total/childrenPerShard); len(f.shards) < want {
		f.shards = append(f.shards, newShard())
	}
	best := f.shards[0]
	for _, s := range f.shards[1:] {
		if s.size() < best.size() {
			best = s
		}
	}
	c.passMu.Lock()
	c.gone = false
	c.passMu.Unlock()
	// shard is set before the shard can see the child: a pass that gives
	// the child back clears it, and must not be overwritten after.
	c.shard.Store(best)
	best.add(c)
	best.wake() // for what was pushed while the child changed hands
	return true
}

// disown takes a stopped child from its shard and waits for a pass in
// progress: after it, the shard no longer touches the child.
func (f *Forwarder) disown(c *childWriter) {
	c.passMu.Lock()
	c.gone = true
	s := c.shard.Swap(nil)
	c.passMu.Unlock()
	if s != nil {
		s.remove(c)
	}
}

// stopShards ends the shards' goroutines; their children have left.
func (f *Forwarder) stopShards() {
	f.mu.Lock()
	shards := f.shards
	f.shards = nil
	f.mu.Unlock()
	for _, s := range shards {
		close(s.stop)
		<-s.done
	}
}
