package mesh

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pion/rtp"

	"canopy/mesh/media"
	"canopy/mesh/peer"
	"canopy/mesh/protocol"
)

// TrackFor describes a track of codec c for a source's Config.Tracks.
func TrackFor(id string, c media.Codec) protocol.Track {
	kind := "video"
	if c.Channels > 0 || c.ClockRate == 48000 {
		kind = "audio"
	}
	return protocol.Track{ID: id, Kind: kind, MimeType: c.MimeType, ClockRate: c.ClockRate, Channels: c.Channels, Fmtp: c.Fmtp}
}

// TracksFor names one track per reader: "video", "audio", then "video2"…
func TracksFor(readers ...media.FrameReader) []protocol.Track {
	codecs := make([]media.Codec, len(readers))
	for i, r := range readers {
		codecs[i] = r.Codec()
	}
	return TracksForCodecs(codecs...)
}

// Play paces each reader's frames in real time into the track of the same
// position in Tracks, until ctx ends or a reader fails. The readers loop, so
// Play normally returns ctx.Err().
func (n *Node) Play(ctx context.Context, readers ...media.FrameReader) error {
	tracks := n.Tracks()
	if len(readers) > len(tracks) {
		return fmt.Errorf("mesh: %d readers for %d tracks", len(readers), len(tracks))
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-n.done:
			cancel(n.closedErr())
		case <-ctx.Done():
		}
	}()
	readers, err := n.signReaders(readers)
	if err != nil {
		return err
	}
	packetizers := make([]*media.Packetizer, len(readers))
	for i, r := range readers {
		pk, err := media.NewPacketizer(r.Codec())
		if err != nil {
			return err
		}
		packetizers[i] = pk
	}
	var wg sync.WaitGroup
	for i, r := range readers {
		id, pk := tracks[i].ID, packetizers[i]
		wg.Go(func() {
			err := media.Play(ctx, r, pk, func(pkts []*rtp.Packet, _ media.Frame) error {
				return n.WriteFrame(id, pkts, time.Now())
			})
			cancel(err) // the first reader to stop stops the others
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// WriteFrame sends the packets of one frame of a source's track, stamped
// with the frame's capture time (the abs-capture-time header extension), so
// that every viewer can measure its delay from the source.
func (n *Node) WriteFrame(trackID string, pkts []*rtp.Packet, captured time.Time) error {
	for _, p := range pkts {
		if err := peer.StampCaptureTime(p, captured); err != nil {
			return err
		}
		if err := n.WriteRTP(trackID, p); err != nil {
			return err
		}
	}
	return nil
}
