package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pion/ice/v4"

	"canopy/mesh"
	"canopy/mesh/media"
	"canopy/mesh/media/demo"
	"canopy/mesh/protocol"
)

// demoConfig is what the built-in demo source needs.
type demoConfig struct {
	server       string
	stream       string
	capacity     int
	loopbackOnly bool
	token        string // publishing credential when auth is on
	udpMux       ice.UDPMux
	publicIPs    []string
	log          *slog.Logger
	reclaim      *mesh.Reclaim // the demo's claim to its name across restarts
}

// runDemo publishes the embedded clip as a stream, through the server's own
// signaling like any other source, and starts over if it is cut off.
func runDemo(ctx context.Context, cfg demoConfig) {
	if cfg.reclaim == nil {
		cfg.reclaim = new(mesh.Reclaim)
	}
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := publishDemo(ctx, cfg)
		if ctx.Err() != nil {
			return
		}
		cfg.log.Warn("demo source stopped; restarting", "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func publishDemo(ctx context.Context, cfg demoConfig) error {
	video, audio, err := demo.Open()
	if err != nil {
		return err
	}
	node, err := mesh.Dial(ctx, mesh.Config{
		Server:       cfg.server,
		Stream:       cfg.stream,
		Role:         protocol.RoleSource,
		Capacity:     cfg.capacity,
		Tracks:       mesh.TracksFor(video, audio),
		LoopbackOnly: cfg.loopbackOnly,
		UDPMux:       cfg.udpMux,
		PublicIPs:    cfg.publicIPs,
		Token:        cfg.token,
		Reclaim:      cfg.reclaim,
		Logger:       cfg.log,
	})
	if err != nil {
		return err
	}
	defer node.Close()
	cfg.log.Info("demo stream live", "stream", cfg.stream)
	err = node.Play(ctx, []media.FrameReader{video, audio}...)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
