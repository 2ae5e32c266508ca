#!/usr/bin/env bash
# Churn soak with real peers (README "Many servers", churn soak): build the
# server and client, then `client soak`: 3 servers on embedded NATS forming
# one cluster on loopback, a Go source, PEERS real `client watch` viewers
# (pion, ICE on loopback; a share of them forwarding) that join, leave
# gracefully and crash (SIGKILL) at CHURN for DURATION, optionally SIM
# simulated signaling-only viewers on a second stream. It prints the
# viewers' stalls, frames received against expected, re-parents, peers
# without a parent, the servers' goroutines and RSS over time, and exits
# non-zero when a bound broke. Extra arguments go to `client soak`.
#
#   scripts/soak.sh                          # 10 minutes, 50 peers, 30 %/min
#   DURATION=60s PEERS=12 CHURN=100%/min scripts/soak.sh
#   SIM=2000 scripts/soak.sh -json
#
# Environment: DURATION (10m), PEERS (50), CHURN (30%/min), SIM (0),
# SERVER_BIN and CLIENT_BIN (built from this tree if unset), DIR (keep
# logs there; by default a temporary directory, kept only on failure).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10m}
PEERS=${PEERS:-50}
CHURN=${CHURN:-30%/min}
SIM=${SIM:-0}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "${SERVER_BIN:-}" ]; then
	go build -o "$tmp/server" ./server
	SERVER_BIN=$tmp/server
fi
if [ -z "${CLIENT_BIN:-}" ]; then
	go build -o "$tmp/client" ./client
	CLIENT_BIN=$tmp/client
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$CLIENT_BIN" soak -server-bin "$SERVER_BIN" -duration "$DURATION" -peers "$PEERS" -churn "$CHURN" \
	-sim "$SIM" ${DIR:+-dir "$DIR"} "$@"
