#!/usr/bin/env bash
# deploy/compose.yaml's topology as local processes on loopback, no Docker needed:
# Dask scheduler + 2 workers, 2 tile replicas, the dashboard, nginx with deploy/nginx.conf.
#   deploy/run-local.sh --catalog-from .cache/demo/catalog.sqlite [--port 8080] [--data-dir DIR]
# Needs nginx on PATH. Ctrl-C stops every process. See deploy/local_topology.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "${PYTHON:-$root/.venv/bin/python}" "$root/deploy/local_topology.py" "$@"
