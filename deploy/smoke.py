"""Smoke test of the EO Explorer image, run by the image build (deploy/Dockerfile) as the
image's own user, so a broken image fails its build.

It makes a tiny COG, ingests it with the ``eoexplorer`` CLI, starts ``eoexplorer serve``
under tini (as the image's ENTRYPOINT does) on a loopback port, and checks through HTTP:
/healthz and the image's HEALTHCHECK command (healthcheck.py), the dashboard page, one PNG tile of a true-colour
chain whose pixels match the COG, and one tile of a user function run in the sandbox
(with its seccomp filter loaded). Then a batch run on a local Dask cluster writes a COG.
Every check prints one ``smoke: ...`` line; the first failure exits non-zero.

Re-run it in a container:  docker run --rm eoexplorer python /opt/eox/smoke.py
Only the standard library plus what the image installs is used; nothing leaves the host.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin

SIZE = 256  # px at 10 m in UTM 33N, north-west corner at (500000, 5550000)
ORIGIN = (500_000.0, 5_550_000.0)
BANDS = ("B04", "B03", "B02")
TILE = (14, 8875, 5550)  # z/x/y of a Web Mercator tile inside the COG (15.01-15.03 E)
TIMEOUT_S = 180


def fail(what: str) -> None:
    sys.stderr.write(f"smoke: FAILED: {what}\n")
    raise SystemExit(1)


def say(what: str) -> None:
    print(f"smoke: {what}", flush=True)


def band(index: int) -> np.ndarray:
    """Smooth gradients in three directions (uint16, 0 = nodata in a corner block)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    arr = (500 + [8 * cols, 8 * rows, 4 * (rows + cols)][index]).astype(np.uint16)
    arr[:32, :32] = 0
    return arr


def write_cog(path: Path) -> None:
    profile = {"driver": "COG", "dtype": "uint16", "count": 3, "width": SIZE, "height": SIZE,
               "crs": CRS.from_epsg(32633), "transform": from_origin(*ORIGIN, 10.0, 10.0),
               "nodata": 0, "compress": "DEFLATE", "blocksize": 128, "overviews": "AUTO"}
    with rasterio.open(path, "w", **profile) as dst:
        for i in range(3):
            dst.write(band(i), i + 1)


def run(*cmd: str, env: dict[str, str]) -> str:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                            check=False)
    if result.returncode != 0:
        fail(f"{' '.join(cmd)} exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: dict | None = None) -> tuple[int, str, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def wait_healthy(base: str, server: subprocess.Popen) -> dict:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            fail(f"eoexplorer serve exited {server.returncode}: {server.stderr.read()[-2000:]}")
        try:
            status, _, body = http(f"{base}/healthz")
            if status == 200:
                return json.loads(body)
        except OSError:
            pass
        time.sleep(0.25)
    fail(f"{base}/healthz did not answer within {TIMEOUT_S} s")
    raise AssertionError  # unreachable


def tile(base: str, chain: dict) -> np.ndarray:
    status, _, body = http(f"{base}/api/chains", chain)
    if status != 201:
        fail(f"registering a chain answered {status}: {body[:500]!r}")
    chain_id = json.loads(body)["id"]
    z, x, y = TILE
    status, ctype, body = http(f"{base}/api/chains/{chain_id}/tiles/{z}/{x}/{y}.png")
    if status != 200 or ctype != "image/png":
        fail(f"tile {z}/{x}/{y} answered {status} {ctype}: {body[:500]!r}")
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))


def check_true_colour(base: str) -> None:
    chain = {"source": {"collection": "smoke"},
             "steps": [{"name": "bands", "bands": list(BANDS)},
                       {"name": "scale", "min": [500], "max": [2500]}]}
    rgba = tile(base, chain)
    opaque = rgba[..., 3] > 0
    if rgba.shape != (256, 256, 4) or opaque.mean() < 0.5:
        fail(f"true-colour tile: shape {rgba.shape}, {opaque.mean():.0%} opaque")
    # B04 grows eastwards, B03 southwards: the tile's red rises left to right, green downwards
    red, green = rgba[..., 0].astype(int), rgba[..., 1].astype(int)
    east = np.nanmean(np.where(opaque, red, np.nan)[:, 192:]) - np.nanmean(
        np.where(opaque, red, np.nan)[:, :64])
    south = np.nanmean(np.where(opaque, green, np.nan)[192:]) - np.nanmean(
        np.where(opaque, green, np.nan)[:64])
    if not (east > 20 and south > 20):
        fail(f"true-colour tile does not follow the COG's gradients (east {east}, south {south})")
    say(f"true-colour tile {TILE}: 256x256 PNG, {opaque.mean():.0%} data, gradients ok")


def check_sandbox(base: str) -> None:
    source = "import numpy as np\n\ndef half(img):\n    return img[0].astype(np.float32) / 2\n"
    chain = {"source": {"collection": "smoke", "bands": list(BANDS)},
             "steps": [{"name": "execute", "function": "half", "source": source},
                       {"name": "scale", "min": [250], "max": [1250]}]}
    rgba = tile(base, chain)
    if (rgba[..., 3] > 0).mean() < 0.5:
        fail("the sandboxed function's tile is empty")
    caps = json.loads(http(f"{base}/healthz")[2])["sandbox"]
    if not caps.get("available") or not caps.get("seccomp"):
        fail(f"sandbox without its seccomp filter: {caps}")
    enforced = sorted(k for k, v in caps.items() if v is True)
    say(f"sandboxed function tile ok; sandbox enforces: {', '.join(enforced)}")


def check_batch(root: Path, env: dict[str, str]) -> None:
    chain = root / "chain.json"
    chain.write_text(json.dumps({"source": {"collection": "smoke"},
                                 "steps": [{"name": "bands", "bands": ["B04"]}]}))
    out = root / "out.tif"
    run("eoexplorer", "run", str(chain), "--bbox", "15.0,50.08,15.02,50.09", "--workers", "1",
        "--memory-limit", "1GiB", "--analytic", "--quiet", "--out", str(out), env=env)
    with rasterio.open(out) as src:
        arr = src.read(1, masked=True)
    if arr.count() == 0 or not 500 <= float(arr.min()) <= float(arr.max()) <= 500 + 8 * SIZE:
        fail(f"batch output {out}: {arr.count()} pixels, range {arr.min()}..{arr.max()}")
    say(f"batch run on a local Dask cluster wrote {src.width}x{src.height} px")


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="eox-smoke-"))
    env = {**os.environ, "EOX_CATALOG": str(root / "catalog.sqlite"),
           "EOX_DATA_DIR": str(root / "data"), "EOX_ADDRESS": "127.0.0.1",
           "EOX_SANDBOX_WORKERS": "1", "EOX_TILE_DISK_CACHE_MB": "0"}
    server = None
    try:
        cog = root / "smoke_20240601.tif"
        write_cog(cog)
        run("eoexplorer", "ingest", str(cog), "--collection", "smoke", "--band-dates",
            "2024-06-01", "--band-names", ",".join(BANDS), env=env)
        if "smoke" not in run("eoexplorer", "collections", env=env):
            fail("the ingested collection is not listed")
        say("tiny COG made and ingested with the CLI")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = ["/usr/bin/tini", "-s", "--", "eoexplorer", "serve", "--port", str(port)]
        try:
            server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
        except OSError as err:
            fail(f"cannot start {' '.join(cmd)}: {err}")
        health = wait_healthy(base, server)
        say(f"eoexplorer serve (under tini) healthy: version {health['version']}")
        run(sys.executable, str(Path(__file__).with_name("healthcheck.py")),
            env={**env, "EOX_PORT": str(port)})
        say("the image's HEALTHCHECK command passes")
        status, ctype, page = http(f"{base}/")
        if status != 200 or "text/html" not in ctype or b"bokeh" not in page.lower():
            fail(f"dashboard page answered {status} {ctype}")
        say("dashboard page served")
        check_true_colour(base)
        check_sandbox(base)
        check_batch(root, env)
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(root, ignore_errors=True)
    say("ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
