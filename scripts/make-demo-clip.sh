#!/usr/bin/env bash
# make-demo-clip.sh — regenerate the looped demo clip embedded in the server
# (mesh/media/demo) and the tiny test inputs of mesh/media (mesh/media/testdata).
#
# Needs ffmpeg with libvpx, libopus and libx264. The outputs are committed, so
# nothing at build or test time needs ffmpeg; run this only to change the clip.
#
#   scripts/make-demo-clip.sh            # writes into the repository
#   SECONDS_LONG=20 scripts/make-demo-clip.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
demo="$root/mesh/media/demo"
testdata="$root/mesh/media/testdata"
secs="${SECONDS_LONG:-10}"
mkdir -p "$demo" "$testdata"

ff=(ffmpeg -hide_banner -loglevel error -y)

# Opus always encodes a 312-sample pre-skip, so an input of exactly
# secs*48000-312 samples encodes to secs*50 packets of 20 ms. The audio loop is
# then exactly as long as the video loop and audio/video never drift apart
# however many times the clip repeats.
opus_samples() { echo $(( $1 * 48000 - 312 )); }

# Video: testsrc2 has moving parts (and a clock), plus a white box that sweeps
# across the bottom once per loop so a frozen picture is obvious at a glance.
# Keyframe every 2 s (-g 60) so a viewer joining mid-loop waits at most 2 s;
# realtime deadline and no alt-ref frames so every IVF frame is a shown frame.
# -minrate/-maxrate keep the size predictable: ~500 kbps x secs.
make_vp8() { # out secs size bitrate gop
	"${ff[@]}" -f lavfi \
		-i "testsrc2=size=$3:rate=30[bg];color=c=white:size=32x32:rate=30[box];[bg][box]overlay=x='(W-w)*t/$2':y=H-40:shortest=1" \
		-t "$2" -c:v libvpx -b:v "$4" -minrate "$4" -maxrate "$4" -bufsize "$4" \
		-g "$5" -keyint_min "$5" -deadline realtime -cpu-used 8 -auto-alt-ref 0 -lag-in-frames 0 \
		-pix_fmt yuv420p -f ivf "$1"
}

# Audio: a quiet 440 Hz tone with an 880 Hz beep at the top of every second,
# so a listener hears that the stream is live. 48 kHz stereo, ~32 kbps
# (constrained VBR: plain VBR spends ~50 kbps on this pure tone).
make_opus() { # out secs
	"${ff[@]}" -f lavfi -i "sine=frequency=440:beep_factor=2:sample_rate=48000,volume=0.3,atrim=end_sample=$(opus_samples "$2")" \
		-ac 2 -c:a libopus -b:a 32k -vbr constrained -frame_duration 20 -application audio \
		-page_duration 100000 -f ogg "$1"
}

# H264: baseline, keyframe every 15 frames; libx264 repeats SPS/PPS before each
# IDR in a raw Annex-B stream, which is what a relay joining mid-stream needs.
make_h264() { # out secs size gop
	"${ff[@]}" -f lavfi -i "testsrc2=size=$3:rate=30" -t "$2" \
		-c:v libx264 -profile:v baseline -preset veryfast -tune zerolatency \
		-x264-params "keyint=$4:min-keyint=$4:scenecut=0" -b:v 300k -pix_fmt yuv420p \
		-f h264 "$1"
}

make_vp8 "$demo/demo.ivf" "$secs" 640x360 500k 60
make_opus "$demo/demo.ogg" "$secs"

make_vp8 "$testdata/short.ivf" 1 320x180 200k 15
make_h264 "$testdata/short.h264" 1 320x180 15
make_opus "$testdata/short.ogg" 1

ls -l "$demo"/demo.* "$testdata"/short.*
total=$(( $(stat -c %s "$demo/demo.ivf") + $(stat -c %s "$demo/demo.ogg") ))
echo "demo clip: $total bytes"
if (( total > 1048576 )); then
	echo "demo clip is over 1 MB; lower the bitrate or SECONDS_LONG" >&2
	exit 1
fi
