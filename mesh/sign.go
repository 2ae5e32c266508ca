package mesh

import (
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pion/rtp"

	"canopy/mesh/framesig"
	"canopy/mesh/media"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// The source's side of signed frames (README "Signed frames"): Play signs
// each frame a reader gives before packetizing it; WriteSourceRTP gathers a
// live RTP stream into frames, signs each and packetizes it again.

// signKeyOf is what a source's hello carries: its public key, when it signs.
func signKeyOf(cfg Config) string {
	if cfg.Role != protocol.RoleSource || len(cfg.SignKey) != ed25519.PrivateKeySize {
		return ""
	}
	return framesig.EncodeKey(cfg.SignKey.Public().(ed25519.PublicKey))
}

// Signs reports whether the node signs what Play and WriteSourceRTP send.
func (n *Node) Signs() bool { return signKeyOf(n.cfg) != "" }

// signingReader signs each frame of a reader.
type signingReader struct {
	media.FrameReader
	s *framesig.Signer
}

func (r *signingReader) ReadFrame() (media.Frame, error) {
	f, err := r.FrameReader.ReadFrame()
	if err == nil {
		f.Data = r.s.Sign(f.Data)
	}
	return f, err
}

// signReaders wraps readers in signers when the node signs.
func (n *Node) signReaders(readers []media.FrameReader) ([]media.FrameReader, error) {
	if !n.Signs() {
		return readers, nil
	}
	out := make([]media.FrameReader, len(readers))
	tracks := n.Tracks()
	for i, r := range readers {
		s, err := n.signerFor(tracks[i].ID, r.Codec().MimeType)
		if err != nil {
			return nil, err
		}
		out[i] = &signingReader{FrameReader: r, s: s}
	}
	return out, nil
}

// signerFor is the one signer of a track for the node's life: its counter
// must only rise under the node's key, across Play calls too (a viewer
// takes a lower one for a replay). A node that dials again has a new key.
func (n *Node) signerFor(trackID, mime string) (*framesig.Signer, error) {
	if v, ok := n.signers.Load(trackID); ok {
		return v.(*framesig.Signer), nil
	}
	s, err := framesig.NewSigner(n.cfg.SignKey, mime)
	if err != nil {
		return nil, err
	}
	v, _ := n.signers.LoadOrStore(trackID, s)
	return v.(*framesig.Signer), nil
}

// resigner is one live track's path through WriteSourceRTP on a signing node.
type resigner struct {
	mu  sync.Mutex
	col *media.FrameCollector
	sig *framesig.Signer
	pk  *media.Repacketizer
}

func (n *Node) resignerFor(trackID string) (*resigner, error) {
	if v, ok := n.resigners.Load(trackID); ok {
		return v.(*resigner), nil
	}
	var t *protocol.Track
	for _, tr := range n.Tracks() {
		if tr.ID == trackID {
			t = &tr
			break
		}
	}
	if t == nil {
		return nil, ErrUnknownTrack
	}
	c, ok := media.LookupCodec(t.MimeType)
	if !ok {
		return nil, media.ErrUnsupportedCodec
	}
	c.ClockRate = t.ClockRate
	col, err := media.NewFrameCollector(c)
	if err != nil {
		return nil, err
	}
	sig, err := n.signerFor(trackID, c.MimeType)
	if err != nil {
		return nil, err
	}
	pk, err := media.NewRepacketizer(c, rand.Uint32())
	if err != nil {
		return nil, err
	}
	v, _ := n.resigners.LoadOrStore(trackID, &resigner{col: col, sig: sig, pk: pk})
	return v.(*resigner), nil
}

// WriteSourceRTP sends one packet of a live source's track (an RTP or WHIP
// ingest). A node that signs gathers the packets into frames (each as soon
// as its last packet is in, in order, waiting a little for retransmissions),
// signs each frame and packetizes it again: new sequence numbers, the same
// timestamps and capture time (abs-capture-time of the frame's first
// packet). One that does not passes the packet on as is. p is not kept.
func (n *Node) WriteSourceRTP(trackID string, p *rtp.Packet) error {
	if !n.Signs() {
		return n.WriteRTP(trackID, p)
	}
	r, err := n.resignerFor(trackID)
	if errors.Is(err, media.ErrUnsupportedCodec) || errors.Is(err, framesig.ErrCodec) {
		return n.WriteRTP(trackID, p) // a codec with no signature form (VP9, AV1 from WHIP) goes unsigned
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, fr := range r.col.Push(p, time.Now()) {
		captured, stamped := peer.CaptureTime(fr.First)
		for _, q := range r.pk.Packetize(r.sig.Sign(fr.Data), fr.Timestamp) {
			if stamped {
				if err := peer.StampCaptureTime(q, captured); err != nil {
					return err
				}
			}
			if err := n.WriteRTP(trackID, q); err != nil && !errors.Is(err, peer.ErrPacketTooLarge) {
				return err
			}
		}
	}
	return nil
}
