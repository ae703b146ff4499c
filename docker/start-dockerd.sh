#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine, for the deployment test (tests/test_compose_deploy.py).
# If none does: as root, install Debian's docker.io (and debootstrap, for the base image) when missing,
# then start dockerd as these machines allow it: the vfs storage driver (no overlayfs inside the sandbox)
# and --iptables=false (no netfilter; containers reach each other on user-defined networks, and image
# builds use --network host). Prints "started <pid>" when it started the daemon, nothing otherwise.
set -euo pipefail
log=${WATTPROOF_DOCKERD_LOG:-/var/log/wattproof-dockerd.log}
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "no Docker engine answers and this is not root: start dockerd (vfs, --iptables=false) and rerun" >&2
  exit 1
fi
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
setsid dockerd --storage-driver vfs --iptables=false --ip-masq=false \
  >>"$log" 2>&1 </dev/null &
pid=$!
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then echo "started $pid"; exit 0; fi
  kill -0 "$pid" 2>/dev/null || { echo "dockerd exited; last lines of $log:" >&2; tail -n 15 "$log" >&2; exit 1; }
  sleep 0.5
done
echo "dockerd did not answer within 60 s; last lines of $log:" >&2
tail -n 15 "$log" >&2
exit 1
