#!/usr/bin/env bash
# Install the system programs the test suite runs for real: Mosquitto, PostgreSQL and Chromium (Debian).
# As root, installs what is missing; otherwise stops with a message naming what to install.
set -euo pipefail
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the dashboard's browser test (Playwright drives it)
command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)  # report PDFs read back as text
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${missing[*]} — install them (e.g. sudo apt-get install ${missing[*]}) and rerun" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts packaged services on install; the tests start their own on ports of their own.
systemctl disable --now mosquitto postgresql >/dev/null 2>&1 || true
service mosquitto stop >/dev/null 2>&1 || true
