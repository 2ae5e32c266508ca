package cluster

import (
	"encoding/binary"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// A stream's state, replicated to every server (handover.go says why).
// The owner keeps it as keyed entries (a peer's place, the stream's
// tracks, a bar) and publishes what changed: every deltaPeriod, the
// entries changed since the last delta, numbered in sequence. Each server
// applies them in order to its copy. A server that sees a gap in the
// sequence (a message lost: a slow consumer, a route that reconnected)
// holds the deltas after it and asks for a snapshot; the owner publishes
// one (every entry, in chunks) to every server, numbered with the last
// delta it covers, and the server goes on from there. The owner also
// publishes a snapshot when it starts (the edges learn of it from that),
// and when the deltas since the last one add up to its size, so a server
// that lost a message without noticing (the last delta before a silence)
// converges, at an amortised O(change) cost: a change costs its own
// entries, never the whole state. Once a stateBeat the owner also says
// the number of its last delta (17 bytes): a server whose copy is behind
// it, or that has none (it missed the first snapshot: its subscription
// had not reached the owner's NATS server yet, or it joined the cluster
// later), asks for a snapshot, so even a quiet stream's copies converge
// within a beat.

const (
	// deltaPeriod bounds how long a change waits before it is published:
	// what changed in the last deltaPeriod before an owner's crash is what
	// the new owner does not know (a peer that joined then joins again).
	deltaPeriod = 5 * time.Millisecond
	// stateBeat: how often an owner says the number of its last delta.
	stateBeat = time.Second
	// minSnapshotBytes: deltas under this much since the last snapshot
	// never call for another one by their size.
	minSnapshotBytes = 64 << 10
	// chunkBytes bounds one state message: an external NATS takes 1 MB
	// payloads by default.
	chunkBytes = 256 << 10
	// maxHeldDeltas bounds the deltas a server holds past a gap while it
	// waits for a snapshot; past it the snapshot alone brings it back.
	maxHeldDeltas = 4096
	// askEvery bounds how often a server asks a stream's owner for a
	// snapshot.
	askEvery = 250 * time.Millisecond
)

// State subjects: canopy.t.<stream> carries the owner's publications,
// kind | epoch | seq | body; canopy.tq.<stream> the servers' requests for
// a snapshot.
const (
	statePrefix    = "canopy.t."
	stateAskPrefix = "canopy.tq."
)

const (
	stateDelta byte = 'd' // entries changed since delta seq-1
	stateSnap  byte = 's' // one chunk of every entry, as of delta seq: part | parts | entries
	stateHand  byte = 'h' // the owner hands the stream over (after a last snapshot)
	stateEnded byte = 'e' // the stream ended: forget its state
	stateSeq   byte = 'b' // the owner's last delta is seq (a beat, no body)
)

// Entry is one keyed part of a stream's state; a nil Value removes Key.
type Entry struct {
	Key   string
	Value []byte
}

// StateSource is a stream's state as its owner keeps it.
type StateSource interface {
	// Changed returns the entries changed since the last call, with their
	// values now (nil for a removed key): O(change).
	Changed() []Entry
	// All returns every entry as it is now (nil once the stream is gone).
	// It leaves what Changed will return as it is: a snapshot is numbered
	// with the last delta, and the changes it already holds go out again
	// in the next one.
	All() []Entry
}

// stateCopy is what a server knows of a stream's state.
type stateCopy struct {
	epoch, seq uint64
	entries    map[string][]byte
	// synced: entries are the owner's as of delta seq (a snapshot and
	// every delta after it). Else the deltas past a gap wait in held
	// for a snapshot.
	synced bool
	held   []heldDelta
	snap   *snapParts // a snapshot being received
	asked  time.Time
}

type heldDelta struct {
	seq     uint64
	entries []Entry
}

// snapParts is a snapshot whose chunks are arriving, in order.
type snapParts struct {
	epoch, seq  uint64
	next, parts uint32
	entries     map[string][]byte
}

// StateCounts are what a server's state copies went through.
type StateCounts struct {
	Deltas, Snapshots, Gaps, Asked uint64
}

// statePublisher is an owner's side of its stream's state.
type statePublisher struct {
	o   *Owned
	src StateSource
	mu  sync.Mutex // one publication at a time: the loop, a handover
	seq uint64
	// since is the bytes of deltas since the last snapshot, snapBytes
	// that snapshot's size; beatAt is when the last beat went out.
	since, snapBytes int
	beatAt           time.Time
	want             atomic.Bool // a server asked for a snapshot
	// sent counts what was published (for the figures).
	sent struct{ deltas, entries, bytes, snaps atomic.Uint64 }
}

// SetState makes the owner publish the stream's state from src. In
// single mode there is no other server to tell: nothing is published.
func (o *Owned) SetState(src StateSource) {
	if o.n.kv == nil {
		return
	}
	p := &statePublisher{o: o, src: src}
	sub, err := o.n.nc.Subscribe(stateAskPrefix+o.stream, func(*nats.Msg) { p.want.Store(true) })
	if err != nil {
		o.n.log.Warn("state requests not served", "stream", o.stream, "err", err)
	} else {
		o.mu.Lock()
		o.subs = append(o.subs, sub)
		o.pub = p
		o.mu.Unlock()
	}
	go p.loop()
}

func (p *statePublisher) loop() {
	o := p.o
	t := time.NewTicker(deltaPeriod)
	defer t.Stop()
	p.publish(true) // at once: the edges learn of a new owner from it
	for {
		select {
		case <-o.stop:
			return
		case <-t.C:
		}
		if o.fenced.Load() {
			return
		}
		if o.expired() {
			continue // woken past its lease: its renewal fences it
		}
		p.publish(false)
	}
}

// publish sends what changed, then a snapshot if one is due (or full).
func (p *statePublisher) publish(full bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.o.fenced.Load() {
		return
	}
	if full {
		p.snapshot(p.src.All())
	}
	p.delta(stateDelta)
	switch {
	case p.want.Swap(false),
		p.since >= max(p.snapBytes, minSnapshotBytes):
		p.snapshot(p.src.All())
	}
	if time.Since(p.beatAt) >= stateBeat {
		p.o.publishState(stateSeq, p.seq, nil)
		p.beatAt = time.Now()
	}
}

// delta publishes the entries changed since the last one, split into
// messages of chunkBytes at most, each with its own number.
func (p *statePublisher) delta(kind byte) {
	changed := p.src.Changed()
	for len(changed) > 0 {
		var body []byte
		k := 0
		for k < len(changed) && (k == 0 || len(body) < chunkBytes) {
			body = appendEntry(body, changed[k])
			k++
		}
		changed = changed[k:]
		p.seq++
		p.o.publishState(kind, p.seq, body)
		p.since += len(body)
		p.sent.deltas.Add(1)
		p.sent.entries.Add(uint64(k))
		p.sent.bytes.Add(uint64(len(body)))
	}
}

// snapshot publishes every entry as of the last delta, in chunks.
func (p *statePublisher) snapshot(all []Entry) {
	if all == nil {
		return
	}
	var chunks [][]byte
	var body []byte
	size := 0
	for _, e := range all {
		body = appendEntry(body, e)
		if len(body) >= chunkBytes {
			chunks, body = append(chunks, body), nil
		}
	}
	if body != nil || len(chunks) == 0 {
		chunks = append(chunks, body)
	}
	for i, c := range chunks {
		head := binary.BigEndian.AppendUint32(nil, uint32(i))
		head = binary.BigEndian.AppendUint32(head, uint32(len(chunks)))
		p.o.publishState(stateSnap, p.seq, append(head, c...))
		size += len(c)
	}
	p.snapBytes, p.since = size, 0
	p.sent.snaps.Add(1)
}

func (o *Owned) publishState(kind byte, seq uint64, body []byte) {
	b := make([]byte, 0, 17+len(body))
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, o.epoch)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, body...)
	_ = o.n.nc.Publish(statePrefix+o.stream, b)
}

// Published is what this owner published of its stream's state: deltas,
// the entries and bytes they carried, and snapshots.
func (o *Owned) Published() (deltas, entries, bytes, snapshots uint64) {
	o.mu.Lock()
	p := o.pub
	o.mu.Unlock()
	if p == nil {
		return
	}
	return p.sent.deltas.Load(), p.sent.entries.Load(), p.sent.bytes.Load(), p.sent.snaps.Load()
}

// appendEntry encodes e: len(key) | key | len(value)+1 | value, lengths
// as uvarints, 0 for a removal.
func appendEntry(b []byte, e Entry) []byte {
	b = binary.AppendUvarint(b, uint64(len(e.Key)))
	b = append(b, e.Key...)
	if e.Value == nil {
		return binary.AppendUvarint(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(e.Value))+1)
	return append(b, e.Value...)
}

// decodeEntries is appendEntry's inverse; false if b is malformed.
func decodeEntries(b []byte) ([]Entry, bool) {
	var out []Entry
	for len(b) > 0 {
		kl, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < kl {
			return nil, false
		}
		b = b[n:]
		key := string(b[:kl])
		b = b[kl:]
		vl, n := binary.Uvarint(b)
		if n <= 0 || (vl > 0 && uint64(len(b)-n) < vl-1) {
			return nil, false
		}
		b = b[n:]
		e := Entry{Key: key}
		if vl > 0 {
			e.Value = slices.Clone(b[:vl-1])
			if e.Value == nil {
				e.Value = []byte{}
			}
			b = b[vl-1:]
		}
		out = append(out, e)
	}
	return out, true
}

func applyEntries(m map[string][]byte, es []Entry) {
	for _, e := range es {
		if e.Value == nil {
			delete(m, e.Key)
		} else {
			m[e.Key] = e.Value
		}
	}
}

// hearState keeps what owners publish of their streams.
func (n *Node) hearState(m *nats.Msg) {
	stream := strings.TrimPrefix(m.Subject, statePrefix)
	if len(m.Data) < 17 {
		return
	}
	kind, epoch, seq, body := m.Data[0], binary.BigEndian.Uint64(m.Data[1:9]), binary.BigEndian.Uint64(m.Data[9:17]), m.Data[17:]
	if kind == stateDelta && n.dropDeltas.Load() > 0 && n.dropDeltas.Add(-1) >= 0 {
		return
	}
	n.mu.Lock()
	cur := n.states[stream]
	if cur != nil && epoch < cur.epoch {
		n.mu.Unlock()
		return // a stale owner's
	}
	// A later owner than the one this edge's links were opened at: the
	// old one fenced itself while alive (its heartbeat goes on, so the
	// edge never noticed), and its peers here must be adopted.
	newer := epoch > n.epochs[stream] && n.epochs[stream] != 0
	if kind == stateEnded {
		delete(n.states, stream)
		n.mu.Unlock()
		return
	}
	if cur == nil {
		cur = &stateCopy{epoch: epoch, entries: make(map[string][]byte)}
		n.states[stream] = cur
	}
	if epoch > cur.epoch {
		// A new owner: its numbering starts afresh, from its first
		// snapshot; what the old one said stays until then.
		cur.epoch, cur.seq, cur.synced, cur.held, cur.snap = epoch, 0, false, nil, nil
	}
	ask := false
	switch kind {
	case stateDelta:
		es, ok := decodeEntries(body)
		if !ok {
			break
		}
		n.stateCounts.Deltas++
		switch {
		case cur.synced && seq == cur.seq+1:
			applyEntries(cur.entries, es)
			cur.seq = seq
		case cur.synced && seq <= cur.seq: // a repeat
		default:
			if cur.synced {
				n.stateCounts.Gaps++
			}
			cur.synced = false
			if len(cur.held) < maxHeldDeltas {
				cur.held = append(cur.held, heldDelta{seq: seq, entries: es})
			}
			ask = true
		}
	case stateSnap:
		ask = n.heardChunk(cur, epoch, seq, body)
	case stateSeq:
		// In order with the deltas (one subject, one publisher): a copy
		// behind the owner's last delta lost one; no copy in step, a
		// snapshot (or all of it).
		if cur.synced && seq > cur.seq {
			n.stateCounts.Gaps++
			cur.synced = false
		}
		ask = !cur.synced
	}
	if ask && time.Since(cur.asked) >= askEvery {
		cur.asked = time.Now()
		n.stateCounts.Asked++
	} else {
		ask = false
	}
	n.mu.Unlock()
	if ask {
		_ = n.nc.Publish(stateAskPrefix+stream, nil)
	}
	if kind == stateHand || newer {
		n.orphan(stream, "")
	}
}

// heardChunk takes one chunk of a snapshot; true to ask for another
// snapshot (this one can't bring the copy in step). Called with n.mu held.
func (n *Node) heardChunk(cur *stateCopy, epoch, seq uint64, body []byte) bool {
	if cur.synced && seq <= cur.seq {
		return false // in step already: nothing to learn
	}
	if len(body) < 8 {
		return false
	}
	part, parts := binary.BigEndian.Uint32(body), binary.BigEndian.Uint32(body[4:])
	es, ok := decodeEntries(body[8:])
	if !ok {
		cur.snap = nil
		return true
	}
	s := cur.snap
	switch {
	case part == 0:
		s = &snapParts{epoch: epoch, seq: seq, parts: parts, entries: make(map[string][]byte)}
		cur.snap = s
	case s == nil || s.epoch != epoch || s.seq != seq || s.next != part:
		cur.snap = nil // a chunk lost: the next snapshot
		return true
	}
	applyEntries(s.entries, es)
	s.next++
	if s.next < s.parts {
		return false
	}
	cur.snap = nil
	cur.entries, cur.seq, cur.synced = s.entries, s.seq, true
	n.stateCounts.Snapshots++
	slices.SortFunc(cur.held, func(a, b heldDelta) int { return cmpUint(a.seq, b.seq) })
	held := cur.held
	cur.held = nil
	for i, d := range held {
		switch {
		case d.seq <= cur.seq:
		case d.seq == cur.seq+1:
			applyEntries(cur.entries, d.entries)
			cur.seq = d.seq
		default:
			cur.synced = false
			cur.held = held[i:]
			return true
		}
	}
	return false
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// bestState is stream's state as well as this server knows it: its copy,
// and the deltas it holds past a gap applied in order (a new owner
// rebuilds from it; a change lost in the gap is redone by its peer).
// Called with n.mu held.
func (st *stateCopy) bestState() map[string][]byte {
	m := make(map[string][]byte, len(st.entries))
	for k, v := range st.entries {
		m[k] = v
	}
	held := slices.Clone(st.held)
	slices.SortFunc(held, func(a, b heldDelta) int { return cmpUint(a.seq, b.seq) })
	for _, d := range held {
		if d.seq > st.seq {
			applyEntries(m, d.entries)
		}
	}
	return m
}

// StateOf is this server's copy of stream's state (nil without one), and
// whether it is in step with the owner's deltas.
func (n *Node) StateOf(stream string) (entries map[string][]byte, seq uint64, synced bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.states[stream]
	if st == nil {
		return nil, 0, false
	}
	return st.bestState(), st.seq, st.synced
}

// StateCounts reports what this server's state copies went through.
func (n *Node) StateCounts() StateCounts {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stateCounts
}
