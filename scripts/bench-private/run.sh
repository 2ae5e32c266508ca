#!/usr/bin/env bash
# Cost of private mode on the embedded TURN relay: N Go viewers of the demo
# stream watch it directly (host candidates) and then in private mode
# (relay candidates only, through the server's own TURN); the server's CPU
# (its demo source plus the TURN relay, one process) is sampled over the
# same window each time. The difference over N is the relay's CPU per
# private viewer at the demo's bitrate.
#
#   scripts/bench-private/run.sh [N viewers, default 10] [seconds, default 20]
#
# Loopback only: ports 19200 (HTTP) and 19201 (TURN).
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-10}"
secs="${2:-20}"
tmp="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/server" ./server
go build -o "$tmp/client" ./client
tck="$(getconf CLK_TCK)"

cpu() { # utime+stime of a process, in clock ticks
  awk '{print $14+$15}' "/proc/$1/stat"
}

measure() { # $1: direct|private
  local args=(-addr 127.0.0.1:19200 -turn-port 19201 -loopback-only -source-capacity $((n + 4)) -log-level warn)
  [ "$1" = private ] && args+=(-privacy relay)
  "$tmp/server" "${args[@]}" 2>"$tmp/server-$1.log" &
  local spid=$!
  for _ in $(seq 50); do curl -sf http://127.0.0.1:19200/api/streams | grep -q '"live":true' && break; sleep 0.2; done
  local pids=()
  for i in $(seq "$n"); do
    "$tmp/client" watch -server http://127.0.0.1:19200 -stream demo -frames 0 -timeout 0 -loopback-only -log-level error -json \
      >"$tmp/watch-$1-$i.out" 2>&1 &
    pids+=($!)
  done
  sleep 8 # everyone joined and playing
  local c0 t0 c1 t1
  c0="$(cpu "$spid")"; t0="$(date +%s.%N)"
  sleep "$secs"
  c1="$(cpu "$spid")"; t1="$(date +%s.%N)"
  local turn_allocs
  turn_allocs="$(curl -s http://127.0.0.1:19200/metrics | awk '/^canopy_turn_allocations /{print $2}')"
  kill -INT "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  kill -INT "$spid"; wait "$spid" 2>/dev/null || true
  # Each viewer's report (printed on interrupt): its bitrate and whether it was private.
  cat "$tmp"/watch-"$1"-*.out | awk -F'"bitrateKbps":' 'NF > 1 { split($2, b, ","); s += b[1]; k++ }
    /"private":true/ { p++ } END { printf "        %d viewers reported, %.0f kbit/s each on average, %d in private mode\n", k, (k ? s / k : 0), p }'
  awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v tck="$tck" -v mode="$1" -v n="$n" -v a="$turn_allocs" \
    'BEGIN { pct = (c1 - c0) / tck / (t1 - t0) * 100; printf "%-7s N=%d  server CPU %.1f %% of a core  (TURN allocations %s)\n", mode, n, pct, a; print pct > "/dev/stderr" }' \
    2>"$tmp/pct-$1"
}

measure direct
measure private
awk -v d="$(cat "$tmp/pct-direct")" -v p="$(cat "$tmp/pct-private")" -v n="$n" \
  'BEGIN { printf "TURN relay: %.2f %% of a core per private viewer -> about %d private viewers per TURN core\n", (p - d) / n, (p > d ? 100 / ((p - d) / n) : 0) }'
