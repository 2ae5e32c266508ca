package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"canopy/mesh"
	"canopy/mesh/framesig"
	"canopy/mesh/media"
	"canopy/mesh/media/demo"
	"canopy/mesh/protocol"
)

func broadcast(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("broadcast", flag.ContinueOnError)
	var c common
	c.register(fs, 4)
	videoPath := fs.String("video", "", "video file to loop: .ivf (VP8) or .h264 (Annex-B, 30 fps), or - for live IVF/H264 on standard input; default: the demo clip")
	audioPath := fs.String("audio", "", "audio file to loop: .ogg (Opus); default: the demo clip's when -video is not set")
	sign := fs.Bool("sign", true, "sign every frame with a new Ed25519 key per session, so viewers can tell a relay that alters frames (README \"Signed frames\")")
	var ing ingestFlags
	ing.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	in, err := openInput(&ing, *videoPath, *audioPath, os.Stdin)
	if err != nil {
		return err
	}
	defer in.close()

	if err := checkServer(c.server); err != nil {
		return err
	}
	// The input carries on across sessions: a source that rejoins goes on
	// where it was, and viewers continue across its new numbering. The
	// reclaim secret gets it its stream name back.
	reclaim := new(mesh.Reclaim)
	err = redial(ctx, stderr, c.stream, false, func(ctx context.Context, s *session) error {
		var key ed25519.PrivateKey
		if *sign {
			if _, key, err = framesig.GenerateKey(); err != nil {
				return err
			}
		}
		node, err := mesh.Dial(ctx, mesh.Config{
			Server: c.server, Stream: c.stream, Role: protocol.RoleSource, Capacity: c.capacity,
			Token: c.token, Tracks: in.tracks, LoopbackOnly: c.loopback, Logger: log,
			Reclaim: reclaim, OnEvent: s.onEvent, SignKey: key,
		})
		if err != nil {
			return err
		}
		s.joined()
		defer node.Close()
		fmt.Fprintf(stderr, "broadcasting %q as %s (%s); Ctrl-C to stop\n", c.stream, node.ID(), in.describe())
		err = in.play(ctx, node)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, io.EOF) && in.live {
			fmt.Fprintln(stderr, "input ended; leaving")
			return nil // the live input ended: viewers see the stream go offline
		}
		select {
		case <-node.Done():
			return nodeEnd(node) // signaling dropped: join again
		default:
			return fmt.Errorf("%w (%v)", errFinalMedia, err) // a reader failed
		}
	})
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil // interrupted: a normal end
	}
	return err
}

// openMedia opens the files the flags name, or the demo clip.
func openMedia(videoPath, audioPath string) ([]media.FrameReader, func(), error) {
	if videoPath == "" && audioPath == "" {
		v, a, err := demo.Open()
		if err != nil {
			return nil, nil, err
		}
		return []media.FrameReader{v, a}, func() {}, nil
	}
	var readers []media.FrameReader
	var closers []io.Closer
	closeAll := func() {
		for _, c := range closers {
			_ = c.Close()
		}
	}
	for _, path := range []string{videoPath, audioPath} {
		if path == "" {
			continue
		}
		r, c, err := media.OpenFile(path)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		readers = append(readers, r)
		closers = append(closers, c)
	}
	return readers, closeAll, nil
}
