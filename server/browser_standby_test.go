package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// Browser tests of hot standby parents (static/js/standby.js): real
// Chromium processes, one per viewer, relaying to each other by passing
// frames through. An orphan's stall is the largest gap between frames its
// <video> presented (requestVideoFrameCallback), around the moment its
// parent died.

// standbyTab is one viewer: its own Chromium, and the profile directory
// that names its processes (to kill them all, as a crash does).
type standbyTab struct {
	name string
	ctx  context.Context
	dir  string
	id   string
}

// openStandbyTab starts a Chromium of its own on /watch/<stream><query>,
// waits until it plays, and starts recording its presented frames.
func openStandbyTab(t *testing.T, srvURL, stream, query, name string) *standbyTab {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "profile-"+name)
	ctx := newBrowser(t, chromedp.UserDataDir(dir))
	logConsole(t, ctx, name)
	if err := chromedp.Do(ctx, chromedp.Navigate(srvURL+"/watch/"+stream+query)); err != nil {
		t.Fatal(err)
	}
	waitPlaying(t, ctx, 10, 90*time.Second)
	if _, err := evalJS[bool](ctx, frameClockJS); err != nil {
		t.Fatalf("%s: record frames: %v", name, err)
	}
	tab := &standbyTab{name: name, ctx: ctx, dir: dir, id: readStandby(t, ctx).ID}
	t.Logf("viewer %s (%s) plays", name, tab.id)
	return tab
}

// kill SIGKILLs every process of the tab's Chromium (the browser, its
// renderers, its network service): no leave, no pagehide, no DTLS close.
func (tab *standbyTab) kill(t *testing.T) {
	t.Helper()
	want := []byte("--user-data-dir=" + tab.dir)
	if p := chromedp.FromContext(tab.ctx).Browser.Process(); p != nil {
		_ = p.Kill()
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		if slices.ContainsFunc(bytes.Split(cmdline, []byte{0}), func(arg []byte) bool { return bytes.Equal(arg, want) }) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// closeTab closes the page the way a user does (pagehide sends leave).
func (tab *standbyTab) closeTab(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, 10*time.Second)
	defer cancel()
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.Close, cdp.Empty{})
		return err
	}))
	if err != nil {
		t.Logf("close %s: %v", tab.name, err)
	}
}

// frameClockJS records the wall-clock time (ms) of every frame the page's
// <video> presents. A new srcObject may drop a pending callback, so a
// watchdog re-arms it; each arming is a generation, and only the newest
// re-requests, so no two chains run at once.
const frameClockJS = `(() => {
  if (window.__frameClock) return true;
  const v = window.canopy.video;
  const t = { frames: [], last: 0, gen: 0 };
  window.__frameClock = t;
  const arm = () => {
    const gen = ++t.gen;
    const on = (now) => {
      const w = performance.timeOrigin + now;
      if (w > t.last) {
        t.last = w;
        t.frames.push(w);
        if (t.frames.length > 30000) t.frames.splice(0, 15000);
      }
      if (gen === t.gen) v.requestVideoFrameCallback(on);
    };
    v.requestVideoFrameCallback(on);
  };
  arm();
  setInterval(() => { if (performance.timeOrigin + performance.now() - t.last > 300) arm(); }, 300);
  return true;
})()`

// frameGap is what a tab presented around a moment (wall ms): the largest
// gap between successive frames from 0.5 s before it to 5 s after, and the
// first frame after it.
type frameGap struct {
	Gap        float64 `json:"gap"`
	Before     float64 `json:"before"` // the largest gap in the 7 s before: what this machine does without a switch
	After      float64 `json:"after"`
	FirstAfter float64 `json:"firstAfter"`
}

const frameGapJS = `((at) => {
  const f = window.__frameClock ? window.__frameClock.frames : [];
  const out = { gap: 0, before: 0, after: 0, firstAfter: 0 };
  for (let i = 1; i < f.length; i++) {
    if (f[i] <= at) {
      if (f[i - 1] >= at - 7000) out.before = Math.max(out.before, f[i] - f[i - 1]);
      continue;
    }
    out.after++;
    if (!out.firstAfter) out.firstAfter = f[i];
    if (f[i - 1] >= at - 500 && f[i - 1] <= at + 5000) out.gap = Math.max(out.gap, f[i] - f[i - 1]);
  }
  return out;
})(%f)`

// readGap waits until tab has presented minFrames frames after at (wall
// ms), then returns its gap around at.
func readGap(t *testing.T, tab *standbyTab, at float64, minFrames float64, timeout time.Duration) frameGap {
	t.Helper()
	var g frameGap
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var err error
		if g, err = evalJS[frameGap](tab.ctx, fmt.Sprintf(frameGapJS, at)); err == nil && g.After >= minFrames {
			return g
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not play again within %s: %+v", tab.name, timeout, g)
	return g
}

// standbyState is what a watch page says about its standby links.
type standbyState struct {
	ID        string  `json:"id"`
	Parent    string  `json:"parent"`
	Standby   string  `json:"standby"`
	StandbyUp bool    `json:"standbyUp"`
	Held      float64 `json:"held"`
	Switches  float64 `json:"switches"`
	Children  float64 `json:"children"`
	Marked    bool    `json:"marked"`
}

const standbyStateJS = `(() => {
  const c = window.canopy && window.canopy.client;
  if (!c) return {};
  return { id: c.id || '', parent: c.parentId || '', standby: c.standby ? c.standby.peer : '',
    standbyUp: !!(c.standby && c.standby.connected), held: c.standbyChildren.size,
    switches: c.standbySwitches, children: c.children.size, marked: !!(c.pc && c.pc.__canopyMark) };
})()`

func readStandby(t *testing.T, ctx context.Context) standbyState {
	t.Helper()
	var s standbyState
	var err error
	// A tab on a machine at load ~100 may take more than one evalJS bound
	// to answer: try a few times.
	for range 4 {
		if s, err = evalJS[standbyState](ctx, standbyStateJS); err == nil {
			return s
		}
	}
	t.Fatalf("read standby state: %v", err)
	return s
}

// recordArrivals makes the tab's relay worker record the arrival time of
// every frame of its active upstream from now on (the test hook that
// proves pass-through byte for byte; it follows the tab's switches).
func recordArrivals(t *testing.T, tab *standbyTab) {
	t.Helper()
	if _, err := evalJS[any](tab.ctx, `window.canopy.client.relay.recordHashes(5000)`); err != nil {
		t.Fatalf("%s: record arrivals: %v", tab.name, err)
	}
}

// arrivalGapJS is frameGapJS over the video frames the tab's receive
// transform got (before decoding, so without the renderer's own stalls).
const arrivalGapJS = `(async (at) => {
  const w = await window.canopy.client.relay.stats();
  const f = (w && w.hashes ? w.hashes.video : []).map((e) => e[1]);
  const out = { gap: 0, before: 0, after: 0, firstAfter: 0 };
  for (let i = 1; i < f.length; i++) {
    if (f[i] <= at) {
      if (f[i - 1] >= at - 7000) out.before = Math.max(out.before, f[i] - f[i - 1]);
      continue;
    }
    out.after++;
    if (!out.firstAfter) out.firstAfter = f[i];
    if (f[i - 1] >= at - 500 && f[i - 1] <= at + 5000) out.gap = Math.max(out.gap, f[i] - f[i - 1]);
  }
  return out;
})(%f)`

// readArrivalGap is the largest gap between frames the tab's receive
// transform got around at (0 when it cannot be read).
func readArrivalGap(tab *standbyTab, at float64) frameGap {
	g, _ := evalJS[frameGap](tab.ctx, fmt.Sprintf(arrivalGapJS, at))
	return g
}

// markUpstream tags the tab's connection to its parent, so a later read
// tells whether it is still the same one.
func markUpstream(t *testing.T, tab *standbyTab) {
	t.Helper()
	if _, err := evalJS[bool](tab.ctx, `(() => { window.canopy.client.pc.__canopyMark = 1; return true; })()`); err != nil {
		t.Fatal(err)
	}
}

func wallMs(at time.Time) float64 { return float64(at.UnixMicro()) / 1000 }

// steadyJS is the largest gap between the frames a tab presented in the
// last 3 s, and how many it presented (a tab that just joined, or whose
// link is still ramping up, is not steady yet).
const steadyJS = `(() => {
  const f = window.__frameClock ? window.__frameClock.frames : [];
  const now = performance.timeOrigin + performance.now();
  let gap = 0, n = 0, prev = now - 3000;
  for (const x of f) {
    if (x < now - 3000) continue;
    gap = Math.max(gap, x - prev);
    prev = x;
    n++;
  }
  return { gap: Math.max(gap, now - prev), n };
})()`

// steady reports whether a tab has played smoothly for the last 3 s: at
// least 60 frames, none more than 400 ms apart.
func steady(tab *standbyTab) bool {
	s, err := evalJS[struct {
		Gap float64 `json:"gap"`
		N   float64 `json:"n"`
	}](tab.ctx, steadyJS)
	return err == nil && s.N >= 60 && s.Gap < 400
}
