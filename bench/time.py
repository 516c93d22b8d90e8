"""Time features on the Landsat demo (105 dates, 61x61 px at 30 m): a 100-date NDVI profile
at a point (goal <= 0.5 s) and a 50-frame 512x512 timelapse (goal <= 10 s). Run manually:

    .venv/bin/python bench/time.py [--data-dir .cache/demo-test] [--rounds 5]

The cold profile runs in a fresh subprocess (no file opened yet; the OS page cache is warm).
Its clock starts after the Python modules are imported and their garbage collected (a
service does both at start-up; until 2026-11-24 the ~0.3 s import of engine.timeseries and
rio-tiler and a ~0.08 s full collection of import-time objects were counted) and covers
the catalog query, the first GDAL/PROJ set-up and opening and reading every file.
Warm ones reuse what the first profile cached, as a long-running service does.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench.time")
LON, LAT = -106.914, 40.288
BBOX = (-106.925, 40.2798, -106.9032, 40.2967)
EXPRESSION = "(nir-red)/(nir+red)"


def _collection(data_dir: Path):
    from engine.catalog import SQLiteCatalog
    from engine.collection import Collection
    from engine.demo import prepare_demo

    catalog = SQLiteCatalog(data_dir / "catalog.sqlite")
    prepare_demo(catalog, data_dir=data_dir)
    return Collection("landsat-sr", catalog=catalog).sort("datetime")


def cold_profile(data_dir: Path) -> tuple[float, float]:
    """Seconds (wall, CPU of all threads) of the first 100-date profile in this (fresh)
    process."""
    import engine.timeseries  # noqa: F401 - imports are not what this measures

    coll = _collection(data_dir).limit(100)
    gc.collect()  # the import-time garbage: a server has collected it before its 1st request
    t0, c0 = time.perf_counter(), time.process_time()
    df = coll.profile(LON, LAT, EXPRESSION)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(df) == 100, len(df)
    return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".cache" / "demo-test")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile-only", action="store_true",
                        help="time the profiles only (skip the timelapse exports)")
    parser.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cold_child:
        wall, cpu = cold_profile(args.data_dir)
        sys.stdout.write(f"{wall!r} {cpu!r}\n")
        return 0

    load_before = os.getloadavg()
    colds, cold_cpus = [], []
    for _ in range(args.rounds):
        out = subprocess.run([sys.executable, __file__, "--cold-child", "--data-dir",
                              str(args.data_dir)], capture_output=True, text=True, check=True)
        wall, cpu = out.stdout.strip().splitlines()[-1].split()
        colds.append(float(wall))
        cold_cpus.append(float(cpu))
    coll = _collection(args.data_dir).limit(100)
    coll.profile(LON, LAT, EXPRESSION)  # open the files once
    warms = []
    for i in range(args.rounds):
        t0 = time.perf_counter()
        df = coll.profile(LON + 0.0005 * i, LAT, EXPRESSION)
        warms.append(time.perf_counter() - t0)
        assert len(df) == 100

    videos = {} if args.profile_only else _videos(args.data_dir, args.rounds)
    load_after = os.getloadavg()

    log.info("load average before %s, after %s (2 cores)",
             " ".join(f"{v:.1f}" for v in load_before), " ".join(f"{v:.1f}" for v in load_after))
    log.info("profile 100 dates, cold (fresh process): median %.3f s, min %.3f s, CPU %.3f s"
             "  goal <= 0.5 s", statistics.median(colds), min(colds),
             statistics.median(cold_cpus))
    log.info("profile 100 dates, warm (files open):    median %.3f s, min %.3f s",
             statistics.median(warms), min(warms))
    for fmt, (med, best, size) in videos.items():
        log.info("timelapse 50 frames 512x512 %s: median %.2f s, min %.2f s, %.1f MB  "
                 "goal <= 10 s", fmt, med, best, size / 1e6)
    return 0


def _videos(data_dir: Path, rounds: int) -> dict[str, tuple[float, float, int]]:
    """Per format: median and best seconds of a 50-frame export, and the file's size."""
    from engine.render import TileRenderer
    from engine.timeseries import export_video

    full = _collection(data_dir)
    days = sorted({i.datetime.date() for i in full.items()})[:50]
    dated = full.filter_date(days[0], days[-1])

    def chain_fn(c):
        return c.process().bands("swir1", "nir", "red").mask(cloud=True).scale(0, 4000)

    videos = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("mp4", "gif"):
            times = []
            for _ in range(max(1, rounds // 2)):
                renderer = TileRenderer(full.catalog)  # cold renderer each run
                t0 = time.perf_counter()
                path = export_video(dated, chain_fn, Path(tmp) / f"t.{fmt}", bbox=BBOX,
                                    size=(512, 512), fps=4, renderer=renderer)
                times.append(time.perf_counter() - t0)
            videos[fmt] = (statistics.median(times), min(times), path.stat().st_size)
    return videos


if __name__ == "__main__":
    raise SystemExit(main())
