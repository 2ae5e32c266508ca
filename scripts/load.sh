#!/usr/bin/env bash
# Load-test one Canopy server on this machine: start it with the per-address
# and server-wide limits raised for a load run, wait for its demo stream,
# then run `client load` against it (a simulated audience plus real pion
# viewers) and print what it measured. Extra arguments go to `client load`.
#
#   scripts/load.sh                                   # 10 000 viewers at 5 000 joins/s
#   VIEWERS=10000 CHURN=30%/min DURATION=60s scripts/load.sh
#   SERVER_BIN=/tmp/old-server scripts/load.sh -json  # another build of the server
#
# Environment: VIEWERS (10000), RATE (5000; 0 unpaced), CHURN (0), DURATION
# (10s), MEDIA (2), PORT (19100; the profiler listens on PORT+1), SERVER_BIN
# and CLIENT_BIN (built from this tree if unset), SERVER_FLAGS (more flags).
set -euo pipefail
cd "$(dirname "$0")/.."

VIEWERS=${VIEWERS:-10000}
RATE=${RATE:-5000}
CHURN=${CHURN:-0}
DURATION=${DURATION:-10s}
MEDIA=${MEDIA:-2}
PORT=${PORT:-19100}
DEBUG_PORT=$((PORT + 1))

# Every connection is a file descriptor in the server and in the harness:
# raise the soft limit as far as the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
limit=$(ulimit -n)
if [ "$limit" != unlimited ] && [ "$VIEWERS" -gt $((limit - 500)) ]; then
	echo "load.sh: $VIEWERS viewers need more than the file limit of $limit per process (ulimit -Hn); split them over servers" >&2
	exit 1
fi

tmp=$(mktemp -d)
trap 'kill "$server_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
if [ -z "${SERVER_BIN:-}" ]; then
	go build -o "$tmp/server" ./server
	SERVER_BIN=$tmp/server
fi
if [ -z "${CLIENT_BIN:-}" ]; then
	go build -o "$tmp/client" ./client
	CLIENT_BIN=$tmp/client
fi

# The limits a public server keeps (256 connections and 20 joins/s per
# address, 20 000 peers) would refuse a whole audience coming from a few
# loopback addresses; a load run lifts them. TURN is off: no peer here
# needs a relay, and each welcome would carry fresh credentials.
# shellcheck disable=SC2086
"$SERVER_BIN" -addr "127.0.0.1:$PORT" -debug-addr "127.0.0.1:$DEBUG_PORT" -loopback-only -turn=false \
	-log-level warn -max-conns-per-ip -1 -join-rate -1 -max-http-conns-per-ip -1 -max-http-conns -1 \
	-max-peers -1 ${SERVER_FLAGS:-} 2>"$tmp/server.log" &
server_pid=$!
for _ in $(seq 100); do
	curl -fs "http://127.0.0.1:$PORT/readyz?stream=demo" >/dev/null 2>&1 && break
	sleep 0.1
done

"$CLIENT_BIN" load -server "http://127.0.0.1:$PORT" -debug "http://127.0.0.1:$DEBUG_PORT" -stream demo \
	-viewers "$VIEWERS" -rate "$RATE" -churn "$CHURN" -duration "$DURATION" -media "$MEDIA" \
	-loopback-only "$@"
