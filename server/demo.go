package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pion/ice/v4"

	"canopy/mesh"
	"canopy/mesh/framesig"
	"canopy/mesh/media"
	"canopy/mesh/media/demo"
	"canopy/mesh/protocol"
)

// demoConfig is what the built-in demo source needs.
type demoConfig struct {
	// connect opens the source's signaling: an in-process connection to the
	// server's own coordinator (Server.LocalTransport).
	connect      func() mesh.Transport
	stream       string
	capacity     int
	loopbackOnly bool
	token        string // publishing credential when auth is on
	udpMux       ice.UDPMux
	publicIPs    []string
	log          *slog.Logger
	reclaim      *mesh.Reclaim // the demo's claim to its name across restarts
	// candidates filters the viewers' ICE candidates (candidates.go); nil
	// accepts all.
	candidates *candidatePolicy
	// localPeer says which neighbours the server hosts too (a WHEP relay):
	// mesh.Config.LocalPeer.
	localPeer func(id string) bool
}

// demoStable is how long the demo must have been up for its restart
// back-off to start over: a source cut off after an hour returns at once,
// one cut off at every start backs off to 10 s.
const demoStable = 10 * time.Second

// runDemo publishes the embedded clip as a stream, through the server's own
// signaling like any other source (in-process, so it counts against no
// client address's limits), and starts over if it is cut off.
func runDemo(ctx context.Context, cfg demoConfig) {
	if cfg.reclaim == nil {
		cfg.reclaim = new(mesh.Reclaim)
	}
	var backoff mesh.Backoff
	for ctx.Err() == nil {
		started := time.Now()
		up, err := publishDemo(ctx, cfg)
		if ctx.Err() != nil {
			return
		}
		if up && time.Since(started) >= demoStable {
			backoff.Reset()
		}
		wait := backoff.Next()
		cfg.log.Warn("demo source stopped; restarting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
}

// publishDemo runs the demo source until it stops; up says whether it had
// joined its stream.
func publishDemo(ctx context.Context, cfg demoConfig) (up bool, err error) {
	video, audio, err := demo.Open()
	if err != nil {
		return false, err
	}
	_, key, err := framesig.GenerateKey() // a new key each run: viewers learn it from the welcome
	if err != nil {
		return false, err
	}
	mc := mesh.Config{
		SignKey:      key,
		Transport:    cfg.connect(),
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
		LocalPeer:    cfg.localPeer,
	}
	if cfg.candidates != nil {
		mc.RemoteCandidateFilter = cfg.candidates.allow
	}
	node, err := mesh.Dial(ctx, mc)
	if err != nil {
		return false, err
	}
	defer node.Close()
	cfg.log.Info("demo stream live", "stream", cfg.stream)
	err = node.Play(ctx, []media.FrameReader{video, audio}...)
	if errors.Is(err, context.Canceled) {
		return true, nil
	}
	return true, err
}
