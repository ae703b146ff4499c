#!/usr/bin/env bash
# Build the Docker Compose v2 CLI from the Go module proxy into .cache/compose (once), so the test
# suite can check docker/compose.yaml with `docker compose config` on machines with no Docker engine.
# (Compose's go.mod has exclude directives, so `go install …@version` is refused: build it as a
# dependency of a throw-away module instead.)
set -euo pipefail
VERSION=v2.40.3
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/.cache/compose/docker-compose"
stamp="$out.$VERSION"
if [ -x "$out" ] && [ -f "$stamp" ] && "$out" version >/dev/null 2>&1; then exit 0; fi
command -v go >/dev/null || { echo "go is needed to build the compose CLI (Debian: golang)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init composebuild >/dev/null 2>&1
go mod edit -require="github.com/docker/compose/v2@$VERSION"
echo "building docker compose $VERSION (first run only)…"
CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -mod=mod -o "$out" github.com/docker/compose/v2/cmd
touch "$stamp"
