#!/usr/bin/env bash
# Build the EO Explorer image (deploy/Dockerfile) on this machine, with Docker when an engine
# answers, else with podman (rootful, vfs storage, chroot isolation: works without a Docker
# engine, overlayfs or cgroups). The build runs the image's smoke test (deploy/smoke.py), so a
# broken image fails here.
#
# The base image (debian:bookworm-slim) is taken from the engine's store, else pulled, else,
# when no image registry is reachable, made from Debian's package archive with
# `debootstrap --variant=minbase bookworm` and imported under the same name.
#
#   deploy/build-local.sh                    # -> eoexplorer:latest
#   deploy/build-local.sh --demo             # with the demo data in /data (downloads from PyPI)
#   deploy/build-local.sh --tag eox:dev --engine podman --base-only
#   deploy/build-local.sh --dockerfile /tmp/Dockerfile.variant   (same context: the repo)
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), EOX_PODMAN_STORAGE
# (podman's storage driver, default vfs), EOX_BUILD_CA (default $PIP_CERT): a CA bundle the
# build's pip must trust, for hosts behind a TLS-intercepting proxy (podman only; mounted
# for the RUN steps, never stored in the image).
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=eoexplorer:latest
BASE=debian:bookworm-slim
DEMO=0
ENGINE=""
BASE_ONLY=0
DOCKERFILE=deploy/Dockerfile
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --demo) DEMO=1; shift ;;
    --engine) ENGINE="$2"; shift 2 ;;
    --base-only) BASE_ONLY=1; shift ;;
    --dockerfile) DOCKERFILE="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-local: unknown option $1 (valid: --tag NAME, --demo, --engine docker|podman, --base-only, --dockerfile PATH)" >&2
       exit 2 ;;
  esac
done

if [ -z "$ENGINE" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null; then ENGINE=podman
  else
    echo "build-local: no container engine: install Docker, or podman (apt-get install podman)" >&2
    exit 1
  fi
fi
case "$ENGINE" in
  docker) CLI=(docker) ;;
  podman) CLI=(podman --storage-driver="${EOX_PODMAN_STORAGE:-vfs}") ;;
  *) echo "build-local: unknown engine $ENGINE (valid: docker, podman)" >&2; exit 2 ;;
esac

# The stand-in of the official debian:bookworm-slim: minbase, the same apt sources
# (bookworm, -updates, -security), no apt lists.
make_base() {
  local mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}" root
  command -v debootstrap >/dev/null || {
    echo "build-local: cannot pull $BASE and debootstrap is missing (apt-get install debootstrap)" >&2
    exit 1
  }
  [ "$(id -u)" -eq 0 ] || { echo "build-local: debootstrap needs root" >&2; exit 1; }
  root="$(mktemp -d /var/tmp/eox-base.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  echo "build-local: making $BASE with debootstrap from $mirror"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
  rm -f "$root.log" "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  chmod 755 "$root"  # mktemp's 0700 would become the image's / (no one but root gets in)
  tar --numeric-owner -C "$root" -c . \
    | "${CLI[@]}" import --change 'CMD ["bash"]' - "docker.io/library/$BASE" >/dev/null
  rm -rf "$root"
  trap - EXIT
}

if "${CLI[@]}" image inspect "$BASE" >/dev/null 2>&1; then
  echo "build-local: using $BASE from the $ENGINE store"
elif timeout 120 "${CLI[@]}" pull -q "docker.io/library/$BASE" >/dev/null 2>&1; then
  echo "build-local: pulled $BASE"
else
  make_base
fi
[ "$BASE_ONLY" -eq 1 ] && exit 0

echo "build-local: building $TAG with $ENGINE (demo data: $([ $DEMO -eq 1 ] && echo yes || echo no))"
# a new EOX_SMOKE_ID makes the smoke test run again even when every other layer is cached
build=(build -f "$DOCKERFILE" -t "$TAG" --build-arg "BASE_IMAGE=$BASE" --build-arg "EOX_DEMO=$DEMO"
       --build-arg "EOX_SMOKE_ID=$(date +%s%N)")
if [ "$ENGINE" = podman ]; then
  # docker format keeps HEALTHCHECK (OCI has no such field); the base is local: never pull
  build+=(--isolation=chroot --format docker --pull=never)
fi
CA="${EOX_BUILD_CA:-${PIP_CERT:-}}"
if [ -n "$CA" ]; then
  [ "$ENGINE" = podman ] || { echo "build-local: EOX_BUILD_CA needs --engine podman" >&2; exit 2; }
  # the Dockerfile points pip at /run/eox-build/pip.conf (pip ignores it when absent)
  cadir="$(mktemp -d)"
  trap 'rm -rf "$cadir"' EXIT
  cp "$CA" "$cadir/ca.crt"
  printf '[global]\ncert = /run/eox-build/ca.crt\n' >"$cadir/pip.conf"
  chmod -R a+rX "$cadir"
  build+=(--volume "$cadir:/run/eox-build:ro")
fi
"${CLI[@]}" "${build[@]}" .
"${CLI[@]}" image inspect "$TAG" --format 'build-local: built {{.Id}} ({{.Size}} bytes)'
