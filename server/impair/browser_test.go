package impair

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Real Chromium browsers in the lab: each runs inside a host's namespace
// (its exec path is `ip netns exec <ns> chromium …`), so its WebRTC
// traffic crosses the lab's links, and the shim or tc shapes it like any
// peer's. chromedp talks to it over --remote-debugging-pipe (chromedp's
// default), two inherited file descriptors that need no network: a
// DevTools port would listen on the namespace's own loopback, out of the
// test's reach.

// chromiumPath finds a Chromium. Without one the browser lab tests skip,
// and fail under CI=true, where .ci/run installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true: no Chromium found; CI must install it (.ci/run)")
	}
	t.Skip("no Chromium found; install chromium to run the browser lab tests")
	return ""
}

// startChromium starts a headless Chromium in h's namespace with the flags
// the server package's browser tests use (FIELD-NOTES), and returns its
// tab. Host candidates are plain addresses (no mDNS names, which nothing
// in a namespace resolves).
func startChromium(t *testing.T, h *host, name string) context.Context {
	t.Helper()
	bin := chromiumPath(t)
	dir := filepath.Join(t.TempDir(), "profile-"+name)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(dir),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
		chromedp.WindowSize(1280, 800),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			// The pipes are set up already (cmd.ExtraFiles); ip netns exec
			// execs Chromium in place, so it inherits them.
			cmd.Args = append([]string{"ip", "netns", "exec", h.ns}, cmd.Args...)
			if p, err := exec.LookPath("ip"); err == nil {
				cmd.Path = p
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s in %s: %v", name, h.ns, err)
	}
	return ctx
}

// evalJS evaluates expr (awaited) in the tab, bounded.
func evalJS[T any](ctx context.Context, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// videoIn is what a tab's connection to its parent says of the video it
// receives (inbound-rtp), and what the page says of itself.
type videoIn struct {
	Parent        string  `json:"parent"`
	ID            string  `json:"id"`
	Mode          string  `json:"mode"`
	Children      float64 `json:"children"`
	FramesDecoded float64 `json:"framesDecoded"`
	FramesDropped float64 `json:"framesDropped"`
	Freezes       float64 `json:"freezeCount"`
	FreezeS       float64 `json:"totalFreezesDuration"`
	Nacks         float64 `json:"nackCount"`
	PLIs          float64 `json:"pliCount"`
	Lost          float64 `json:"packetsLost"`
	Received      float64 `json:"packetsReceived"`
	RtxReceived   float64 `json:"retransmittedPacketsReceived"`
	JitterS       float64 `json:"jitterBufferDelay"`
	JitterN       float64 `json:"jitterBufferEmittedCount"`
	RttS          float64 `json:"rtt"` // the selected candidate pair's current round trip
	// Sent is what the tab's links to its children sent (outbound-rtp video, summed).
	Sent struct {
		Packets       float64 `json:"packetsSent"`
		Retransmitted float64 `json:"retransmittedPacketsSent"`
		Nacks         float64 `json:"nackCount"`
		FramesEncoded float64 `json:"framesEncoded"`
	} `json:"sent"`
}

const videoInJS = `(async () => {
  const c = window.canopy && window.canopy.client;
  if (!c) return {};
  const out = { parent: c.parentId || '', id: c.id || '', mode: c.relayMode, children: c.children.size,
    sent: { packetsSent: 0, retransmittedPacketsSent: 0, nackCount: 0, framesEncoded: 0 } };
  const keys = ['framesDecoded', 'framesDropped', 'freezeCount', 'totalFreezesDuration', 'nackCount', 'pliCount',
    'packetsLost', 'packetsReceived', 'retransmittedPacketsReceived', 'jitterBufferDelay', 'jitterBufferEmittedCount'];
  if (c.pc) (await c.pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') for (const k of keys) out[k] = r[k] || 0;
    if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') out.rtt = r.currentRoundTripTime || 0;
  });
  for (const child of c.children.values()) {
    (await child.pc.getStats()).forEach((r) => {
      if (r.type !== 'outbound-rtp' || r.kind !== 'video') return;
      for (const k of Object.keys(out.sent)) out.sent[k] += r[k] || 0;
    });
  }
  return out;
})()`

func readVideoIn(t *testing.T, ctx context.Context, name string) videoIn {
	t.Helper()
	var v videoIn
	var err error
	for range 4 { // a tab on a loaded machine may miss one bound
		if v, err = evalJS[videoIn](ctx, videoInJS); err == nil {
			return v
		}
	}
	t.Fatalf("read %s: %v", name, err)
	return v
}

// frameClockJS records when (wall ms) the page's <video> presents each
// frame; framesGapJS is the largest gap between presented frames from a
// moment on, counting the gap still open.
const frameClockJS = `(() => {
  if (window.__frames) return true;
  const v = window.canopy.video;
  const f = window.__frames = [];
  const on = (now) => {
    f.push(performance.timeOrigin + now);
    if (f.length > 20000) f.splice(0, 10000);
    v.requestVideoFrameCallback(on);
  };
  v.requestVideoFrameCallback(on);
  return true;
})()`

const framesGapJS = `((from) => {
  const f = window.__frames || [];
  let gap = 0, prev = from, n = 0;
  for (const x of f) {
    if (x < from) continue;
    gap = Math.max(gap, x - prev);
    prev = x;
    n++;
  }
  return { gap: Math.max(gap, performance.timeOrigin + performance.now() - prev), n };
})(%f)`

type presented struct {
	Gap float64 `json:"gap"` // ms
	N   float64 `json:"n"`
}

// openWatch opens /watch/impair<query> in the tab and waits until it has
// decoded frames.
func openWatch(t *testing.T, ctx context.Context, name, srvURL, query string) videoIn {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(srvURL+"/watch/impair"+query)); err != nil {
		t.Fatalf("%s: navigate: %v", name, err)
	}
	var v videoIn
	waitFor(t, 90*time.Second, name+" plays", func() bool {
		v = readVideoIn(t, ctx, name)
		return v.FramesDecoded > 2*fps
	})
	if _, err := evalJS[bool](ctx, frameClockJS); err != nil {
		t.Fatalf("%s: record frames: %v", name, err)
	}
	return v
}

func wallMs(at time.Time) float64 { return float64(at.UnixMicro()) / 1000 }

// msOf renders seconds as ms.
func msOf(s float64) string { return fmt.Sprintf("%.0f ms", 1000*s) }

// loadAverage is the machine's 1-minute load average, for the figures.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	var l string
	fmt.Sscan(string(b), &l)
	return l
}

// waitUntil polls cond every 100 ms until it holds (true) or timeout
// passes (false).
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}
