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
#
# Environment: SERVERS (3), VIEWERS (9000), RATE (0: unpaced), CHURN (0),
# DURATION (10s), MEDIA (2), PORT (19200: server i listens on PORT+10i,
# its profiler on PORT+10i+1, its cluster routes on PORT+10i+2), SERVER_BIN
# and CLIENT_BIN (built from this tree if unset), SERVER_FLAGS.
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

"$CLIENT_BIN" load -server "$urls" -debug "$debugs" -stream demo \
	-viewers "$VIEWERS" -rate "$RATE" -churn "$CHURN" -duration "$DURATION" -media "$MEDIA" \
	-loopback-only "$@" || { status=$?; tail -n 20 "$tmp"/server*.log >&2; exit $status; }
