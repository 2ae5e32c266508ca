#!/usr/bin/env bash
# govulncheck against a vulnerability database built locally from the
# golang.org/x/vulndb module (served by the module proxy), so it works where
# vuln.go.dev is unreachable. The database is built once per vulndb version
# (~1 min) and cached; later runs take ~30 s.
#
#   scripts/govulncheck.sh            # ./... of this module
#   VULNDB_VERSION=... scripts/govulncheck.sh   # a newer database
set -euo pipefail
cd "$(dirname "$0")/.."

VULNDB_VERSION=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
GOVULNCHECK_VERSION=${GOVULNCHECK_VERSION:-v1.9.0}
cache=${CANOPY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/canopy}
db="$cache/vulndb-$VULNDB_VERSION"

if [ ! -d "$db/index" ]; then
  echo "govulncheck: building the vulnerability database from golang.org/x/vulndb@$VULNDB_VERSION" >&2
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch" "$db.tmp"' EXIT
  (
    cd "$scratch"
    go mod init vulndbscratch >/dev/null 2>&1
    go get "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION" >/dev/null 2>&1
    osv="$(go env GOMODCACHE)/golang.org/x/vulndb@$VULNDB_VERSION/data/osv"
    [ -d "$osv" ] || go mod download "golang.org/x/vulndb@$VULNDB_VERSION"
    rm -rf "$db.tmp"
    go run golang.org/x/vulndb/cmd/indexdb -vulns "$osv" -out "$db.tmp"
  )
  mkdir -p "$cache"
  mv "$db.tmp" "$db"
fi

exec go run "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION" -db "file://$db" ./...
