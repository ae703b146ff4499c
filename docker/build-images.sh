#!/usr/bin/env bash
# Build every image of the compose deployment locally, from Debian packages, one at a time:
#   wattproof-local/base       debootstrap --variant=minbase of the machine's Debian mirror, `docker import`
#   wattproof-local/app        docker/Dockerfile (python3 + the project): ingest, audit, anchor, dashboard, simulator
#   wattproof-local/mosquitto  docker/images/mosquitto.Dockerfile (Debian's mosquitto)
#   wattproof-local/postgres   docker/images/postgres.Dockerfile (Debian's PostgreSQL 15; TimescaleDB is not in Debian)
#   wattproof-local/fabric     docker/images/fabric.Dockerfile (peer, orderer, osnadmin, configtxgen, cryptogen
#                              built from the Go module proxy by ledger/fabric/build-binaries.sh)
#   wattproof-local/chaincode  docker/images/chaincode.Dockerfile (the chaincode binary built by the same script)
# Each tag is a hash of the image's inputs; an image already present is not rebuilt. Prints, on stdout,
# the variables compose.yaml reads (WATTPROOF_*_IMAGE=…), one per line; progress goes to stderr.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export DOCKER_BUILDKIT=0   # the legacy builder: Debian's docker.io has no buildx; --network host works with it
SUITE=bookworm
MIRROR=${WATTPROOF_DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
say() { echo "[build-images] $*" >&2; }
hash_of() { sha256sum | cut -c1-16; }
present() { docker image inspect "$1" >/dev/null 2>&1; }

# --- base -------------------------------------------------------------------------------------------
base_tag=wattproof-local/base:$(printf '%s\n' "$SUITE" "$MIRROR" "minbase-v1" | hash_of)
if ! present "$base_tag"; then
  command -v debootstrap >/dev/null || { say "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
  work=$(mktemp -d /var/tmp/wattproof-base.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  say "debootstrap --variant=minbase $SUITE from $MIRROR"
  t0=$(date +%s)
  debootstrap --variant=minbase "$SUITE" "$work/root" "$MIRROR" >"$work/log" 2>&1 \
    || { tail -n 20 "$work/log" >&2; exit 1; }
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" >"$work/root/etc/apt/sources.list"
  rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
  tar -C "$work/root" -c . | docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' - "$base_tag" >/dev/null
  rm -rf "$work"; trap - EXIT
  say "base image $base_tag in $(( $(date +%s) - t0 )) s"
fi

# --- the others: docker build from a staged context (only what the image needs) ------------------------
# build NAME DOCKERFILE PATHS...: the context is a tar of PATHS (relative to the repository) + the Dockerfile;
# the tag is the hash of that tar and the base tag.
build() {
  local name=$1 dockerfile=$2; shift 2
  local ctx; ctx=$(mktemp /var/tmp/wattproof-ctx.XXXXXX)
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
      --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
      --transform "s|^${dockerfile}\$|Dockerfile|" -cf "$ctx" "$dockerfile" "$@"
  local tag="wattproof-local/$name:$( { echo "$base_tag"; cat "$ctx"; } | hash_of)"
  if ! present "$tag"; then
    say "building $tag"
    local t0; t0=$(date +%s)
    docker build --network host --build-arg "BASE_IMAGE=$base_tag" --build-arg "BUILD_CA_PEM=$build_ca" \
      -t "$tag" - <"$ctx" >&2 \
      || { rm -f "$ctx"; say "building $name failed"; exit 1; }
    say "$name built in $(( $(date +%s) - t0 )) s"
    # older builds of this image: with the vfs driver each costs its full size on disk
    docker image ls "wattproof-local/$name" --format '{{.Repository}}:{{.Tag}}' | grep -vx "$tag" \
      | xargs -r docker rmi >/dev/null 2>&1 || true
  fi
  rm -f "$ctx"
  echo "$tag"
}

# CA certificates this machine adds (a TLS-inspecting network): the builds' downloads must trust them
build_ca=$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true)
bash ledger/fabric/build-binaries.sh >&2   # Fabric and chaincode binaries into .cache/fabric (once)
fabric_bins=.cache/fabric/v2.5.9
mosquitto=$(build mosquitto docker/images/mosquitto.Dockerfile)
postgres=$(build postgres docker/images/postgres.Dockerfile docker/images/postgres-entrypoint.sh)
fabric=$(build fabric docker/images/fabric.Dockerfile "$fabric_bins/bin" "$fabric_bins/config")
chaincode=$(build chaincode docker/images/chaincode.Dockerfile .cache/fabric/chaincode/wattproof-cc)
# the project as a wheel with the Rust library inside (the host's cargo; the base image is the same Debian),
# staged as docker/dist/ of the app's context (SOURCE_DATE_EPOCH: the same code gives the same wheel, so the
# same tag and no rebuild)
wheel_dir=$root/.cache/docker-wheel
rm -rf "$wheel_dir" && mkdir -p "$wheel_dir/docker/dist"
SOURCE_DATE_EPOCH=315532800 CARGO_TARGET_DIR="$root/.cache/native-wheel" WATTPROOF_REQUIRE_NATIVE=1 \
  "${PYTHON:-$root/.venv/bin/python}" -m pip wheel -q --no-deps -w "$wheel_dir/docker/dist" . >&2
app=$(build app docker/Dockerfile docker/requirements.image.lock pyproject.toml README.md setup.py MANIFEST.in \
      wattproof device firmware_sim ingest audit ledger dashboard -C "$wheel_dir" docker/dist)
cat <<VARS
WATTPROOF_IMAGE=$app
WATTPROOF_MOSQUITTO_IMAGE=$mosquitto
WATTPROOF_POSTGRES_IMAGE=$postgres
WATTPROOF_FABRIC_ORDERER_IMAGE=$fabric
WATTPROOF_FABRIC_PEER_IMAGE=$fabric
WATTPROOF_FABRIC_TOOLS_IMAGE=$fabric
WATTPROOF_CHAINCODE_IMAGE=$chaincode
VARS
