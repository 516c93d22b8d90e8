"""Batch NDVI over a full Sentinel-2-sized scene on 1 vs 2 Dask workers, and Datashader
redraws of the result into a 1024 x 768 viewport with and without overviews.

Input: a synthetic 10980 x 10980 px, 4-band (B02, B03, B04, B08) uint16 scene at 10 m,
one COG per band (512 px blocks, DEFLATE + predictor, overviews), in an embedded catalog.
NDVI = (B08-B04)/(B08+B04) -> float32 COG (engine.batch.to_cog) on a LocalCluster of 1
then 2 worker processes (1 thread each), 1024 px blocks. Then the NDVI COG is read for a
1024 x 768 screen with ``engine.batch.open_for_screen`` (the matching overview) vs full
resolution, and rasterized by ``datashader.Canvas.raster`` (what HoloViews' ``rasterize``
does for images); p50/p95 over repeats, whole scene and a zoomed quarter.

Run: ``.venv/bin/python bench/scale.py [--size 10980] [--workdir /tmp/eox-bench-scale]``
(the scene is generated once and reused).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyproj
import pystac
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.transform import from_origin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.batch import connect, iter_blocks, open_for_screen, plan, to_cog
from engine.catalog import SQLiteCatalog
from engine.collection import Collection

BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
EPSG = 32632


def _field(rows: slice, size: int, band: int) -> np.ndarray:
    """Reflectance-like uint16: smooth large-scale fields plus pixel noise (no zeros)."""
    y = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None]
    x = np.arange(size, dtype=np.float32)[None, :]
    veg = 0.5 + 0.5 * np.sin(x / 411.0) * np.cos(y / 377.0)  # 0..1 "vegetation"
    base = {0: 600 + 300 * (1 - veg), 1: 800 + 300 * (1 - veg), 2: 700 + 900 * (1 - veg),
            3: 1500 + 2500 * veg}[band]
    rng = np.random.default_rng(rows.start * 4 + band)
    noise = rng.integers(-60, 60, size=base.shape, dtype=np.int16)
    return np.clip(base + noise, 1, 10000).astype(np.uint16)


def make_scene(workdir: Path, size: int) -> tuple[SQLiteCatalog, float]:
    """Write (once) the 4 band COGs and a catalog holding the item; returns (catalog, s)."""
    workdir.mkdir(parents=True, exist_ok=True)
    catalog_path = workdir / f"catalog-{size}.sqlite"
    x0, y0 = pyproj.Transformer.from_crs(4326, EPSG, always_xy=True).transform(11.0, 48.5)
    x0, y0 = round(x0, -2), round(y0, -2)
    transform = from_origin(x0, y0, 10, 10)
    t0 = time.perf_counter()
    hrefs = {}
    for k, name in enumerate(BANDS):
        cog = workdir / f"scene-{size}_{name}.tif"
        hrefs[name] = cog
        if cog.exists():
            continue
        raw = workdir / f".raw-{size}_{name}.tif"
        profile = {"driver": "GTiff", "width": size, "height": size, "count": 1,
                   "dtype": "uint16", "crs": CRS.from_epsg(EPSG), "transform": transform,
                   "nodata": 0, "tiled": True, "blockxsize": 512, "blockysize": 512,
                   "compress": "ZSTD", "zstd_level": 1, "bigtiff": "IF_SAFER"}
        with rasterio.open(raw, "w", **profile) as dst:
            for r0 in range(0, size, 1024):
                rows = slice(r0, min(size, r0 + 1024))
                dst.write(_field(rows, size, k), 1, window=((rows.start, rows.stop), (0, size)))
        rasterio.shutil.copy(raw, cog, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES",
                             BLOCKSIZE=512, OVERVIEWS="AUTO", NUM_THREADS="ALL_CPUS")
        raw.unlink()
    made = time.perf_counter() - t0
    if catalog_path.exists():
        return SQLiteCatalog(catalog_path), made
    bbox = list(rasterio.warp.transform_bounds(EPSG, 4326, x0, y0 - size * 10, x0 + size * 10,
                                               y0, densify_pts=21))
    geom = {"type": "Polygon", "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]],
                                                [bbox[2], bbox[3]], [bbox[0], bbox[3]],
                                                [bbox[0], bbox[1]]]]}
    item = pystac.Item("synthetic-10980", geom, bbox, datetime(2026, 6, 1, 10, tzinfo=UTC),
                       properties={"platform": "sentinel-2a", "constellation": "sentinel-2",
                                   "proj:epsg": EPSG, "proj:code": f"EPSG:{EPSG}"})
    for name, common in BANDS.items():
        item.add_asset(name, pystac.Asset(
            str(hrefs[name]), media_type=pystac.MediaType.COG, roles=["data"],
            extra_fields={"eo:bands": [{"name": name, "common_name": common}],
                          "raster:bands": [{"nodata": 0}]}))
    cat = SQLiteCatalog(catalog_path)
    coll = pystac.Collection("bench-s2", "synthetic scene", pystac.Extent(
        pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[item.datetime, item.datetime]])),
        summaries=pystac.Summaries({"eo:bands": [{"name": n, "common_name": c}
                                                 for n, c in BANDS.items()]}))
    cat.add_collection(coll)
    cat.add_items([item], collection="bench-s2")
    return cat, made


def _chain_and_bbox(cat: SQLiteCatalog):
    chain = Collection("bench-s2", catalog=cat).process().expression("(B08-B04)/(B08+B04)")
    href = cat.search(chain.source.to_query())[0].assets["B04"].href
    with rasterio.open(href) as ds:  # the scene's own grid: exactly 10980 x 10980 out
        return chain, tuple(ds.bounds)


def run_ndvi(cat: SQLiteCatalog, workdir: Path, workers: int, chunks: int, *,
             rounds: int) -> tuple[list[float], float]:
    """(block-compute times over ``rounds``, one end-to-end to_cog time) on ``workers``."""
    chain, bbox = _chain_and_bbox(cat)
    opts = {"bbox": bbox, "bbox_crs": f"EPSG:{EPSG}", "chunks": chunks, "catalog": cat}
    with connect(workers=workers, threads_per_worker=1, memory_limit="3GiB") as client:
        p = plan(chain, client=client, **opts)
        compute_times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            n = sum(1 for _ in iter_blocks(p, client=client))
            compute_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        to_cog(chain, workdir / f"ndvi-{workers}w.tif", client=client, overwrite=True, **opts)
        end_to_end = time.perf_counter() - t0
    assert n == p.nblocks[0] * p.nblocks[1]
    return compute_times, end_to_end


def screen_times(path: Path, *, bbox, overviews: bool, repeat: int) -> list[float]:
    import datashader as ds

    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        if overviews:
            arr = open_for_screen(path, bbox, 1024, 768)
        else:
            arr = open_for_screen(path, bbox, 10**4, 10**4)  # never coarser than the data
        img = arr.isel(band=0)
        x0, x1 = float(img.x[0]), float(img.x[-1])
        y0, y1 = float(img.y[-1]), float(img.y[0])
        cvs = ds.Canvas(plot_width=1024, plot_height=768, x_range=(x0, x1), y_range=(y0, y1))
        agg = cvs.raster(img, agg="mean", interpolate="nearest")
        np.asarray(agg.values)
        times.append(time.perf_counter() - t0)
    return times


def _pct(v: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(v) * 1000, p))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/eox-bench-scale"))
    parser.add_argument("--chunks", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--skip-batch", action="store_true")
    args = parser.parse_args(argv)
    out = sys.stdout.write
    out(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}\n")
    cat, made = make_scene(args.workdir, args.size)
    out(f"scene {args.size} x {args.size} x 4 bands uint16 ready ({made:.1f} s to write)\n")
    if not args.skip_batch:
        times: dict[int, list[float]] = {1: [], 2: []}
        e2e: dict[int, float] = {}
        for order in ((1, 2), (2, 1)):  # alternate who goes first (the machine is shared)
            for workers in order:
                ct, e2e[workers] = run_ndvi(cat, args.workdir, workers, args.chunks, rounds=1)
                times[workers] += ct
                out(f"  {workers} worker(s): blocks {ct[0]:6.1f} s, to_cog end-to-end "
                    f"{e2e[workers]:6.1f} s (load {os.getloadavg()[0]:.1f})\n")
        m1, m2 = statistics.median(times[1]), statistics.median(times[2])
        out(f"NDVI blocks (121 x 1024 px), median: 1 worker {m1:.1f} s, 2 workers {m2:.1f} s, "
            f"speed-up {m1 / m2:.2f}x\n")
    path = args.workdir / "ndvi-2w.tif"
    if not path.exists():
        path = args.workdir / "ndvi-1w.tif"
    with rasterio.open(path) as src:
        w, s, e, n = src.bounds
        out(f"NDVI COG: {src.width} x {src.height}, overviews {src.overviews(1)}\n")
    quarter = (w + (e - w) * 0.25, s + (n - s) * 0.25, w + (e - w) * 0.75, s + (n - s) * 0.75)
    for label, bbox in (("whole scene", None), ("zoomed (1/2 width)", quarter)):
        for ovr in (True, False):
            ts = screen_times(path, bbox=bbox, overviews=ovr,
                              repeat=args.repeat if ovr else max(3, args.repeat // 5))
            out(f"datashader 1024x768, {label:18s} {'overview ' if ovr else 'full-res '}: "
                f"p50 {_pct(ts, 50):7.1f} ms  p95 {_pct(ts, 95):7.1f} ms  "
                f"(n={len(ts)}, mean {statistics.mean(ts) * 1000:.1f})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
