#!/usr/bin/env bash
# make-clip.sh — regenerate server/testdata/ttff_gop10s.ivf, the clip the
# Chromium time-to-first-frame measurement (server/ttff_chromium_test.go)
# plays: 10 s of VP8 with a single keyframe, so that looped it is a source
# with a fixed 10 s GOP. Needs ffmpeg with libvpx; the output is committed.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/server/testdata/ttff_gop10s.ivf"
mkdir -p "$(dirname "$out")"
# Same picture as the demo (testsrc2 + a box sweeping once per loop), 600 kbps,
# one keyframe (-g 300 over 300 frames); realtime, no alt-ref: every IVF frame
# is a shown frame.
ffmpeg -hide_banner -loglevel error -y -f lavfi \
	-i "testsrc2=size=640x360:rate=30[bg];color=c=white:size=32x32:rate=30[box];[bg][box]overlay=x='(W-w)*t/10':y=H-40:shortest=1" \
	-t 10 -c:v libvpx -b:v 600k -minrate 600k -maxrate 600k -bufsize 600k \
	-g 300 -keyint_min 300 -deadline realtime -cpu-used 8 -auto-alt-ref 0 -lag-in-frames 0 \
	-pix_fmt yuv420p -f ivf "$out"
ls -l "$out"
