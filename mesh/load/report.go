package load

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Report is what a run measured.
type Report struct {
	cfg Config

	Viewers int `json:"viewers"` // simulated peers started in the ramp
	Relays  int `json:"relays"`  // of which relays
	// Placed is how many of them got a parent within JoinTimeout;
	// Unplaced how many simulated peers were without one at the end (after
	// up to 15 s for the last joiners to be placed).
	Placed   int `json:"placed"`
	Unplaced int `json:"unplaced"`
	// JoinsPerSec is Placed over the time from the ramp's start to the last
	// of them placed; OfferedRate is Config.Rate (0: unpaced).
	JoinsPerSec float64 `json:"joinsPerSec"`
	RampSeconds float64 `json:"rampSeconds"`
	OfferedRate float64 `json:"offeredRate"`
	// Join is hello → parent message; Offer is hello → the parent's offer
	// (includes the parent's own work: pion's CreateOffer for a real one).
	Join  Latency `json:"join"`
	Offer Latency `json:"offer"`
	// Reparent is a leaving peer's leave → its children's new parent
	// message, under churn; Moves counts other parent changes (a late
	// relay adopting a viewer, compaction). Churned is how many left.
	Reparent Latency `json:"reparent"`
	Moves    int64   `json:"moves"`
	Churned  int     `json:"churned"`
	// Answers is the answers simulated relays got from their children;
	// AnswerShapes the distinct offer shapes answered by a real pion
	// PeerConnection (every other answer was patched from those).
	Answers      int64 `json:"answers"`
	AnswerShapes int   `json:"answerShapes"`
	Offline      int64 `json:"offline"`
	// Errors are the server's error messages by code, and the harness's
	// own failures: dial, http_NNN (an upgrade refused: 429 past a
	// per-address limit, 503 at the connection cap), closed (a connection
	// the server ended).
	Errors  []ErrorCount    `json:"errors"`
	Servers []ServerFigures `json:"servers"`
	Media   []MediaFigures  `json:"media"`
	// MediaUnderSimulated names real viewers that were ever given a
	// simulated parent (they cannot play from it): a harness problem.
	MediaUnderSimulated []string `json:"mediaUnderSimulated,omitempty"`
}

func (rep *Report) fillRamp(r *run, start time.Time) {
	c := r.stats
	rep.Viewers = r.cfg.Viewers
	rep.Relays = (r.cfg.Viewers + r.every - 1) / r.every
	if r.cfg.RelayShare <= 0 || r.cfg.RelayCapacity <= 0 {
		rep.Relays = 0
	}
	rep.Placed = int(c.placed.Load())
	rep.OfferedRate = r.cfg.Rate
	c.mu.Lock()
	last := c.lastPlaced
	c.mu.Unlock()
	if !last.IsZero() {
		rep.RampSeconds = last.Sub(start).Seconds()
		if rep.RampSeconds > 0 {
			rep.JoinsPerSec = float64(min(rep.Placed, rep.Viewers)) / rep.RampSeconds
		}
	}
	rep.Join = c.joinLat.summary()
	rep.Offer = c.offerLat.summary()
}

func (rep *Report) fill(r *run, watchers []*watcher) {
	c := r.stats
	rep.Join = c.joinLat.summary()
	rep.Offer = c.offerLat.summary()
	rep.Reparent = c.reparentLat.summary()
	rep.Moves = c.moves.Load()
	rep.Answers = c.answers.Load()
	rep.Offline = c.offline.Load()
	r.answers.mu.Lock()
	rep.AnswerShapes = r.answers.built
	r.answers.mu.Unlock()
	rep.Errors = c.errors()
	for _, w := range watchers {
		f := w.figures()
		rep.Media = append(rep.Media, f)
		for _, p := range f.Parents {
			if r.lookup(p) != nil {
				rep.MediaUnderSimulated = append(rep.MediaUnderSimulated, f.Peer)
				break
			}
		}
	}
}

// MediaOK reports whether every real viewer got MediaFrames complete
// frames, kept playing while the run held (a second or more), and never
// had a simulated parent.
func (rep *Report) MediaOK() bool {
	for _, m := range rep.Media {
		if m.Frames < rep.cfg.MediaFrames || (rep.cfg.Duration >= time.Second && m.FramesHeld == 0) {
			return false
		}
	}
	return len(rep.MediaUnderSimulated) == 0
}

// JSON writes the report as one JSON object.
func (rep *Report) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// Print writes the report as lines for people.
func (rep *Report) Print(w io.Writer) {
	cfg := rep.cfg
	fmt.Fprintf(w, "load: %d simulated peers (%d relays of capacity %d) + %d media viewers, stream %q, %d server(s)\n",
		rep.Viewers, rep.Relays, cfg.RelayCapacity, len(rep.Media), cfg.Stream, len(cfg.Servers))
	offered := "unpaced"
	if rep.OfferedRate > 0 {
		offered = fmt.Sprintf("offered %.0f/s", rep.OfferedRate)
	}
	fmt.Fprintf(w, "joins: %d/%d placed in %.2f s: %.0f joins/s (%s)\n", rep.Placed, rep.Viewers, rep.RampSeconds, rep.JoinsPerSec, offered)
	fmt.Fprintf(w, "join → parent: %s\n", rep.Join)
	fmt.Fprintf(w, "join → parent's offer: %s\n", rep.Offer)
	if cfg.Churn > 0 {
		fmt.Fprintf(w, "re-parent under %.0f%%/min churn (%d left in %s): %s; %d other moves\n",
			cfg.Churn*100, rep.Churned, cfg.Duration, rep.Reparent, rep.Moves)
	} else {
		fmt.Fprintf(w, "re-parent: %s; %d other moves\n", rep.Reparent, rep.Moves)
	}
	fmt.Fprintf(w, "at the end: %d simulated peers without a parent\n", rep.Unplaced)
	fmt.Fprintf(w, "answers: %d from simulated children; %d offer shape(s) answered by pion\n", rep.Answers, rep.AnswerShapes)
	if len(rep.Errors) == 0 {
		fmt.Fprintln(w, "errors: none")
	} else {
		parts := make([]string, 0, len(rep.Errors))
		for _, e := range rep.Errors {
			parts = append(parts, fmt.Sprintf("%s %d", e.Code, e.Count))
		}
		fmt.Fprintf(w, "errors: %s\n", strings.Join(parts, ", "))
		for _, e := range rep.Errors {
			fmt.Fprintf(w, "  last %s: %s\n", e.Code, e.Last)
		}
	}
	for _, s := range rep.Servers {
		gc := "no forced GC: pass -debug for the live heap"
		if s.GCForced {
			gc = "after GC"
		}
		fmt.Fprintf(w, "server %s: %.1f KB/conn heap+stacks (%s), %.1f KB/conn RSS, %.2f goroutines/conn over %d conns; CPU %.2f cores joining (%.0f µs/join), %.2f cores holding\n",
			s.Server, s.HeapStackPerConnKB, gc, s.RSSPerConnKB, s.GoroutinesPerConn, s.Conns, s.RampCPU, s.CPUPerJoinMicros, s.HoldCPU)
	}
	for _, m := range rep.Media {
		fmt.Fprintf(w, "media %s: %d complete frames (%d while holding), first after %.0f ms, depth %d, %d parent(s)\n",
			m.Peer, m.Frames, m.FramesHeld, m.FirstFrameMs, m.Depth, len(m.Parents))
	}
	if len(rep.MediaUnderSimulated) > 0 {
		fmt.Fprintf(w, "WARNING: media viewers given a simulated parent: %s\n", strings.Join(rep.MediaUnderSimulated, ", "))
	}
}

func (l Latency) String() string {
	if l.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d)", l.P50, l.P99, l.Max, l.Count)
}
