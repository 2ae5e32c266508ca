package main

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"canopy/mesh/protocol"
)

// TestIdleSessionStackIsSmall: an admitted peer that sends nothing costs
// its server one goroutine whose stack shrinks to 4 KB once collections
// have run. Parked below the hello's frames the same read kept an 8 KB
// stack, half of an idle connection's memory (README "Load").
//
// Not parallel: it reads the process's stack total, so it runs while no
// parallel test does.
func TestIdleSessionStackIsSmall(t *testing.T) {
	const viewers = 150
	_, url := startServerWith(t, Config{Limits: Limits{JoinRate: -1, MaxConnsPerIP: -1}})
	src := dialRaw(t, url)
	src.sendText(`{"type":"hello","v":1,"role":"source","kind":"go","stream":"idle",` +
		`"tracks":[{"id":"video","kind":"video","mimeType":"video/VP8","clockRate":90000}]}`)
	src.next(protocol.TypeWelcome)

	stacks := func() uint64 {
		for range 4 { // each collection halves a stack at most once
			runtime.GC()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.StackInuse
	}
	goroutines := runtime.NumGoroutine()
	before := stacks()
	for i := range viewers {
		v := dialRaw(t, url)
		v.sendText(fmt.Sprintf(`{"type":"hello","v":1,"role":"viewer","kind":"go","stream":"idle","capacity":%d}`, i%2))
		v.next(protocol.TypeWelcome)
	}
	// A goroutine counted before the viewers (the source's admission, a
	// timer) may end while they join: the count is waited for, not read once.
	added := 0
	waitFor(t, 10*time.Second, "a session goroutine per viewer", func() bool {
		added = runtime.NumGoroutine() - goroutines
		return added >= viewers
	})
	after := stacks()
	per := float64(after) - float64(before)
	per /= viewers
	t.Logf("%d idle viewers: %d goroutines added, %.0f bytes of stack per viewer", viewers, added, per)
	if per > 6<<10 {
		t.Errorf("an idle viewer's session holds %.0f bytes of stack, want about 4 KB (at most 6 KB)", per)
	}
}
