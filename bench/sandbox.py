"""Per-tile cost of a user function through the sandbox vs the same numpy code in-process.

1. Per call: input 4 x 256 x 256 uint16 (simulated reflectances); functions NDVI, stubble
   and a scipy.ndimage clean-up, each in-process, in bound call processes (the default:
   up to 64 calls of one function per process) and in a fresh process per call
   (``calls_per_process=1``). Reports p50/p95 wall time per call (ms), the p50 ratio to
   in-process, and the CPU time per call summed over every process involved (the
   caller, the zygote, the call processes), i.e. calls/s per core = 1000 / CPU ms. The old
   warm worker is measured by running this script from a checkout of the old tree.
2. Per tile: the full render of one Web Mercator tile (``TileRenderer.tile`` + PNG
   ``encode``) of ``process_multi([B04, B06, B08, B11]).execute(f).band(0).scale(0, 1)
   .color_custom(["Lime"])`` over synthetic COGs, with the function in the sandbox vs the
   same chain with the same numpy code run in-process (a temporary in-process executor,
   benchmark only), alternating the two so load drifts hit both alike.

Run: ``.venv/bin/python bench/sandbox.py [--n 400] [--tiles 300]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import algorithms
from engine.sandbox import SandboxPool, chain_executor, simulated_input
from engine.sandbox.check import PRELUDE

IDENTITY = "def first(img):\n    return img[0]\n"


def _in_process(source: str, function: str):
    """The same source as a plain in-process function (benchmark baseline only)."""
    ns: dict = {name: np for name in PRELUDE}
    exec(compile(source, "<bench>", "exec"), ns)  # noqa: S102 - our own shipped sources
    return ns[function]


def _times(fn, n: int) -> list[float]:
    for _ in range(20):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


class _InProcess:
    """Pool stand-in running the function in this process (the per-tile baseline only)."""

    def __init__(self) -> None:
        self._functions: dict[tuple[str, str], object] = {}

    def run(self, source, function, array, args=(), kwargs=None, scope=""):
        key = (source, function)
        if key not in self._functions:
            self._functions[key] = _in_process(source, function)
        return self._functions[key](array, *args, **(kwargs or {}))


def _scene(root: Path):
    """Four 2048 x 2048 uint16 COGs (B04, B06, B08, B11; 10 m, UTM 33N) in a SQLiteCatalog."""
    from datetime import UTC, datetime

    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from engine.catalog import SQLiteCatalog
    from engine.ingest.items import BandAsset, build_collection, make_item

    size, rng = 2048, np.random.default_rng(7)
    r, c = np.mgrid[0:size, 0:size] / size
    fields = {"B04": 500 + 1000 * c, "B06": 700 + 1000 * r, "B08": 800 + 900 * (r + c) / 2,
              "B11": 300 + 1500 * np.abs(c - r)}
    assets = []
    for name, field in fields.items():
        path = root / f"bench_{name}.tif"
        data = np.clip(field + rng.normal(0, 150, field.shape), 1, 10_000).astype(np.uint16)
        with rasterio.open(path, "w", driver="COG", dtype="uint16", count=1, width=size,
                           height=size, crs=CRS.from_epsg(32633), nodata=0,
                           transform=from_origin(500_000.0, 5_550_000.0, 10.0, 10.0),
                           compress="DEFLATE", blocksize=512, overviews="AUTO") as dst:
            dst.write(data, 1)
        assets.append(BandAsset(key=name, href=path, eo_band={"name": name}))
    item = make_item("bench", datetime(2021, 6, 1, tzinfo=UTC), assets,
                     properties={"constellation": "sentinel-2"}, collection="bench")
    db = root / "catalog.sqlite"
    with SQLiteCatalog(db) as cat:
        cat.add_collection(build_collection("bench", [item]))
        cat.add_items([item], collection="bench")
    return SQLiteCatalog(db), item


def tile_comparison(n: int, *, pool: SandboxPool) -> None:
    """Full tile render + encode: user function in the sandbox vs in-process."""
    import tempfile

    import morecantile

    from engine.chain import process_multi, set_executor
    from engine.collection import Collection
    from engine.render import TileRenderer

    tms = morecantile.tms.get("WebMercatorQuad")
    with tempfile.TemporaryDirectory() as tmp:
        catalog, item = _scene(Path(tmp))
        w, s, e, north = item.bbox
        tiles = [t for t in tms.tiles(w + 0.002, s + 0.002, e - 0.002, north - 0.002, [14, 15])]
        renderer = TileRenderer(catalog)
        executors = {"sandbox": chain_executor(pool), "in-process": chain_executor(_InProcess())}
        print(f"\n# per tile: {len(tiles)} tiles z14-15 of a 2048 px scene, {n} renders per "
              f"variant (alternating), PNG; load avg {os.getloadavg()[0]:.1f}")
        print("| chain | in-process p50 / p95 (ms) | sandbox p50 / p95 (ms) | p50 ratio |")
        print("|---|---|---|---|")
        previous = set_executor(None)
        try:
            for name in ("stubble", "morphclean"):
                source, function, _ = algorithms.load(name)
                coll = Collection("bench", catalog=catalog)
                chain = process_multi(coll, ["B04", "B06", "B08", "B11"])
                chain = chain.execute(function, source=source)
                chain = chain.band(0).scale(0, 1).color_custom(["Lime"])
                times: dict[str, list[float]] = {k: [] for k in executors}
                for i in range(n + 10):
                    t = tiles[i % len(tiles)]
                    for label, executor in executors.items():
                        set_executor(executor)
                        t0 = time.perf_counter()
                        img = renderer.tile(chain, t.z, t.x, t.y)
                        if img is not None:
                            renderer.encode(img, "png")
                        if i >= 10:  # warm-up: open files, load the function
                            times[label].append(time.perf_counter() - t0)
                t_in, t_sb = times["in-process"], times["sandbox"]
                print(f"| {name} -> color_custom | {_pct(t_in, 50):.2f} / {_pct(t_in, 95):.2f} | "
                      f"{_pct(t_sb, 50):.2f} / {_pct(t_sb, 95):.2f} | "
                      f"{statistics.median(t_sb) / statistics.median(t_in):.2f}x |")
        finally:
            set_executor(previous)


def _cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its reaped children (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _retire_idle(pool: SandboxPool) -> None:
    """Let bound call processes exit and be reaped, so the zygote's CPU counts them."""
    idle = getattr(pool, "_idle", None)
    if not isinstance(idle, dict):  # the old warm worker: nothing to retire
        return
    for procs in list(idle.values()):
        for proc in procs:
            proc.call.close()
    idle.clear()
    time.sleep(0.3)


def _sandbox_cpu_ms(pool: SandboxPool, call, n: int) -> float:
    """CPU ms per call over the caller, the zygote (or old worker) and call processes."""
    _retire_idle(pool)
    pids = pool.worker_pids()
    before = sum(_cpu_s(p) for p in pids) + time.process_time()
    for _ in range(n):
        call()
    _retire_idle(pool)
    after = sum(_cpu_s(p) for p in pids) + time.process_time()
    return (after - before) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="calls per measurement")
    parser.add_argument("--tiles", type=int, default=300, help="tile renders per variant")
    parser.add_argument("--modes", default="bound,per-call",
                        help="which process modes to measure (comma-separated)")
    args = parser.parse_args()
    img = simulated_input((4, 256, 256))
    cases = [("ndvi", *algorithms.load("ndvi")[:2], (2, 3)),
             ("stubble", *algorithms.load("stubble")[:2], ()),
             ("morphclean", *algorithms.load("morphclean")[:2], ()),
             ("identity", IDENTITY, "first", ())]
    print(f"# {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"numpy {np.__version__}, load avg {os.getloadavg()[0]:.1f}, n={args.n}")
    modes = {"bound": {}, "per-call": {"calls_per_process": 1}}
    modes = {k: v for k, v in modes.items() if k in args.modes.split(",")}
    if "calls_per_process" not in SandboxPool.__init__.__code__.co_varnames:
        modes = {"old warm worker": {}}  # run from the old tree
    for mode, options in modes.items():
        with SandboxPool(1, timeout_s=10, **options) as pool:
            pool.wait_ready(timeout_s=60)
            caps = {k: v for k, v in pool.capabilities().items() if isinstance(v, bool)}
            print(f"\n## {mode}; capabilities: {caps}")
            print("| function | in-process p50 / p95 ms | sandbox p50 / p95 ms | p50 ratio | "
                  "CPU ms per call in-process / sandbox |")
            print("|---|---|---|---|---|")
            for name, source, function, fargs in cases:
                local = _in_process(source, function)
                t_in = _times(lambda: local(img, *fargs), args.n)  # noqa: B023
                c0 = time.process_time()
                for _ in range(args.n):
                    local(img, *fargs)
                cpu_in = (time.process_time() - c0) / args.n * 1000
                run = lambda: pool.run(source, function, img, args=fargs)  # noqa: B023
                t_sb = _times(run, args.n)
                cpu_sb = _sandbox_cpu_ms(pool, run, args.n)
                print(f"| {name} | {_pct(t_in, 50):.3f} / {_pct(t_in, 95):.3f} | "
                      f"{_pct(t_sb, 50):.3f} / {_pct(t_sb, 95):.3f} | "
                      f"{statistics.median(t_sb) / max(statistics.median(t_in), 1e-9):.2f}x | "
                      f"{cpu_in:.3f} / {cpu_sb:.3f} |")
            source, function = algorithms.load("ndvi")[:2]
            t0 = time.perf_counter()
            for _ in range(args.n):
                pool.run(source, function, img, args=(2, 3))
            one = args.n / (time.perf_counter() - t0)
            print(f"\nNDVI calls/s, 1 calling thread (wall clock): {one:.0f}")
            if args.tiles:
                tile_comparison(args.tiles, pool=pool)


if __name__ == "__main__":
    main()
