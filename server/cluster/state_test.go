package cluster

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

// memState is a StateSource over a map, for the tests.
type memState struct {
	mu      sync.Mutex
	entries map[string][]byte
	dirty   map[string]bool
}

func newMemState() *memState {
	return &memState{entries: make(map[string][]byte), dirty: make(map[string]bool)}
}

func (m *memState) set(k, v string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v == "" {
		delete(m.entries, k)
	} else {
		m.entries[k] = []byte(v)
	}
	m.dirty[k] = true
}

func (m *memState) Changed() []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Entry
	for _, k := range slices.Sorted(maps.Keys(m.dirty)) {
		out = append(out, Entry{Key: k, Value: m.entries[k]})
	}
	clear(m.dirty)
	return out
}

func (m *memState) All() []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Entry
	for _, k := range slices.Sorted(maps.Keys(m.entries)) {
		out = append(out, Entry{Key: k, Value: m.entries[k]})
	}
	return out
}

func (m *memState) copyOf() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.entries))
	for k, v := range m.entries {
		out[k] = string(v)
	}
	return out
}

func stringsOf(m map[string][]byte) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

// inStep waits until node's copy of stream equals src's and is in step.
func inStep(t *testing.T, node *Node, stream string, src *memState, within time.Duration) {
	t.Helper()
	waitUntil(t, within, node.ID()+"'s copy in step with the owner's state", func() bool {
		got, _, synced := node.StateOf(stream)
		return synced && maps.Equal(stringsOf(got), src.copyOf())
	})
}

// TestStateDeltasReachEveryServer: an owner's changes reach the other
// servers as deltas (one entry each, not the whole state); a server that
// lost a delta sees the gap at the next one, asks for a snapshot and
// converges; removals and a snapshot larger than one message (chunks)
// come through.
func TestStateDeltasReachEveryServer(t *testing.T) {
	nodes := startNodes(t, 3)
	const stream = "deltas"
	src := newMemState()
	for i := range 1000 {
		src.set(fmt.Sprintf("n/%04d", i), fmt.Sprintf("%0400d", i)) // 400 KB: two chunks
	}
	src.Changed() // the first snapshot says it all
	o := claimEventually(t, nodes[0], stream, echo{}, nil)
	o.SetState(src)
	for _, n := range nodes[1:] {
		inStep(t, n, stream, src, 10*time.Second)
	}
	d0, e0, b0, s0 := o.Published()
	src.set("n/0001", "changed")
	for _, n := range nodes[1:] {
		inStep(t, n, stream, src, 10*time.Second)
	}
	d1, e1, b1, s1 := o.Published()
	t.Logf("one change: %d delta(s), %d entries, %d bytes, %d snapshots (the state: %d entries)", d1-d0, e1-e0, b1-b0, s1-s0, 1000)
	if e1-e0 != 1 || b1-b0 > 64 || s1 != s0 {
		t.Errorf("one change published %d entries, %d bytes, %d snapshots: want its own entry only", e1-e0, b1-b0, s1-s0)
	}

	// Server 3 loses the next delta: the one after it shows the gap.
	lost := nodes[2]
	before := lost.StateCounts()
	lost.dropDeltas.Store(1)
	src.set("n/0002", "lost at server 3")
	waitUntil(t, 10*time.Second, "the delta lost at server 3", func() bool { return lost.dropDeltas.Load() <= 0 })
	src.set("n/0003", "") // a removal
	src.set("n/1000", "new")
	inStep(t, nodes[1], stream, src, 10*time.Second)
	inStep(t, lost, stream, src, 10*time.Second)
	after := lost.StateCounts()
	t.Logf("server 3: %+v → %+v", before, after)
	if after.Gaps == before.Gaps || after.Asked == before.Asked || after.Snapshots == before.Snapshots {
		t.Errorf("server 3 converged without a gap, a request and a snapshot: %+v → %+v", before, after)
	}
}

// TestStateReachesEveryServerOfAQuietStream: a server that missed the
// owner's first snapshot (here it joined the cluster after it) and a
// server that lost the last delta before a quiet spell both converge,
// with no change to publish: the owner's beat says the number of its
// last delta, and a copy behind it asks for a snapshot.
func TestStateReachesEveryServerOfAQuietStream(t *testing.T) {
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	routes := make([]string, len(addrs))
	for i, a := range addrs {
		routes[i] = "nats://" + a
	}
	var nodes []*Node
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, a := range addrs[:2] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := Start(Config{ID: fmt.Sprintf("q%d", i+1), Name: "quiet-test", Listen: a, Routes: routes[:2], StoreDir: t.TempDir(), Log: quiet})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			nodes = append(nodes, n)
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Close()
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	const stream = "quietstate"
	src := newMemState()
	src.set("m", "meta")
	o := claimEventually(t, nodes[0], stream, echo{}, nil)
	o.SetState(src)
	other := nodes[1]
	inStep(t, other, stream, src, 10*time.Second)

	// The last delta before a quiet spell is lost at the other server.
	before := other.StateCounts()
	other.dropDeltas.Store(1)
	src.set("n/last", "the last change for a while")
	waitUntil(t, 10*time.Second, "the lost delta", func() bool { return other.dropDeltas.Load() <= 0 })
	inStep(t, other, stream, src, 10*time.Second)
	if after := other.StateCounts(); after.Gaps == before.Gaps || after.Snapshots == before.Snapshots {
		t.Errorf("the copy converged without seeing the gap and taking a snapshot: %+v → %+v", before, after)
	}

	// A third server joins the cluster: the stream's first snapshot and
	// every delta are long gone.
	late, err := Start(Config{ID: "q3", Name: "quiet-test", Listen: addrs[2], Routes: routes, StoreDir: t.TempDir(), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(late.Close)
	inStep(t, late, stream, src, 20*time.Second)
}

// TestStateChangeBeforeOwnerDies: a change made 20 ms before its owner
// dies (its NATS connection and server cut, no handover) is in the other
// servers' copies, which a new owner rebuilds from.
func TestStateChangeBeforeOwnerDies(t *testing.T) {
	nodes := startNodes(t, 3)
	const stream = "lastchange"
	src := newMemState()
	src.set("m", "meta")
	o := claimEventually(t, nodes[0], stream, echo{}, nil)
	o.SetState(src)
	for _, n := range nodes[1:] {
		inStep(t, n, stream, src, 10*time.Second)
	}
	src.set("n/late", "joined 20 ms before the crash")
	time.Sleep(20 * time.Millisecond) // the change's age at the crash, not a wait for a condition
	nodes[0].crash()
	for _, n := range nodes[1:] {
		got, _, _ := n.StateOf(stream)
		if string(got["n/late"]) != "joined 20 ms before the crash" {
			t.Errorf("%s: the last change is not in its copy: %q", n.ID(), got)
		}
	}
}

// FuzzDecodeEntries: any bytes decode without a panic, and what decodes
// encodes back to the same bytes.
func FuzzDecodeEntries(f *testing.F) {
	f.Add(appendEntry(appendEntry(nil, Entry{Key: "n/a", Value: []byte("{}")}), Entry{Key: "b/x"}))
	f.Add([]byte{0x05, 'a'})
	f.Add([]byte{0x01, 'k', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		es, ok := decodeEntries(b)
		if !ok {
			return
		}
		var again []byte
		for _, e := range es {
			again = appendEntry(again, e)
		}
		es2, ok := decodeEntries(again)
		if !ok || len(es2) != len(es) {
			t.Fatalf("re-encoded %d entries do not decode: %v", len(es), ok)
		}
		for i := range es {
			if es[i].Key != es2[i].Key || string(es[i].Value) != string(es2[i].Value) || (es[i].Value == nil) != (es2[i].Value == nil) {
				t.Fatalf("entry %d: %+v then %+v", i, es[i], es2[i])
			}
		}
	})
}
