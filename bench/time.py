"""Time features on the Landsat demo (105 dates, 61x61 px at 30 m): a 100-date NDVI profile
at a point (goal <= 0.5 s) and a 50-frame 512x512 timelapse (goal <= 10 s). Run manually:

    .venv/bin/python bench/time.py [--data-dir .cache/demo-test] [--rounds 5]

The cold profile runs in a fresh subprocess (no file opened yet; the OS page cache is warm);
warm ones reuse the open files, as a long-running service does after its first profile.
"""

from __future__ import annotations

import argparse
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


def cold_profile(data_dir: Path) -> float:
    """Seconds of the first 100-date profile in this (fresh) process."""
    coll = _collection(data_dir).limit(100)
    t0 = time.perf_counter()
    df = coll.profile(LON, LAT, EXPRESSION)
    elapsed = time.perf_counter() - t0
    assert len(df) == 100, len(df)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".cache" / "demo-test")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cold_child:
        sys.stdout.write(f"{cold_profile(args.data_dir)}\n")
        return 0

    from engine.render import TileRenderer
    from engine.timeseries import export_video

    load_before = os.getloadavg()
    colds = []
    for _ in range(args.rounds):
        out = subprocess.run([sys.executable, __file__, "--cold-child", "--data-dir",
                              str(args.data_dir)], capture_output=True, text=True, check=True)
        colds.append(float(out.stdout.strip().splitlines()[-1]))
    coll = _collection(args.data_dir).limit(100)
    coll.profile(LON, LAT, EXPRESSION)  # open the files once
    warms = []
    for i in range(args.rounds):
        t0 = time.perf_counter()
        df = coll.profile(LON + 0.0005 * i, LAT, EXPRESSION)
        warms.append(time.perf_counter() - t0)
        assert len(df) == 100

    full = _collection(args.data_dir)
    days = sorted({i.datetime.date() for i in full.items()})[:50]
    dated = full.filter_date(days[0], days[-1])

    def chain_fn(c):
        return c.process().bands("swir1", "nir", "red").mask(cloud=True).scale(0, 4000)

    videos = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("mp4", "gif"):
            times = []
            for _ in range(max(1, args.rounds // 2)):
                renderer = TileRenderer(full.catalog)  # cold renderer each run
                t0 = time.perf_counter()
                path = export_video(dated, chain_fn, Path(tmp) / f"t.{fmt}", bbox=BBOX,
                                    size=(512, 512), fps=4, renderer=renderer)
                times.append(time.perf_counter() - t0)
            videos[fmt] = (statistics.median(times), min(times), path.stat().st_size)
    load_after = os.getloadavg()

    log.info("load average before %s, after %s (2 cores)",
             " ".join(f"{v:.1f}" for v in load_before), " ".join(f"{v:.1f}" for v in load_after))
    log.info("profile 100 dates, cold (fresh process): median %.3f s, min %.3f s  goal <= 0.5 s",
             statistics.median(colds), min(colds))
    log.info("profile 100 dates, warm (files open):    median %.3f s, min %.3f s",
             statistics.median(warms), min(warms))
    for fmt, (med, best, size) in videos.items():
        log.info("timelapse 50 frames 512x512 %s: median %.2f s, min %.2f s, %.1f MB  "
                 "goal <= 10 s", fmt, med, best, size / 1e6)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
