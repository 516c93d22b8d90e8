"""The image's HEALTHCHECK: healthy when `eoexplorer serve` (EOX_PORT, 5006) or
`eoexplorer tiles` (EOX_TILES_PORT, 8000) answers GET /healthz on loopback within 5 s.

Usage: python /opt/eox/healthcheck.py [PORT ...]   (ports given replace the two defaults)
"""

from __future__ import annotations

import os
import sys
import urllib.request


def healthy(port: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def main(argv: list[str]) -> int:
    ports = argv or [os.environ.get("EOX_PORT", "5006"), os.environ.get("EOX_TILES_PORT", "8000")]
    if any(healthy(p) for p in ports):
        return 0
    sys.stderr.write(f"healthcheck: no /healthz answered on 127.0.0.1 port(s) {', '.join(ports)}\n")
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
