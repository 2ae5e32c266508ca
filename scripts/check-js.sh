#!/usr/bin/env bash
# Type-checks the browser client (static/: plain ES modules with JSDoc types,
# tsc --checkJs; the relay worker against the webworker lib) and runs its
# unit tests (node's test runner, static/test/).
# TypeScript is installed once into a cache directory, outside the repo.
set -euo pipefail
cd "$(dirname "$0")/.."

TS_VERSION="${TS_VERSION:-5.9.3}"
cache="${CANOPY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/canopy-tools}/typescript-$TS_VERSION"
tsc="$cache/node_modules/.bin/tsc"
if [ ! -x "$tsc" ]; then
  mkdir -p "$cache"
  npm install --prefix "$cache" --no-save --no-audit --no-fund --loglevel=error "typescript@$TS_VERSION" >/dev/null
fi

status=0
echo "tsc $("$tsc" --version | awk '{print $2}') --checkJs static/"
"$tsc" -p static/tsconfig.json || status=1
# The pass-through relay's worker runs in a worker scope: its own lib.
"$tsc" -p static/tsconfig.worker.json || status=1

node --test static/test/ || status=1
exit $status
