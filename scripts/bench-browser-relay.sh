#!/usr/bin/env bash
# bench-browser-relay.sh — CPU of a relaying Chromium tab, pass-through
# against re-encode, in one run (server/browser_relay_cpu_test.go): a Go
# source publishes a 720p VP8 clip (made here with ffmpeg, 2.5 Mbps, 30 fps,
# a keyframe every 2 s) to Chromium R, which relays to Chromium C; R's whole
# browser process tree is measured over the same window in each mode.
#
#	scripts/bench-browser-relay.sh [window, default 20s] [size, default 1280x720]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
window="${1:-20s}"
size="${2:-1280x720}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
clip="$tmp/clip.ivf"
ffmpeg -hide_banner -loglevel error -y -f lavfi \
	-i "testsrc2=size=$size:rate=30[bg];color=c=white:size=64x64:rate=30[box];[bg][box]overlay=x='(W-w)*t/10':y=H-80:shortest=1" \
	-t 10 -c:v libvpx -b:v 2500k -minrate 2500k -maxrate 2500k -bufsize 2500k -g 60 \
	-deadline realtime -cpu-used 8 -auto-alt-ref 0 -lag-in-frames 0 -pix_fmt yuv420p -f ivf "$clip"
cd "$root"
CANOPY_RELAY_CPU="$window" CANOPY_RELAY_CPU_CLIP="$clip" \
	go test ./server -run TestBrowserRelayCPU -v -count=1 -timeout 10m | grep -E 'relaying Chromium|^(---|ok|FAIL)'
