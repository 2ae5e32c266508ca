package peer

import (
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"canopy/mesh/protocol"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// keyframeInterval is the least time between two keyframe requests a
// Forwarder passes upstream: one PLI per interval answers every child that
// asked meanwhile, instead of one per child or one per dropped packet.
const keyframeInterval = 300 * time.Millisecond

// Queue sizes per child. 512 video slots hold about 2 s of a 2 Mbps stream,
// enough to ride out a scheduling hiccup, small enough that a child that is
// really too slow is cut back to the next keyframe instead of lagging behind.
const (
	videoQueueSlots = 512
	audioQueueSlots = 128
)

// ForwarderOptions tune a Forwarder; the zero value means the defaults.
type ForwarderOptions struct {
	// GOPBytes bounds the video GOP cache (default 4 MiB); negative disables
	// it, and a new child then waits for the next keyframe.
	GOPBytes int
	// BurstRate paces the cached GOP to a new child, in bits per second
	// (default 50 Mbps); the first 64 KiB go at once.
	BurstRate int
	// KeepBurstTimestamps sends the cached GOP with its original timestamps.
	// By default the frames before the newest are moved to 1 ms apart just
	// before it, so a browser decodes them at once and plays from the live
	// edge instead of replaying the GOP at its original pace.
	KeepBurstTimestamps bool
}

// ForwarderStats counts what a Forwarder did since it was created.
type ForwarderStats struct {
	PacketsIn  uint64 // packets passed to WriteRTP
	PacketsOut uint64 // packets written to children, summed over children (bursts included)
	Resent     uint64 // packets retransmitted to children on their NACKs
	Refused    uint64 // NACKed packets not resent: over the child's retransmission budget
	Bursts     uint64 // children that started from the cached GOP
	Drops      uint64 // packets not delivered to a child: queue full, waiting for a keyframe, too large
	Children   int    // children bound now
}

// Forwarder fans one track's RTP out to every attached child. One goroutine
// calls WriteRTP; each child has its own bounded queue and writer goroutine,
// so a slow child loses packets instead of delaying the others.
type Forwarder struct {
	track      protocol.Track
	codec      webrtc.RTPCodecCapability
	kind       webrtc.RTPCodecType
	isKeyframe keyframeFunc // nil for audio and unparsed codecs
	slots      int
	logger     *slog.Logger
	opts       ForwarderOptions

	// gops is the video GOP cache. WriteRTP adds to it and attach takes it
	// for a new child, both under gopMu, which also orders a new child's
	// entry in the children snapshot with the GOP it is handed: the burst
	// ends exactly where the child's queue starts. gopReady tells Bind
	// whether a new child can start from the cache.
	gopMu    sync.Mutex
	gops     gopCache
	gopReady atomic.Bool
	bursts   atomic.Uint64

	// children is a copy-on-write snapshot: WriteRTP iterates it without a
	// lock, Bind/Unbind replace it under mu.
	children atomic.Pointer[[]*childWriter]
	mu       sync.Mutex
	closed   bool
	shards   []*shard // under mu; started by the first adopt (shard.go)

	keyframes  chan struct{}
	lastKeyReq atomic.Int64 // unix nanoseconds of the last request passed on

	packetsIn atomic.Uint64
	drops     atomic.Uint64 // drops counted before any child (too large)
	retired   struct {      // counters of children gone, under mu
		out, resent, refused, drops uint64
	}

	// Wake-up state, touched only by the WriteRTP goroutine (see wakeFor).
	sinceMarker int    // packets since the last one with the marker bit
	held        int    // packets pushed since the writers were last woken
	prevTS      uint32 // timestamp of the previous newest packet
	prevMarker  bool   // whether it ended its frame

	// Continuity state, touched only by the WriteRTP goroutine.
	started   bool
	inSSRC    uint32
	seqOffset uint16
	tsOffset  uint32
	tsStep    uint32
	haveOut   bool
	lastSeq   uint16
	lastTS    uint32
}

// NewForwarder returns a Forwarder for one track of a stream, with the
// default options.
func NewForwarder(track protocol.Track, logger *slog.Logger) *Forwarder {
	return NewForwarderWith(track, ForwarderOptions{}, logger)
}

// NewForwarderWith returns a Forwarder for one track of a stream.
func NewForwarderWith(track protocol.Track, opts ForwarderOptions, logger *slog.Logger) *Forwarder {
	if opts.GOPBytes == 0 {
		opts.GOPBytes = defaultGOPBytes
	}
	if opts.BurstRate == 0 {
		opts.BurstRate = defaultBurstRate
	}
	if logger == nil {
		logger = slog.Default()
	}
	f := &Forwarder{
		track: track,
		codec: webrtc.RTPCodecCapability{
			MimeType: track.MimeType, ClockRate: track.ClockRate, Channels: track.Channels, SDPFmtpLine: track.Fmtp,
		},
		kind:      webrtc.RTPCodecTypeAudio,
		slots:     audioQueueSlots,
		logger:    logger.With("track", track.ID),
		opts:      opts,
		keyframes: make(chan struct{}, 1),
	}
	f.sinceMarker = markerWindow // no marker seen yet: wake per packet
	// The step a new incoming SSRC starts after the last timestamp sent: one
	// frame at 30 fps for video, one 20 ms packet for audio.
	f.tsStep = max(track.ClockRate/50, 1)
	if track.Kind == "video" || strings.HasPrefix(strings.ToLower(track.MimeType), "video/") {
		f.kind = webrtc.RTPCodecTypeVideo
		f.slots = videoQueueSlots
		f.isKeyframe = keyframeDetector(track.MimeType)
		f.tsStep = max(track.ClockRate/30, 1)
		if f.isKeyframe != nil && opts.GOPBytes > 0 {
			// About one packet per 400 bytes at worst (small packets of a
			// low-rate stream); the arena is the real bound.
			f.gops = gopCache{bytes: opts.GOPBytes, packets: max(opts.GOPBytes/400, 256)}
		}
	}
	f.children.Store(&[]*childWriter{})
	return f
}

// Track returns the track this Forwarder carries.
func (f *Forwarder) Track() protocol.Track { return f.track }

// KeyframeRequests delivers the children's PLI/FIR (and the Forwarder's own
// requests after a child overflowed), merged and throttled to one per ~300 ms.
// The channel is buffered(1) and never blocks a sender. It is never closed,
// so a consumer's select cannot spin on it after Close: stop on your own
// done channel.
func (f *Forwarder) KeyframeRequests() <-chan struct{} { return f.keyframes }

// requestKeyframe passes a keyframe request on unless one went out less than
// keyframeInterval ago.
func (f *Forwarder) requestKeyframe() {
	now := time.Now().UnixNano()
	last := f.lastKeyReq.Load()
	if now-last < int64(keyframeInterval) || !f.lastKeyReq.CompareAndSwap(last, now) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	select {
	case f.keyframes <- struct{}{}:
	default: // one is pending already; the consumer will see it
	}
}

// WriteRTP forwards one packet to every child. It never blocks on a child and
// does not retain p: the payload is copied into the GOP cache and each
// child's queue.
func (f *Forwarder) WriteRTP(p *rtp.Packet) error {
	f.packetsIn.Add(1)
	seq, ts, newest := f.rewrite(p)
	wake := f.wakeFor(newest, ts, p.Marker)
	if len(p.Payload) > slotPayloadSize {
		f.drops.Add(uint64(len(*f.children.Load())))
		return ErrPacketTooLarge
	}
	pad := p.Header.PaddingSize
	if pad == 0 {
		pad = p.PaddingSize //nolint:staticcheck // older producers set only the packet's field
	}
	ext := p.GetExtension(AbsCaptureTimeID)
	if len(ext) > maxExtLen {
		ext = nil
	}
	keyState := 0 // 0 not computed, 1 keyframe, 2 not
	var kids []*childWriter
	if f.gops.bytes > 0 {
		keyState = 2
		f.gopMu.Lock()
		if f.isKeyframe(p.Payload) {
			keyState = 1
			f.gops.keyframe(ts)
		}
		if g := f.gops.cur; g != nil {
			g.add(seq, ts, p.Marker, pad, p.Payload, ext)
			f.gopReady.Store(!g.full)
		}
		kids = *f.children.Load()
		f.gopMu.Unlock()
	} else {
		kids = *f.children.Load()
	}
	for _, c := range kids {
		if c.waitKeyframe {
			// Keyframe detection parses the payload, so do it only when needed.
			if keyState == 0 {
				keyState = 2
				if f.isKeyframe(p.Payload) {
					keyState = 1
				}
			}
			if keyState != 1 {
				c.dropped.Add(1)
				continue
			}
		}
		if !c.push(seq, ts, p.Marker, pad, p.Payload, ext, wake) {
			c.dropped.Add(1)
			if f.isKeyframe != nil {
				// The child's decoder cannot use anything until the next
				// keyframe, so stop filling its queue until then and ask for one.
				c.waitKeyframe = true
				f.requestKeyframe()
			}
			continue
		}
		c.waitKeyframe = false
	}
	return nil
}

// Video packets are handed to the children's writers a frame at a time, so
// that each writer sends a frame in one pass, in one system call (batch.go).
// Holding a frame's first packets until its last arrives delays nothing a
// viewer sees: a frame decodes only once its last packet is in. The writers
// are woken by a frame's last packet (the marker bit), by the first packet
// of a frame when the previous one ended without a marker (lost), by any
// packet older than the newest (a retransmission: repair must not wait), and
// after maxHeld packets of a large frame. A track whose packets carry no
// marker bit (none in the last markerWindow packets) wakes them per packet,
// as does audio, where every packet is a frame.
const (
	maxHeld      = 16
	markerWindow = 512
)

// wakeFor reports whether the packet just rewritten should wake the writers.
func (f *Forwarder) wakeFor(newest bool, ts uint32, marker bool) bool {
	if f.kind != webrtc.RTPCodecTypeVideo {
		return true
	}
	if !newest {
		return true
	}
	wake := marker || f.sinceMarker >= markerWindow || (ts != f.prevTS && !f.prevMarker)
	f.prevTS, f.prevMarker = ts, marker
	if marker {
		f.sinceMarker = 0
	} else if f.sinceMarker < markerWindow {
		f.sinceMarker++
	}
	f.held++
	if wake || f.held >= maxHeld {
		f.held = 0
		return true
	}
	return false
}

// rewrite maps the incoming sequence number and timestamp onto the outgoing
// ones, and reports whether the packet is the newest so far. Offsets change
// only when the incoming SSRC does (a new parent, a restarted source), so
// children see one continuous stream.
func (f *Forwarder) rewrite(p *rtp.Packet) (uint16, uint32, bool) {
	switch {
	case !f.started:
		f.started, f.inSSRC = true, p.SSRC
	case p.SSRC != f.inSSRC:
		f.inSSRC = p.SSRC
		f.seqOffset = f.lastSeq + 1 - p.SequenceNumber
		f.tsOffset = f.lastTS + f.tsStep - p.Timestamp
	}
	seq, ts := p.SequenceNumber+f.seqOffset, p.Timestamp+f.tsOffset
	newest := !f.haveOut || int16(seq-f.lastSeq) > 0 // modulo 2^16
	if newest {
		f.haveOut, f.lastSeq, f.lastTS = true, seq, ts
	}
	return seq, ts, newest
}

// attach adds a child whose connection is up. A video child starts from the
// cached GOP, handed over under gopMu so that the burst ends with the last
// packet cached and the child's queue starts with the next one; without a
// usable GOP it waits for a keyframe, and one is asked for. attach fails once
// the Forwarder is closed or the child stopped.
func (f *Forwarder) attach(c *childWriter) error {
	f.mu.Lock()
	if f.closed || c.stopped() {
		f.mu.Unlock()
		return ErrClosed
	}
	wait := f.isKeyframe != nil
	old := *f.children.Load()
	next := make([]*childWriter, 0, len(old)+1)
	next = append(append(next, old...), c)
	f.gopMu.Lock()
	if f.gops.bytes > 0 {
		if b := f.gops.take(); b != nil {
			wait = false
			c.burst.Store(b)
			f.bursts.Add(1)
		}
	}
	// Written before the child is published; the producer owns it after.
	c.waitKeyframe = wait
	f.children.Store(&next)
	f.gopMu.Unlock()
	f.mu.Unlock()
	if wait {
		f.requestKeyframe()
	}
	return nil
}

// detach removes a child (if present) and stops its writer. The writer is
// stopped first, so a child that was about to attach no longer can.
func (f *Forwarder) detach(c *childWriter) {
	c.stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	old := *f.children.Load()
	next := without(old, c)
	if len(next) != len(old) {
		f.children.Store(&next)
		f.retired.out += c.sent.Load()
		f.retired.resent += c.resent.Load()
		f.retired.refused += c.refused.Load()
		f.retired.drops += c.dropped.Load()
	}
}

// without returns a new copy-on-write snapshot: list without c.
func without(list []*childWriter, c *childWriter) []*childWriter {
	next := make([]*childWriter, 0, len(list))
	for _, k := range list {
		if k != c {
			next = append(next, k)
		}
	}
	return next
}

// isClosed reports whether Close was called.
func (f *Forwarder) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Stats returns the Forwarder's counters.
func (f *Forwarder) Stats() ForwarderStats {
	f.mu.Lock()
	s := ForwarderStats{
		PacketsIn:  f.packetsIn.Load(),
		PacketsOut: f.retired.out,
		Resent:     f.retired.resent,
		Refused:    f.retired.refused,
		Drops:      f.retired.drops + f.drops.Load(),
		Bursts:     f.bursts.Load(),
	}
	kids := *f.children.Load()
	f.mu.Unlock()
	s.Children = len(kids)
	for _, c := range kids {
		s.PacketsOut += c.sent.Load()
		s.Resent += c.resent.Load()
		s.Refused += c.refused.Load()
		s.Drops += c.dropped.Load()
	}
	return s
}

// Close detaches every child and stops their writers. Later binds fail,
// WriteRTP delivers to no one and no keyframe request is passed on.
// Idempotent.
func (f *Forwarder) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	kids := *f.children.Load()
	f.children.Store(&[]*childWriter{})
	for _, c := range kids {
		f.retired.out += c.sent.Load()
		f.retired.resent += c.resent.Load()
		f.retired.refused += c.refused.Load()
		f.retired.drops += c.dropped.Load()
	}
	f.mu.Unlock()
	for _, c := range kids {
		c.stop()
	}
	for _, c := range kids {
		<-c.done
	}
	f.stopShards()
}
