#!/usr/bin/env bash
# Load-test a cluster of Canopy servers on this machine: start N servers
# (3) forming one NATS cluster on loopback, the demo stream on the first
# (its owner), the limits raised as scripts/load.sh does, then run `client
# load` against all of them (peers spread round-robin over the servers,
# each server's /metrics read) and print what it measured. Extra arguments
# go to `client load`.
#
#   scripts/load-cluster.sh                        # 3 servers, 9 000 viewers unpaced
#   SERVERS=3 VIEWERS=9000 RATE=3000 scripts/load-cluster.sh -json
#   SERVERS=3 VIEWERS=54000 RATE=1500 DURATION=60s scripts/load-cluster.sh -join-timeout 180s
#
# An audience larger than one process's file limit (ulimit -Hn) is split
# over several `client load` processes run side by side (HARNESSES; by
# default as few as fit), each with its share of the viewers and of the
# rate, every one against every server, the real viewers in the first;
# their reports are printed one after another, then their sum (with jq).
#
# Environment: SERVERS (3), VIEWERS (9000), RATE (0: unpaced), CHURN (0),
# DURATION (10s), MEDIA (2), HARNESSES, PORT (19200: server i listens on
# PORT+10i, its profiler on PORT+10i+1, its cluster routes on PORT+10i+2),
# SERVER_BIN and CLIENT_BIN (built from this tree if unset), SERVER_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS=${SERVERS:-3}
VIEWERS=${VIEWERS:-9000}
RATE=${RATE:-0}
CHURN=${CHURN:-0}
DURATION=${DURATION:-10s}
MEDIA=${MEDIA:-2}
PORT=${PORT:-19200}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
limit=$(ulimit -n)
[ "$limit" = unlimited ] && limit=1000000
# Each process keeps ~1 000 descriptors for everything but its viewers.
per=$((limit - 1000))
HARNESSES=${HARNESSES:-$(((VIEWERS + per - 1) / per))}
[ "$HARNESSES" -ge 1 ] || HARNESSES=1
if [ $((VIEWERS / HARNESSES)) -gt "$per" ] || [ $((VIEWERS / SERVERS)) -gt "$per" ]; then
	echo "load-cluster.sh: $VIEWERS viewers over $SERVERS servers and $HARNESSES harnesses exceed the file limit of $limit per process (ulimit -Hn)" >&2
	exit 1
fi

tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
if [ -z "${SERVER_BIN:-}" ]; then
	go build -o "$tmp/server" ./server
	SERVER_BIN=$tmp/server
fi
if [ -z "${CLIENT_BIN:-}" ]; then
	go build -o "$tmp/client" ./client
	CLIENT_BIN=$tmp/client
fi

routes=""
for i in $(seq 0 $((SERVERS - 1))); do
	routes="$routes${routes:+,}nats://127.0.0.1:$((PORT + 10 * i + 2))"
done
urls="" debugs=""
for i in $(seq 0 $((SERVERS - 1))); do
	base=$((PORT + 10 * i))
	demo=false
	[ "$i" = 0 ] && demo=true
	# shellcheck disable=SC2086
	"$SERVER_BIN" -addr "127.0.0.1:$base" -debug-addr "127.0.0.1:$((base + 1))" -loopback-only -turn=false \
		-log-level warn -max-conns-per-ip -1 -join-rate -1 -max-http-conns-per-ip -1 -max-http-conns -1 \
		-max-peers -1 -demo="$demo" -server-id "s$((i + 1))" -cluster-name load -cluster-listen "127.0.0.1:$((base + 2))" \
		-routes "$routes" -store-dir "$tmp/store$i" ${SERVER_FLAGS:-} 2>"$tmp/server$i.log" &
	pids+=($!)
	urls="$urls${urls:+,}http://127.0.0.1:$base"
	debugs="$debugs${debugs:+,}http://127.0.0.1:$((base + 1))"
done
for _ in $(seq 600); do
	curl -fs "http://127.0.0.1:$PORT/readyz?stream=demo" >/dev/null 2>&1 && break
	sleep 0.1
done
for i in $(seq 0 $((SERVERS - 1))); do
	for _ in $(seq 600); do
		curl -fs "http://127.0.0.1:$((PORT + 10 * i))/healthz" >/dev/null 2>&1 && break
		sleep 0.1
	done
done

if [ "$HARNESSES" = 1 ]; then
	"$CLIENT_BIN" load -server "$urls" -debug "$debugs" -stream demo \
		-viewers "$VIEWERS" -rate "$RATE" -churn "$CHURN" -duration "$DURATION" -media "$MEDIA" \
		-loopback-only "$@" || { status=$?; tail -n 20 "$tmp"/server*.log >&2; exit $status; }
	exit 0
fi

hpids=()
for h in $(seq 0 $((HARNESSES - 1))); do
	n=$((VIEWERS / HARNESSES))
	[ "$h" = 0 ] && n=$((VIEWERS - (HARNESSES - 1) * n))
	media=0
	[ "$h" = 0 ] && media=$MEDIA
	rate=$(awk -v r="$RATE" -v h="$HARNESSES" 'BEGIN { print r / h }')
	"$CLIENT_BIN" load -server "$urls" -debug "$debugs" -stream demo \
		-viewers "$n" -rate "$rate" -churn "$CHURN" -duration "$DURATION" -media "$media" \
		-loopback-only -json "$@" >"$tmp/harness$h.json" 2>"$tmp/harness$h.log" &
	hpids+=($!)
done
status=0
for h in $(seq 0 $((HARNESSES - 1))); do
	wait "${hpids[$h]}" || { echo "harness $h failed ($?):" >&2; tail -n 20 "$tmp/harness$h.log" >&2; status=1; }
done
for h in $(seq 0 $((HARNESSES - 1))); do
	echo "== harness $h"
	cat "$tmp/harness$h.json"
done
if command -v jq >/dev/null; then
	echo "== all $HARNESSES harnesses"
	jq -s -r '
		"viewers: \(map(.placed) | add)/\(map(.viewers) | add) placed, \(map(.unplaced) | add) without a parent at the end",
		"joins/s: \((map(.placed) | add) / (map(.rampSeconds) | max) | floor) (the slowest harness ramped in \(map(.rampSeconds) | max) s)",
		"join → parent: p50 \(map(.join.p50Ms) | max) ms, p99 \(map(.join.p99Ms) | max) ms, max \(map(.join.maxMs) | max) ms (the worst harness of each)",
		"re-parent: p99 \(map(.reparent.p99Ms) | max) ms; churned \(map(.churned) | add)",
		"errors: \([.[].errors[]?] | group_by(.code) | map("\(.[0].code) \(map(.count) | add)") | join(", "))",
		(.[0].servers[] | "server \(.server): \(.heapStackPerConnKB * 10 | floor / 10) KB/conn heap+stacks, \(.rssPerConnKB * 10 | floor / 10) KB/conn RSS over \(.conns) conns; CPU \(.rampCPUCores * 100 | floor / 100) cores joining, \(.cpuPerJoinUs | floor) µs per connection"),
		(.[0].media[]? | "media \(.peer): \(.frames) complete frames (\(.framesHeld) while holding), depth \(.depth)")
	' "$tmp"/harness*.json
fi
[ "$status" = 0 ] || tail -n 20 "$tmp"/server*.log >&2
exit "$status"
