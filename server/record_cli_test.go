package main

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"canopy/mesh/framesig"
	"canopy/mesh/media"
	"canopy/mesh/tree"
)

// TestWatchRecordsVerifiedFrames: `client watch -record` of a signed
// stream (the real broadcast and watch binaries, through a Go relay)
// writes the frames it verified, without their signatures: no frame of
// the file carries a trailer (VP8) or a signature SEI (H264), and ffmpeg
// decodes the file without an error.
func TestWatchRecordsVerifiedFrames(t *testing.T) {
	lightTest(t)
	ffmpeg := ffmpegPath(t)
	bin := buildClient(t)
	for _, tc := range []struct {
		name, file string
		video      []string
		mime       string
	}{
		{"vp8", "rec.ivf", nil, media.VP8.MimeType},
		{"h264", "rec.h264", []string{"-video", "../mesh/media/testdata/short.h264"}, media.H264.MimeType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, url := startServer(t, tree.Config{SourceCapacity: 1})
			stream := "rec-" + tc.name
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, bcastErr := startBroadcast(t, ctx, bin, url, stream, nil, append([]string{"-capacity", "1"}, tc.video...)...)
			relay := exec.CommandContext(ctx, bin, "relay", "-server", url, "-stream", stream, "-capacity", "2", "-loopback-only")
			if err := relay.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cancel(); _ = relay.Wait() }()

			path := filepath.Join(t.TempDir(), tc.file)
			r := runWatch(t, bin, bcastErr, "-server", url, "-stream", stream, "-frames", "90", "-record", path)
			if !r.Verified || r.FramesVerified < 90 || r.FramesRejected != 0 {
				t.Fatalf("watch report %+v: want a verified stream", r)
			}

			format, _, err := framesig.FormatOf(tc.mime)
			if err != nil {
				t.Fatal(err)
			}
			rd, closer, err := media.OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer closer.Close()
			frames := 0
			for frames < r.Frames-1 { // the file's readers loop; the H264 one holds its last frame back
				f, err := rd.ReadFrame()
				if err != nil {
					t.Fatalf("frame %d of the recording: %v", frames, err)
				}
				if _, err := framesig.Parse(format, f.Data); !errors.Is(err, framesig.ErrUnsigned) {
					t.Fatalf("frame %d of the recording still carries its signature (parse: %v)", frames, err)
				}
				frames++
			}
			dec := exec.Command(ffmpeg, "-v", "error", "-i", path, "-f", "null", "-")
			msg, err := dec.CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(msg))) != 0 {
				t.Fatalf("ffmpeg decoding the recording: %v\n%s", err, msg)
			}
			t.Logf("%s: %d frames recorded and checked, ffmpeg decodes them cleanly (watch: %d frames, %d verified)",
				tc.file, frames, r.Frames, r.FramesVerified)
		})
	}
}
