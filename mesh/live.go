package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pion/rtp"

	"canopy/mesh/media"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// TracksForCodecs names one track per codec: "video", "audio", then
// "video2"… (TracksFor does the same for readers).
func TracksForCodecs(codecs ...media.Codec) []protocol.Track {
	seen := map[string]int{}
	out := make([]protocol.Track, 0, len(codecs))
	for _, c := range codecs {
		t := TrackFor("", c)
		seen[t.Kind]++
		t.ID = t.Kind
		if seen[t.Kind] > 1 {
			t.ID = fmt.Sprintf("%s%d", t.Kind, seen[t.Kind])
		}
		out = append(out, t)
	}
	return out
}

// PlayRTP sends what each live RTP source receives into the track of the
// same position in Tracks, as it arrives: no pacing, no re-encoding, each
// stream made continuous by a media.RTPIngest and each frame stamped with
// the time its first packet arrived (abs-capture-time). It runs until ctx
// ends, the node stops or a source fails, and leaves the sources open (a
// deadline ends their reads), so they can feed the next node.
func (n *Node) PlayRTP(ctx context.Context, sources ...media.PacketSource) error {
	tracks := n.Tracks()
	if len(sources) > len(tracks) {
		return fmt.Errorf("mesh: %d RTP sources for %d tracks", len(sources), len(tracks))
	}
	for _, s := range sources {
		if err := s.SetReadDeadline(time.Time{}); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-n.done:
			cancel(n.closedErr())
		case <-ctx.Done():
		}
		for _, s := range sources {
			_ = s.SetReadDeadline(time.Now()) // unblocks ReadRTP
		}
	}()
	var wg sync.WaitGroup
	for i, src := range sources {
		id := tracks[i].ID
		wg.Go(func() {
			if err := n.ingestRTP(ctx, id, src); ctx.Err() == nil {
				cancel(err) // the first source to fail stops the others
			}
		})
	}
	wg.Wait()
	cancel(nil)
	<-stopped
	return context.Cause(ctx)
}

// ingestRTP is one source's read loop.
func (n *Node) ingestRTP(ctx context.Context, trackID string, src media.PacketSource) error {
	in := media.NewRTPIngest(src.Codec())
	var (
		p        rtp.Packet
		frameTS  uint32
		frameAt  time.Time
		tooLarge int
	)
	for {
		if err := src.ReadRTP(&p); err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return context.Canceled // the deadline PlayRTP set, or closed under it
			}
			return err
		}
		now := time.Now()
		for _, q := range in.Push(&p, now) {
			if q.Timestamp != frameTS || frameAt.IsZero() {
				frameTS, frameAt = q.Timestamp, now
			}
			// The sender's extension ids were never negotiated with the
			// tree: only the ingest's own capture time goes on.
			q.Extension, q.ExtensionProfile, q.Extensions = false, 0, q.Extensions[:0]
			if err := peer.StampCaptureTime(q, frameAt); err != nil {
				return err
			}
			switch err := n.WriteSourceRTP(trackID, q); {
			case errors.Is(err, peer.ErrPacketTooLarge):
				// A late packet over the MTU could not be split; one bad
				// packet must not end the broadcast.
				if tooLarge++; tooLarge == 1 || tooLarge%1000 == 0 {
					n.log.Warn("RTP ingest: packet too large, dropped", "track", trackID, "bytes", len(q.Payload), "count", tooLarge)
				}
			case err != nil:
				return err
			}
		}
	}
}
