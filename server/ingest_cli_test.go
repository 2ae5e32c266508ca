package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"canopy/mesh/protocol"
	"canopy/mesh/tree"
)

// ffmpegPath finds ffmpeg. Without it the ingest tests skip on a developer's
// machine and fail in CI (CI=true), where .ci/run installs it.
func ffmpegPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("ffmpeg"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no ffmpeg found; CI must install it (.ci/run)")
	}
	t.Skip("no ffmpeg found; install ffmpeg to run the ingest tests")
	return ""
}

// freeRTPPort finds an even UDP port whose successor (RTCP) is free too.
func freeRTPPort(t *testing.T) int {
	t.Helper()
	for range 50 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port &^ 1
		_ = c.Close()
		a, errA := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		b, errB := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port + 1})
		if a != nil {
			_ = a.Close()
		}
		if b != nil {
			_ = b.Close()
		}
		if errA == nil && errB == nil {
			return port
		}
	}
	t.Fatal("no free UDP port pair")
	return 0
}

// ffmpegVideoIn is a synthetic camera for ffmpeg, in real time.
func ffmpegVideoIn(seconds int) []string {
	return []string{"-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
		"testsrc2=size=640x360:rate=30", "-t", strconv.Itoa(seconds)}
}

// startBroadcast runs the client binary's broadcast with args (and stdin's
// output on its standard input, started after it) and waits until the
// server lists the stream live.
func startBroadcast(t *testing.T, ctx context.Context, bin, url, stream string, stdin *exec.Cmd, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, append([]string{"broadcast", "-server", url, "-stream", stream, "-loopback-only"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if stdin != nil {
		out, err := stdin.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = out
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if stdin != nil {
		// The broadcast reads the pipe's first bytes before it joins.
		if err := stdin.Start(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	waitFor(t, 20*time.Second, "the broadcast is live", func() bool {
		var streams []streamInfo
		getJSON(t, url+"/api/streams", &streams)
		for _, s := range streams {
			if s.ID == stream && s.Live {
				return true
			}
		}
		return false
	})
	return cmd, &stderr
}

// runFFmpeg runs ffmpeg to its end in the background; its error, if any,
// arrives on the channel.
func runFFmpeg(t *testing.T, ctx context.Context, args ...string) <-chan error {
	t.Helper()
	cmd := exec.CommandContext(ctx, ffmpegPath(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("ffmpeg: %w\n%s", err, out.String())
		}
		done <- err
	}()
	return done
}

// TestBroadcastRTPFromFFmpeg: ffmpeg streams RTP into the real client
// binary's broadcast, and Go viewers through the server receive complete
// frames: VP8 on -rtp, where ffmpeg is restarted mid-stream and the viewer
// sees one continuous stream (no gap in sequence numbers, never offline),
// and then the broadcast's signaling drops and it resumes on the same RTP
// port; H264 + Opus described by the SDP file ffmpeg writes (-sdp).
func TestBroadcastRTPFromFFmpeg(t *testing.T) {
	ffmpegPath(t)
	bin := buildClient(t)
	srv, url := startServer(t, tree.Config{SourceCapacity: 4})

	t.Run("VP8", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		port := freeRTPPort(t)
		startBroadcast(t, ctx, bin, url, "rtp-vp8", nil, "-rtp", fmt.Sprintf("127.0.0.1:%d", port), "-codec", "vp8")
		vp8 := func(seconds int) []string {
			return append(ffmpegVideoIn(seconds), "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8",
				"-b:v", "1M", "-g", "30", "-pkt_size", "1200", "-f", "rtp", fmt.Sprintf("rtp://127.0.0.1:%d", port))
		}
		first := runFFmpeg(t, ctx, vp8(4)...)
		v := startPeer(t, url, "rtp-vp8", protocol.RoleViewer, 0, nil)
		waitFor(t, 30*time.Second, "60 frames from ffmpeg's RTP", func() bool { f, _, _ := v.counts(); return f >= 60 })
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		before, _, _ := v.counts()
		// The encoder restarts: a new SSRC, new random numbers, a new clock.
		second := runFFmpeg(t, ctx, vp8(10)...)
		waitFor(t, 30*time.Second, "60 more frames after ffmpeg restarted", func() bool { f, _, _ := v.counts(); return f >= before+60 })
		missing, received := v.seqGaps()
		frames, _, _ := v.counts()
		t.Logf("viewer: %d frames, %d packets, %d sequence numbers missing across the restart", frames, received, missing)
		if missing != 0 {
			t.Errorf("%d sequence numbers missing: the restart was not made continuous", missing)
		}
		if n := v.offlineCount(); n != 0 {
			t.Errorf("the viewer saw the stream offline %d times", n)
		}
		// The broadcast's signaling drops: it resumes its place (the same
		// node, fed by the same RTP listener), and a new viewer plays from it.
		id := peersOf(srv, "rtp-vp8", protocol.RoleSource)[0]
		co := srv.hub.get("rtp-vp8")
		co.mu.Lock()
		old := co.peers[id]
		co.mu.Unlock()
		blink(srv, "rtp-vp8", id)
		waitFor(t, 30*time.Second, "the broadcast resumes its place", func() bool { return resumedFrom(srv, "rtp-vp8", id, old) })
		w := startPeer(t, url, "rtp-vp8", protocol.RoleViewer, 0, nil)
		waitFor(t, 30*time.Second, "a new viewer plays the resumed broadcast", func() bool { f, _, _ := w.counts(); return f >= 30 })
		cancel()
		<-second
	})

	t.Run("H264+Opus/SDP", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		vport, aport := freeRTPPort(t), freeRTPPort(t)
		sdp := filepath.Join(t.TempDir(), "in.sdp")
		args := append(ffmpegVideoIn(10), "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
			"-map", "0:v", "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-tune", "zerolatency",
			"-b:v", "2M", "-g", "30", "-bf", "0", "-pkt_size", "1200", "-f", "rtp", fmt.Sprintf("rtp://127.0.0.1:%d", vport),
			"-map", "1:a", "-t", "10", "-c:a", "libopus", "-b:a", "64k", "-pkt_size", "1200", "-f", "rtp", fmt.Sprintf("rtp://127.0.0.1:%d", aport),
			"-sdp_file", sdp)
		done := runFFmpeg(t, ctx, args...)
		waitFor(t, 20*time.Second, "ffmpeg's SDP file", func() bool {
			b, err := os.ReadFile(sdp)
			return err == nil && strings.Contains(string(b), "opus/48000")
		})
		startBroadcast(t, ctx, bin, url, "rtp-h264", nil, "-sdp", sdp)
		v := startPeer(t, url, "rtp-h264", protocol.RoleViewer, 0, nil)
		waitFor(t, 30*time.Second, "90 H264 frames and audio", func() bool { f, _, a := v.counts(); return f >= 90 && a >= 100 })
		frames, _, audio := v.counts()
		t.Logf("viewer: %d complete H264 frames, %d Opus packets", frames, audio)
		cancel()
		<-done
	})
}

// TestBroadcastIVFPipe: ffmpeg encodes VP8 as fast as it can into a pipe
// (no -re); the broadcast paces it at the IVF timestamps, a Go viewer gets
// complete frames, and when the pipe ends the broadcast exits 0 and the
// viewer is told the stream is offline.
func TestBroadcastIVFPipe(t *testing.T) {
	ffmpeg := ffmpegPath(t)
	bin := buildClient(t)
	_, url := startServer(t, tree.Config{SourceCapacity: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const seconds = 6
	enc := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
		"testsrc2=size=640x360:rate=30", "-t", strconv.Itoa(seconds), "-c:v", "libvpx", "-deadline", "realtime",
		"-cpu-used", "8", "-b:v", "1M", "-g", "30", "-flush_packets", "1", "-f", "ivf", "-")
	started := time.Now()
	bc, stderr := startBroadcast(t, ctx, bin, url, "pipe", enc, "-video", "-")
	v := startPeer(t, url, "pipe", protocol.RoleViewer, 0, nil)
	waitFor(t, 30*time.Second, "60 frames from the pipe", func() bool { f, _, _ := v.counts(); return f >= 60 })
	if err := enc.Wait(); err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	if err := bc.Wait(); err != nil {
		t.Fatalf("broadcast exited with %v\n%s", err, stderr.String())
	}
	took := time.Since(started)
	waitFor(t, 20*time.Second, "the viewer is told the stream is offline", func() bool { return v.offlineCount() > 0 })
	frames, _, _ := v.counts()
	t.Logf("broadcast of %d s of IVF took %v; viewer: %d frames; %s", seconds, took.Round(time.Millisecond), frames, strings.TrimSpace(stderr.String()))
	// ffmpeg writes the 6 s in well under a second; paced at its
	// timestamps, the broadcast cannot end before most of them passed.
	if took < seconds*time.Second*3/4 {
		t.Errorf("the broadcast of %d s of video ended after %v: not paced at the IVF timestamps", seconds, took)
	}
}
