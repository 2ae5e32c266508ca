package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"canopy/mesh/media"
	"canopy/mesh/media/demo"
	"canopy/mesh/tree"
)

// startClipSource publishes a video file (IVF or H264, looped) with the
// demo's audio: startSource with another picture.
func startClipSource(t testing.TB, server, stream string, capacity int, videoPath string) {
	t.Helper()
	video, closer, err := media.OpenFile(videoPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = closer.Close() })
	_, audio, err := demo.Open()
	if err != nil {
		t.Fatal(err)
	}
	startSourceOf(t, server, stream, capacity, video, audio, nil)
}

// browserCPU is the CPU time, user and system, of a Chromium this test
// started and all its processes (renderer, GPU, network, …), from /proc.
func browserCPU(t *testing.T, ctx context.Context) time.Duration {
	t.Helper()
	root := chromedp.FromContext(ctx).Browser.Process().Pid
	type proc struct {
		ppid  int
		ticks float64
	}
	procs := map[int]proc{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(st)
		f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseFloat(f[11], 64)
		stt, _ := strconv.ParseFloat(f[12], 64)
		procs[pid] = proc{ppid, ut + stt}
	}
	var ticks float64
	for pid, p := range procs {
		for q := pid; q > 1; q = procs[q].ppid {
			if q == root {
				ticks += p.ticks
				break
			}
			if _, ok := procs[q]; !ok {
				break
			}
		}
	}
	return time.Duration(ticks / 100 * float64(time.Second)) // USER_HZ is 100 on Linux
}

// TestBrowserRelayCPU measures the CPU of a relaying Chromium, pass-through
// against re-encode, in one run: Go source → Chromium R → Chromium C, R's
// browser processes measured over the same window in each mode. A
// measurement, not a check: it runs only when asked, e.g. (the script makes
// a 720p clip first)
//
//	scripts/bench-browser-relay.sh
//	CANOPY_RELAY_CPU=20s CANOPY_RELAY_CPU_CLIP=/tmp/720p.ivf go test ./server -run TestBrowserRelayCPU -v -count=1
func TestBrowserRelayCPU(t *testing.T) {
	window, err := time.ParseDuration(os.Getenv("CANOPY_RELAY_CPU"))
	if err != nil {
		t.Skip("a measurement: set CANOPY_RELAY_CPU to the window, e.g. 20s")
	}
	clip := os.Getenv("CANOPY_RELAY_CPU_CLIP")
	for _, mode := range []string{"pass-through", "re-encode"} {
		t.Run(mode, func(t *testing.T) {
			stream := strings.ReplaceAll(mode, "-", "")
			_, srvURL := startServer(t, tree.Config{SourceCapacity: 1, BrowserMaxCapacity: 1})
			if clip != "" {
				startClipSource(t, srvURL, stream, 1, clip)
			} else {
				startSource(t, srvURL, stream, 1)
			}
			query := ""
			if mode == "re-encode" {
				query = "?passthrough=0"
			}
			r := openViewer(t, srvURL, stream, query, "R")
			if m := relayMode(t, r); m != mode {
				t.Fatalf("R relays in mode %q, want %q", m, mode)
			}
			c := openViewer(t, srvURL, stream, "?relay=0", "C")
			// Let the child's link settle (bandwidth estimate, encoder ramp).
			f := waitPlaying(t, c, 0, 5*time.Second).FramesDecoded
			waitPlaying(t, c, f+300, 90*time.Second)

			cpu0, at0 := browserCPU(t, r), time.Now()
			r0 := waitPlaying(t, r, 0, 5*time.Second).FramesDecoded
			c0 := waitPlaying(t, c, 0, 5*time.Second).FramesDecoded
			time.Sleep(window)
			cpu1, at1 := browserCPU(t, r), time.Now()
			r1 := waitPlaying(t, r, 0, 5*time.Second).FramesDecoded
			cs := waitPlaying(t, c, 0, 5*time.Second)
			wall := at1.Sub(at0).Seconds()
			sends, err := evalJS[[]senderReport](r, sendersJS)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: relaying Chromium used %.1f %% of a core (%.2f CPU-s over %.1f s); R decoded %.1f fps, C %.1f fps at %vpx wide; R's senders %+v",
				mode, 100*(cpu1-cpu0).Seconds()/wall, (cpu1 - cpu0).Seconds(), wall,
				(r1-r0)/wall, (cs.FramesDecoded-c0)/wall, cs.VideoWidth, sends)
		})
	}
}
