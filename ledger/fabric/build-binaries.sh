#!/usr/bin/env bash
# Build Hyperledger Fabric's own binaries (peer, orderer, osnadmin, configtxgen, cryptogen) from the Go
# module proxy into .cache/fabric/<version>/bin, once; later runs reuse them. Also builds our chaincode
# (ledger/chaincode) into .cache/fabric/chaincode/ when its sources changed.
#
# Why not `go install github.com/hyperledger/fabric/cmd/peer@<tag>`: Fabric's module path has no /v2
# suffix, and the proxy reachable here serves only v2.5.9 (as the pseudo-version below; v3.1.5 and
# v2.5.16 answer 403), with no sum-DB entry. Building it as a dependency of a throw-away module works.
set -euo pipefail
FABRIC_VERSION=v2.5.9
FABRIC_PSEUDO=v0.0.0-20240618194258-7c3876255bf0   # = tag v2.5.9 (commit 7c3876255bf0)
root=$(cd "$(dirname "$0")/../.." && pwd)
bindir="$root/.cache/fabric/$FABRIC_VERSION/bin"
export GONOSUMDB=github.com/hyperledger GOFLAGS=-buildvcs=false GOTOOLCHAIN=local CGO_ENABLED=0
command -v go >/dev/null || { echo "go is needed to build Fabric (Debian: golang)" >&2; exit 1; }

ok=1
for b in peer orderer osnadmin configtxgen cryptogen; do [ -x "$bindir/$b" ] || ok=0; done
if [ "$ok" = 0 ] || [ ! -f "$bindir/.built" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "building Fabric $FABRIC_VERSION binaries into $bindir (first run only, ~2-4 min)…"
  (cd "$work" && go mod init fabricbuild >/dev/null 2>&1 \
     && go mod edit -require="github.com/hyperledger/fabric@$FABRIC_PSEUDO" \
     && go build -mod=mod -o "$bindir/" \
          github.com/hyperledger/fabric/cmd/peer github.com/hyperledger/fabric/cmd/orderer \
          github.com/hyperledger/fabric/cmd/osnadmin github.com/hyperledger/fabric/cmd/configtxgen \
          github.com/hyperledger/fabric/cmd/cryptogen)
  # sampleconfig (core.yaml, orderer.yaml, configtx.yaml, msp) from the module cache
  src=$(cd "$work" && go list -mod=mod -m -f '{{.Dir}}' github.com/hyperledger/fabric)
  rm -rf "$bindir/../config" && cp -r "$src/sampleconfig" "$bindir/../config" && chmod -R u+w "$bindir/../config"
  "$bindir/peer" version | head -3
  touch "$bindir/.built"
fi

# the chaincode (chaincode-as-a-service binary), rebuilt when its sources change
cc="$root/ledger/chaincode"
if [ -f "$cc/go.mod" ]; then
  out="$root/.cache/fabric/chaincode/wattproof-cc"
  sum=$(cd "$cc" && find . -name '*.go' -o -name go.mod -o -name go.sum | sort | xargs cat | sha256sum | cut -c1-16)
  if [ ! -x "$out" ] || [ "$(cat "$out.src" 2>/dev/null)" != "$sum" ]; then
    echo "building chaincode into $out"
    mkdir -p "$(dirname "$out")"
    (cd "$cc" && go build -mod=mod -o "$out" .)
    echo "$sum" > "$out.src"
  fi
fi
