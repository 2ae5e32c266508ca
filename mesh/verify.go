package mesh

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"

	"canopy/mesh/framesig"
	"canopy/mesh/media"
	"canopy/mesh/protocol"
)

// The viewer's side of signed frames (README "Signed frames"): with
// Config.OnFrame set, the node assembles every track's frames, checks each
// against the stream's key (from the server, never from a relay) and hands
// on only what verifies, without its signature. A frame that fails is not
// played: the node asks for a keyframe, tells the server its parent
// tampered (with evidence) and plays video again from the next verified
// keyframe.

// FrameStats counts the frames a viewing node checked.
type FrameStats struct {
	Verified   uint64 `json:"framesVerified"`   // signature and counter good
	Rejected   uint64 `json:"framesRejected"`   // forged, unsigned, replayed: not played
	Stale      uint64 `json:"framesStale"`      // duplicates (counter not above the last), dropped silently
	Unverified uint64 `json:"framesUnverified"` // played without a check: an unsigned stream or a re-encoded path
}

// verifyState is what the server says about this node's frames.
type verifyState struct {
	key    ed25519.PublicKey // nil: the stream is not signed
	verify bool              // false: a hop above re-encodes (parent.verify=false)
	since  time.Time         // when key last changed
}

// keyGrace is how long after the key changes (a source came back) a frame
// that fails is nobody's fault: the old source's last frames may still be
// on their way through the tree. They are not played, and not reported.
const keyGrace = 2 * time.Second

// frameCheck is one track's assembler and verifier; its methods run under
// the track's ingress lock (ingest), so one at a time.
type frameCheck struct {
	n       *Node
	track   protocol.Track
	format  framesig.Format
	asm     *media.Assembler
	key     ed25519.PublicKey // the key ver checks against
	ver     *framesig.Verifier
	origins [originSlots]origin // who sent the packets of recent frames, by timestamp
	waitKey bool                // after a rejected video frame: play from the next verified keyframe
}

// originSlots is how many recent frames' senders a check remembers: more
// than the frames an assembler holds at once.
const originSlots = 64

// origin is the parent that sent a frame's packets; mixed when both
// parents of a move did (then nobody can be blamed for a bad one).
type origin struct {
	ts     uint32
	parent string
	mixed  bool
}

// note records that parent sent a packet of the frame at ts.
func (fc *frameCheck) note(parent string, ts uint32) {
	o := &fc.origins[ts%originSlots]
	switch {
	case o.ts != ts || o.parent == "":
		*o = origin{ts: ts, parent: parent}
	case o.parent != parent:
		o.mixed = true
	}
}

// blame is the parent that alone sent the frame at ts, or "".
func (fc *frameCheck) blame(ts uint32) string {
	o := fc.origins[ts%originSlots]
	if o.ts != ts || o.mixed {
		return ""
	}
	return o.parent
}

type frameCounters struct {
	verified, rejected, stale, unverified atomic.Uint64
	rejectedAt                            atomic.Int64 // unix ns of the last rejection
}

// tamperedShow is how long after a rejected frame the node's stats say
// "tampered", as the player's panel does (framesig-client.js TAMPERED_SHOW_MS).
const tamperedShow = 10 * time.Second

// verificationStats adds the frame checks to a stats report: what the
// dashboard shows per viewer. Nothing for a node that does not assemble
// frames (Config.OnFrame unset: a relay).
func (n *Node) verificationStats(s *protocol.Stats) {
	if n.cfg.OnFrame == nil {
		return
	}
	st := n.FrameStats()
	s.FramesVerified, s.FramesRejected = st.Verified, st.Rejected
	switch at := n.frames.rejectedAt.Load(); {
	case at != 0 && time.Since(time.Unix(0, at)) < tamperedShow:
		s.Verification = protocol.VerificationTampered
	case n.Verifies():
		s.Verification = protocol.VerificationVerified
	default:
		s.Verification = protocol.VerificationUnverified
	}
}

// FrameStats returns the counts of checked frames so far.
func (n *Node) FrameStats() FrameStats {
	c := &n.frames
	return FrameStats{Verified: c.verified.Load(), Rejected: c.rejected.Load(), Stale: c.stale.Load(), Unverified: c.unverified.Load()}
}

// Verifies reports whether the node checks its frames now: the stream is
// signed, its path carries the signatures, and Config.OnFrame is set.
func (n *Node) Verifies() bool {
	v := n.verify.Load()
	return n.cfg.OnFrame != nil && v != nil && v.key != nil && v.verify
}

// setSourceKey records the stream's key from the server ("" : unsigned).
func (n *Node) setSourceKey(s string) {
	var key ed25519.PublicKey
	if s != "" {
		k, err := framesig.DecodeKey(s)
		if err != nil {
			n.log.Warn("bad source key from the server", "err", err)
			return
		}
		key = k
	}
	st := verifyState{key: key, verify: true}
	if old := n.verify.Load(); old != nil {
		st.verify, st.since = old.verify, old.since
		if old.key != nil && !old.key.Equal(key) {
			st.since = time.Now() // a new source: the old one's frames may follow
		}
	}
	n.verify.Store(&st)
}

// onSigning takes what a server message says about the stream's key and
// this node's path: welcome (the source is back: its key, or none),
// sourceKey (a new key; maybe the path), parent (verify=false: a hop above
// re-encodes; absent: it does not).
func (n *Node) onSigning(m *protocol.Message) {
	switch m.Type {
	case protocol.TypeWelcome:
		n.setSourceKey(m.SourceKey)
	case protocol.TypeSourceKey:
		n.setSourceKey(m.SourceKey)
		if m.Verify != nil {
			n.setVerify(*m.Verify)
		}
	case protocol.TypeParent:
		if m.SourceKey != "" {
			n.setSourceKey(m.SourceKey)
		}
		n.setVerify(m.Verify == nil || *m.Verify)
	}
}

// setVerify records whether this node's path carries signatures.
func (n *Node) setVerify(v bool) {
	st := verifyState{verify: v}
	if old := n.verify.Load(); old != nil {
		st.key, st.since = old.key, old.since
	}
	n.verify.Store(&st)
}

// checkPacket feeds one admitted packet from parent to the track's check.
func (n *Node) checkPacket(parent string, t protocol.Track, p *rtp.Packet) {
	v, ok := n.checks.Load(t.ID)
	if !ok {
		fc := &frameCheck{n: n, track: t}
		c, found := media.LookupCodec(t.MimeType)
		if !found {
			return
		}
		c.ClockRate = t.ClockRate
		asm, err := media.NewAssembler(c, fc.onFrame)
		if err != nil {
			n.log.Warn("no frame check for track", "track", t.ID, "err", err)
			return
		}
		fc.asm = asm
		if f, _, err := framesig.FormatOf(t.MimeType); err == nil {
			fc.format = f
		}
		v, _ = n.checks.LoadOrStore(t.ID, fc)
	}
	fc := v.(*frameCheck)
	fc.note(parent, p.Timestamp)
	fc.asm.Push(p)
}

// onFrame checks one assembled frame and hands it on.
func (fc *frameCheck) onFrame(f media.Frame) {
	n, c := fc.n, &fc.n.frames
	st := n.verify.Load()
	if st == nil || st.key == nil || !st.verify || fc.format == 0 {
		c.unverified.Add(1)
		if st != nil && st.key != nil {
			f.Data = framesig.Strip(fc.format, f.Data) // a trailer a re-encoding hop could not carry
		}
		n.cfg.OnFrame(fc.track, f)
		return
	}
	if !st.key.Equal(fc.key) || fc.ver == nil {
		ver, err := framesig.NewVerifier(st.key, fc.track.MimeType)
		if err != nil {
			return
		}
		fc.key, fc.ver = st.key, ver // a new source: its counters start afresh
	}
	data, ev, err := fc.ver.Verify(f.Data)
	switch {
	case errors.Is(err, framesig.ErrStale):
		c.stale.Add(1)
		return
	case err != nil:
		c.rejected.Add(1)
		c.rejectedAt.Store(time.Now().UnixNano())
		if fc.track.Kind == "video" {
			fc.waitKey = true
		}
		if time.Since(st.since) >= keyGrace {
			n.tampered(fc.blame(f.Timestamp), ev, err)
		}
		return
	}
	c.verified.Add(1)
	if fc.waitKey {
		if !f.Keyframe {
			return // it would decode against a frame that was not played
		}
		fc.waitKey = false
	}
	f.Data = data
	n.cfg.OnFrame(fc.track, f)
}

// tampered asks parent for a keyframe and reports it to the server, once
// per parent: the server moves this node at once, and frames still on
// their way from that parent are rejected without another report. A frame
// of packets from two parents (while this node moves) blames nobody: the
// bad one may be either's.
func (n *Node) tampered(parent string, ev framesig.Evidence, why error) {
	if uc := n.current.Load(); uc != nil && uc.up != nil {
		uc.up.RequestKeyframe()
	}
	if parent == "" {
		return
	}
	if _, dup := n.reported.LoadOrStore(parent, true); dup {
		return
	}
	n.log.Warn("frame from parent failed verification; reporting it", "parent", parent, "track", string(ev.Kind), "counter", ev.Counter, "err", why)
	_ = n.send(&protocol.Message{Type: protocol.TypeTampered, Peer: parent, Evidence: evidenceOf(ev)})
}

// evidenceOf writes framesig's evidence as the protocol carries it.
func evidenceOf(ev framesig.Evidence) *protocol.Evidence {
	e := &protocol.Evidence{
		Track:   string(rune(ev.Kind)),
		Counter: min(ev.Counter, protocol.MaxCounter),
		Hash:    base64.RawURLEncoding.EncodeToString(ev.Hash[:]),
		Last:    min(ev.Last, protocol.MaxCounter),
	}
	if len(ev.Sig) == ed25519.SignatureSize {
		e.Sig = base64.RawURLEncoding.EncodeToString(ev.Sig)
	}
	return e
}

// signState is the node's part in signed frames, both sides.
type signState struct {
	verify    atomic.Pointer[verifyState]
	checks    sync.Map // track id → *frameCheck
	reported  sync.Map // parent id → reported tampering already
	frames    frameCounters
	resigners sync.Map // track id → *resigner (sign.go)
	signers   sync.Map // track id → *framesig.Signer (sign.go)
}
