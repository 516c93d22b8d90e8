#!/usr/bin/env bash
# Install the Debian packages the test suite needs: Chromium (driven by Playwright in tests/ui)
# and its driver; nginx for tests/deploy (the compose topology run as local processes) and for
# the remote-COG tests, openssl for their self-signed HTTPS certificate.
# Idempotent: does nothing when they are already there.
# --image: also podman and debootstrap, for `make image` / `make test-image` on a machine
# without a Docker engine (not needed by `make test`).
set -euo pipefail
packages=(chromium chromium-driver nginx-light openssl)
[ "${1:-}" = --image ] && packages+=(podman debootstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "install-system-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-system-deps: installed ${missing[*]}"
