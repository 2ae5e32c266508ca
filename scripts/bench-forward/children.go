//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"canopy/mesh/peer"
	"canopy/mesh/protocol"
	"github.com/pion/rtp"
)

// runChildren answers every offer the relay sends with an Upstream, counts
// the packets and records source→child delay from the capture time.
func runChildren() {
	o := &out{enc: json.NewEncoder(os.Stdout)}
	in := make(chan msg, 1024)
	go lines(os.Stdin, in)
	a, err := peer.NewAPI(peer.Config{LoopbackOnly: true, Logger: logger()})
	if err != nil {
		fatal(err)
	}
	var (
		received atomic.Uint64
		mu       sync.Mutex
		delays   = make([]float64, 0, 1<<20)
		counts   = map[string]*atomic.Uint64{}
		ups      = map[string]*peer.Upstream{}
	)
	for m := range in {
		switch {
		case m.Cmd == "mark":
			mu.Lock()
			ready := 0
			for _, c := range counts {
				if c.Load() > 0 {
					ready++
				}
			}
			st := &stats{CPU: cpuTime(), Received: received.Load(), Ready: ready}
			summarize(st, delays)
			delays = delays[:0]
			mu.Unlock()
			o.send(msg{Stats: st})
		case m.Sig != nil:
			up := ups[m.Child]
			if up == nil {
				id := m.Child
				c := &atomic.Uint64{}
				mu.Lock()
				counts[id] = c
				mu.Unlock()
				up, err = a.NewUpstream("relay", []protocol.Track{videoTrack},
					func(s protocol.Signal) { o.send(msg{Child: id, Sig: &s}) },
					func(_ protocol.Track, p *rtp.Packet) {
						received.Add(1)
						c.Add(1)
						if ct, ok := peer.CaptureTime(p); ok && p.Marker {
							d := float64(time.Since(ct)) / 1e6
							mu.Lock()
							delays = append(delays, d)
							mu.Unlock()
						}
					})
				if err != nil {
					fatal(err)
				}
				ups[id] = up
			}
			if err := up.HandleSignal(*m.Sig); err != nil {
				fmt.Fprintln(os.Stderr, "children: signal:", err)
			}
		}
	}
	for _, u := range ups {
		_ = u.Close()
	}
}

// summarize sorts delays and puts their quantiles into st.
func summarize(st *stats, delays []float64) {
	sort.Float64s(delays)
	if len(delays) > 0 {
		st.P50, st.P99 = delays[len(delays)/2], delays[len(delays)*99/100]
		st.Delays = len(delays)
		for i := range 200 {
			st.Quantiles = append(st.Quantiles, delays[(2*i+1)*len(delays)/400])
		}
	}
}
