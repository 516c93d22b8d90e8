"""Cold tiles over HTTP: requests, bytes and time per tile with our GDAL settings vs GDAL's
defaults, behind a proxy adding object-storage latency (run manually, one mode per process
because GDAL's configuration is process-wide):

    .venv/bin/python -m bench.remote_requests                 # both modes, 20 ms per request
    options: --delay-ms 20 --mode ours|defaults|both --tiles 32

Writes two 2048 x 2048 px, 3-band (B04/B03/B02) uint16 COGs side by side (EPSG:32633),
serves them with nginx on 127.0.0.1 behind ``tests.http_storage.DelayProxy`` and renders
true-colour z14 tiles never requested before, spread over both scenes, from a catalog
whose hrefs are the proxy's URLs. Reports the requests nginx saw (by status and
method), the bytes it sent, the median tile time and the total. Only loopback is used.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np


def _write_scenes(root: Path) -> list:
    import pystac
    import rasterio
    from rasterio.transform import array_bounds, from_origin
    from rasterio.warp import transform_bounds

    items = []
    for k in range(2):
        folder = root / f"S{k}"
        folder.mkdir(parents=True, exist_ok=True)
        transform = from_origin(500_000 + 15_000 * k, 5_540_000, 10, 10)
        bbox = transform_bounds("EPSG:32633", "EPSG:4326",
                                *array_bounds(2048, 2048, transform), densify_pts=21)
        item = pystac.Item(f"S{k}", {"type": "Polygon", "coordinates": [[
            [bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]],
            [bbox[0], bbox[1]]]]}, list(bbox), datetime(2021, 6, 1, tzinfo=UTC)
            + timedelta(days=k), properties={"constellation": "sentinel-2"})
        rng = np.random.default_rng(k)
        for band in ("B04", "B03", "B02"):
            path = folder / f"{band}.tif"
            data = (rng.integers(200, 3800, (2048, 2048)) // 16 * 16).astype("uint16")
            with rasterio.open(path, "w", driver="COG", width=2048, height=2048, count=1,
                               dtype="uint16", crs="EPSG:32633", transform=transform,
                               nodata=0, compress="DEFLATE") as dst:
                dst.write(data, 1)
            item.add_asset(band, pystac.Asset(str(path), media_type=pystac.MediaType.COG,
                                              roles=["data"],
                                              extra_fields={"raster:bands": [{"nodata": 0}]}))
        items.append(item)
    return items


def run(mode: str, delay_ms: float, n_tiles: int, workdir: Path) -> dict:
    """One measurement in this process (``mode`` "ours" or "defaults")."""
    import morecantile
    import rasterio.env

    from engine import storage
    from engine.catalog import SQLiteCatalog
    from engine.collection import Collection
    from engine.ingest.items import build_collection
    from engine.render import TileRenderer
    from tests.http_storage import DelayProxy, StaticServer, rehost

    if mode == "defaults":  # keep GDAL's own defaults (a timeout only, so nothing hangs)
        storage._gdal_configured = True
        rasterio.env.set_gdal_config("GDAL_HTTP_TIMEOUT", "10")
    items = _write_scenes(workdir / "root")
    server = StaticServer(workdir / "root", workdir / "nginx").start()
    proxy = DelayProxy(server.port, delay_ms)
    try:
        cat = SQLiteCatalog(workdir / f"{mode}.sqlite")
        remote = [rehost(i, workdir / "root", proxy.url) for i in items]
        cat.add_collection(build_collection("s2", remote))
        cat.add_items(remote, collection="s2")
        renderer = TileRenderer(cat)
        chain = Collection("s2", catalog=cat).process().bands("B04", "B03", "B02").scale(0, 4000)
        tms = morecantile.tms.get("WebMercatorQuad")
        w, s, _, n = items[0].bbox
        every = list(tms.tiles(w, s, items[1].bbox[2], n, [14]))
        tiles = every[:: max(1, len(every) // n_tiles)][:n_tiles]
        times = []
        started = time.perf_counter()
        for t in tiles:
            t0 = time.perf_counter()
            renderer.tile(chain, t.z, t.x, t.y)
            times.append(time.perf_counter() - t0)
        total = time.perf_counter() - started
        lines = server.requests()
    finally:
        proxy.stop()
        server.stop()
    kinds: dict[str, int] = {}
    for line in lines:
        status, request = line.split()[0], line.split('"')[1]
        key = f"{status} {request.split()[0]}"
        kinds[key] = kinds.get(key, 0) + 1
    sent = sum(int(re.search(r"sent=(\d+)", line)[1]) for line in lines)
    return {"mode": mode, "delay_ms": delay_ms, "tiles": len(tiles), "requests": len(lines),
            "by_status": kinds, "MiB_sent": round(sent / 2**20, 2),
            "median_tile_ms": round(1000 * statistics.median(times), 1),
            "total_s": round(total, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("ours", "defaults", "both"), default="both")
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--tiles", type=int, default=32)
    args = ap.parse_args()
    if args.mode == "both":  # one process per mode: GDAL's configuration is process-wide
        for mode in ("ours", "defaults"):
            subprocess.run([sys.executable, "-m", "bench.remote_requests", "--mode", mode,
                            "--delay-ms", str(args.delay_ms), "--tiles", str(args.tiles)],
                           check=True, timeout=600)
        return
    with tempfile.TemporaryDirectory(prefix="eox-remote-") as tmp:
        print(json.dumps(run(args.mode, args.delay_ms, args.tiles, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
