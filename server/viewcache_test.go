package main

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"canopy/mesh/load"
	"canopy/mesh/tree"
)

// TestTreeAPIPollingCannotHoldTheStreamLock: clients polling the tree API,
// the dashboard's stats and /metrics of a stream of 2 000 simulated peers
// as fast as they can hold its coordinator's lock, taking views, at most
// a fifth of the time (a tenth by design, plus scheduling), while the
// peers keep joining and signaling. Before, every request took a fresh
// snapshot under the lock, and 8 pollers held it 60 % of the time.
func TestTreeAPIPollingCannotHoldTheStreamLock(t *testing.T) {
	lightTest(t)
	s, url := startServer(t, tree.Config{SourceCapacity: 4})
	startSource(t, url, "big", 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() {
		_, err := load.Run(ctx, load.Config{
			Servers: []string{url}, Stream: "big", Viewers: 2000, Rate: 2000, RelayShare: 0.05, RelayCapacity: 32,
			Duration: time.Minute, StatsEvery: -1, LoopbackOnly: true, Logger: testLogger(),
		})
		ran <- err
	}()
	waitFor(t, 60*time.Second, "2 000 peers in the tree", func() bool {
		co := s.hub.get("big")
		return co != nil && len(co.snapshot()) >= 2000
	})
	co := s.hub.get("big")

	held0, start := co.viewsHeld(), time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	requests := 0
	for i := range 8 {
		path := []string{"/api/streams/big/tree", "/api/streams/big/stats", "/metrics"}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			// 6 s: long enough that each view's first taking, which
			// nothing amortizes, is a small share on a slow machine too.
			for time.Since(start) < 6*time.Second {
				resp, err := http.Get(url + path)
				if err != nil {
					t.Error(err)
					return
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("GET %s: %d", path, resp.StatusCode)
					return
				}
				mu.Lock()
				requests++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	held, elapsed := co.viewsHeld()-held0, time.Since(start)
	t.Logf("%d requests in %s held the stream's lock %s taking views (%.0f %%)", requests, elapsed.Round(time.Millisecond),
		held.Round(time.Millisecond), 100*held.Seconds()/elapsed.Seconds())
	if held > elapsed/5 {
		t.Errorf("views held the stream's lock %s of %s", held, elapsed)
	}
	cancel()
	select {
	case <-ran:
	case <-time.After(30 * time.Second):
		t.Error("the load run did not stop")
	}
}
