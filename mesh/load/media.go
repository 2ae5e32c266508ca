package load

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pion/rtp"

	"canopy/mesh"
	"canopy/mesh/media"
	"canopy/mesh/protocol"
)

// watcher is one real pion viewer (a mesh.Node) that counts the complete,
// decodable video frames it receives.
type watcher struct {
	node    *mesh.Node
	started time.Time

	mu         sync.Mutex
	asm        *media.Assembler
	keyed      bool
	frames     int
	firstFrame time.Duration
	parents    []string
	offline    int
	asmErr     error
	heldFrom   int // frames when the hold began
}

// MediaFigures is what one real viewer saw.
type MediaFigures struct {
	Peer         string   `json:"peer"`
	Frames       int      `json:"frames"`
	FirstFrameMs float64  `json:"firstFrameMs"`
	Parents      []string `json:"parents"`
	Depth        int      `json:"depth"`
	// FramesHeld is how many of Frames came while the run held (churn).
	FramesHeld int `json:"framesHeld"`
}

func startWatcher(ctx context.Context, cfg *Config, server string) (*watcher, error) {
	w := &watcher{started: time.Now()}
	// With capacity a real viewer joins as a relay: a Go viewer is
	// relay-class only once a child played from it, and until then a
	// joining simulated relay may take its place and adopt it (a run of
	// 45 000 moved one under simulated parents that never deliver).
	role := protocol.RoleViewer
	if cfg.MediaCapacity > 0 {
		role = protocol.RoleRelay
	}
	node, err := mesh.Dial(ctx, mesh.Config{
		Server: server, Stream: cfg.Stream, Role: role, Capacity: cfg.MediaCapacity,
		Token: cfg.Token, LoopbackOnly: cfg.LoopbackOnly, Logger: cfg.Logger, OnPacket: w.onPacket,
		OnEvent: func(e mesh.Event) {
			w.mu.Lock()
			defer w.mu.Unlock()
			switch e.Kind {
			case mesh.EventParent:
				w.parents = append(w.parents, e.Peer)
			case mesh.EventOffline:
				w.offline++
				w.asm, w.keyed = nil, false
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("media viewer: %w", err)
	}
	w.node = node
	return w, nil
}

func (w *watcher) onPacket(t protocol.Track, p *rtp.Packet) {
	if t.Kind != "video" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.asm == nil {
		asm, err := media.NewAssembler(media.Codec{MimeType: t.MimeType, ClockRate: t.ClockRate}, w.onFrame)
		if err != nil {
			w.asmErr = err
			return
		}
		w.asm = asm
	}
	w.asm.Push(p)
}

// onFrame runs under w.mu. Frames count from the first keyframe: what a
// decoder would show.
func (w *watcher) onFrame(f media.Frame) {
	if !w.keyed && !f.Keyframe {
		return
	}
	if !w.keyed {
		w.keyed = true
		if w.firstFrame == 0 {
			w.firstFrame = time.Since(w.started)
		}
	}
	w.frames++
}

func (w *watcher) frameCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.frames
}

// markHold notes the frames so far, as the hold begins.
func (w *watcher) markHold() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.heldFrom = w.frames
}

func (w *watcher) figures() MediaFigures {
	w.mu.Lock()
	defer w.mu.Unlock()
	return MediaFigures{Peer: w.node.ID(), Frames: w.frames, FramesHeld: w.frames - w.heldFrom,
		FirstFrameMs: ms(w.firstFrame), Parents: append([]string(nil), w.parents...), Depth: w.node.Depth()}
}
