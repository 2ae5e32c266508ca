package main

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// Helpers that drive a watch page in either browser: a tab is a chromedp
// context (Chromium, CDP) or a *firefox (WebDriver BiDi), read through
// JSON.stringify in the page so both give the same values.

// tab is one page a test drives, in whichever browser.
type tab interface {
	// evalJSON evaluates expr (awaited) in the page and returns its value as JSON.
	evalJSON(expr string) (string, error)
}

// chromiumTab is a chromedp tab.
type chromiumTab struct{ ctx context.Context }

func (p chromiumTab) evalJSON(expr string) (string, error) {
	return evalJS[string](p.ctx, "(async () => JSON.stringify(await ("+expr+")))()")
}

// tabEval evaluates expr in p and decodes its value into T.
func tabEval[T any](p tab, expr string) (T, error) {
	var v T
	s, err := p.evalJSON(expr)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return v, fmt.Errorf("decode %q: %w", s, err)
	}
	return v, nil
}

// framesPresentedJS counts the frames the watch page's <video> presents,
// with requestVideoFrameCallback (headless Firefox reports 0 from
// getVideoPlaybackQuality; the callback still runs per composited frame).
// Installed once; returns the count so far, or -1 without the API.
const framesPresentedJS = `(() => {
  const v = window.canopy && window.canopy.video;
  if (!v || typeof v.requestVideoFrameCallback !== 'function') return -1;
  if (window.__canopyPresented === undefined) {
    window.__canopyPresented = 0;
    const step = () => { window.__canopyPresented++; v.requestVideoFrameCallback(step); };
    v.requestVideoFrameCallback(step);
  }
  return window.__canopyPresented;
})()`

// pollPage evaluates js in p every 100 ms until done accepts its value or
// timeout passes; it returns the last value read, whether done accepted
// it, and the last error.
func pollPage[T any](p tab, js string, timeout time.Duration, done func(T) bool) (T, bool, error) {
	var last T
	var lastErr error
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		v, err := tabEval[T](p, js)
		lastErr = err
		if err == nil {
			last = v
			if done(v) {
				return v, true, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last, false, lastErr
}

// waitPresented polls p until its <video> has presented at least n frames
// since framesPresentedJS was installed, and returns the count. A loaded
// machine composites rarely (a headless Firefox beside two Chromiums on
// 2 cores presented 14 frames while it decoded 90), so the picture moving
// is a condition to wait for, not a sample.
func waitPresented(t *testing.T, p tab, name string, n float64, timeout time.Duration) float64 {
	t.Helper()
	got, ok, err := pollPage(p, framesPresentedJS, timeout, func(v float64) bool { return v >= n })
	if !ok {
		t.Errorf("%s presented %v frames in %s (%v), want %v: the picture does not move", name, got, timeout, err, n)
	}
	return got
}

// waitPagePlaying polls p until it has decoded more than minFrames video
// frames with a picture size, the way waitPlaying does for chromedp tabs.
func waitPagePlaying(t *testing.T, p tab, name string, minFrames float64, timeout time.Duration) pageStats {
	t.Helper()
	last, ok, err := pollPage(p, statsJS, timeout, func(s pageStats) bool { return s.FramesDecoded > minFrames && s.VideoWidth > 0 })
	if !ok {
		t.Fatalf("%s did not play within %s: last stats %+v (%v)", name, timeout, last, err)
	}
	return last
}

func readPageRelay(t *testing.T, p tab, name string) relayState {
	t.Helper()
	s, err := tabEval[relayState](p, relayStateJS)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return s
}

// openFirefoxViewer starts a Firefox of its own on /watch/<stream><query>
// and waits until it plays.
func openFirefoxViewer(t *testing.T, srvURL, stream, query, name string) *firefox {
	t.Helper()
	f := newFirefox(t, name)
	if err := f.navigate(srvURL + "/watch/" + stream + query); err != nil {
		t.Fatal(err)
	}
	t.Logf("viewer %s (Firefox) opened", name)
	waitPagePlaying(t, f, name, 10, 90*time.Second)
	t.Logf("viewer %s (Firefox) plays", name)
	return f
}

// markParentJS marks a tab's connection to its parent; parentLinkJS reads
// the frames decoded on it, whether it is still the marked one, and a hash
// of the picture on screen (the demo clip's test pattern moves every
// frame, so a hash that stands still is a frozen picture, even where a
// re-encoding relay keeps sending copies of its last frame).
const markParentJS = `(() => { window.canopy.client.pc.__canopyMark = 1; return true; })()`

const parentLinkJS = `(async () => {
  const c = window.canopy.client;
  const out = {frames: 0, marked: !!(c.pc && c.pc.__canopyMark), parent: c.parentId || '', picture: 0};
  if (c.pc) (await c.pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') out.frames = r.framesDecoded || 0;
  });
  const v = window.canopy.video;
  if (v.videoWidth) {
    const cv = window.__canopyCanvas || (window.__canopyCanvas = document.createElement('canvas'));
    cv.width = 160; cv.height = 90;
    const g = cv.getContext('2d', {willReadFrequently: true});
    g.drawImage(v, 0, 0, 160, 90);
    const d = g.getImageData(0, 0, 160, 90).data;
    let h = 2166136261;
    for (let i = 0; i < d.length; i += 4) h = Math.imul(h ^ (d[i] + 3 * d[i + 1] + 7 * d[i + 2]), 16777619) >>> 0;
    out.picture = h;
  }
  return out;
})()`

type parentLink struct {
	Frames  float64 `json:"frames"`
	Marked  bool    `json:"marked"`
	Parent  string  `json:"parent"`
	Picture uint32  `json:"picture"`
}

// watched is a tab whose link to its parent a test follows.
type watched struct {
	name string
	p    tab
	more float64 // frames to decode on the link once the event happened
}

// minPictureChanges is how many new pictures a tab must show after a
// switch, besides decoding frames: a few seconds of a moving pattern.
const minPictureChanges = 20

// keepsPlaying polls every tab's link to its parent, together, from before
// event holds (a parent switch done) until each decoded more frames than
// its more after it, on the same connection, and showed new pictures; it
// returns each one's longest time with the same picture on screen, and the
// longest time between two polls (a 100 ms sleep plus the evaluations'
// time): stalls shorter than that are not seen.
func keepsPlaying(t *testing.T, timeout time.Duration, event func() bool, tabs ...watched) (map[string]time.Duration, time.Duration) {
	t.Helper()
	last := make([]parentLink, len(tabs))
	base := make([]float64, len(tabs))
	changes := make([]int, len(tabs))
	lastChange := make([]time.Time, len(tabs))
	longest := map[string]time.Duration{}
	for i := range tabs {
		lastChange[i] = time.Now()
	}
	happened := false
	var gap time.Duration
	prevPoll := time.Now()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		gap = max(gap, time.Since(prevPoll))
		prevPoll = time.Now()
		for i, w := range tabs {
			l, err := tabEval[parentLink](w.p, parentLinkJS)
			if err != nil {
				continue
			}
			if !l.Marked {
				t.Fatalf("%s's connection to its parent changed: %+v", w.name, l)
			}
			if l.Picture != last[i].Picture {
				lastChange[i] = time.Now()
				if happened {
					changes[i]++
				}
			}
			last[i] = l
			longest[w.name] = max(longest[w.name], time.Since(lastChange[i]))
		}
		if !happened && event() {
			happened = true
			for i := range tabs {
				base[i] = last[i].Frames
			}
		}
		done := happened
		for i, w := range tabs {
			done = done && last[i].Frames > base[i]+w.more && changes[i] >= minPictureChanges
		}
		if done {
			return longest, gap
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !happened {
		t.Fatalf("the parent switch did not happen within %s", timeout)
	}
	for i, w := range tabs {
		if last[i].Frames <= base[i]+w.more || changes[i] < minPictureChanges {
			t.Errorf("%s after the switch, within %s: %v frames decoded on its link (want more than %v), %d new pictures (want %d): a frozen picture",
				w.name, timeout, last[i].Frames-base[i], w.more, changes[i], minPictureChanges)
		}
	}
	t.FailNow()
	return longest, gap
}
