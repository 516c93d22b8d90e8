"""Many remote COGs: our renderer vs TiTiler's MosaicJSON (cogeo-mosaic), side by side.

    .venv/bin/python -m bench.remote --n 2000 --workers 4 --delay-ms 20

Builds ``--n`` synthetic scenes (512-1024 px, 10 m, 3 uint16 bands with overviews) on a
grid over one region (EPSG:32633), plus a stack of 100 dates of one 512 px scene for the
point profile. Each scene is written as three single-band COGs (our catalog's assets) and
one 3-band COG (TiTiler's mosaic assets: fewer files, in its favour); same pixels, same
internal overviews. nginx serves them on 127.0.0.1 behind ``tests.http_storage.
DelayProxy`` (+``--delay-ms`` per request). Our catalog is filled with ``commit_items``
(what ``eoexplorer ingest`` runs: it builds the local previews over HTTP, timed); the
MosaicJSON with ``cogeo_mosaic.MosaicJSON.from_features``.

Each engine then runs in its own process (GDAL caches are process-wide), with the same
GDAL settings (``engine.storage.GDAL_OPTIONS``) and the same number of threads: a 9x7
viewport at z6, z8, z10 (cold: never requested in that process; then warm), single-scene
tiles at z12-14 (throughput: up to 4 tiles per zoom inside each of 4 scenes, after one
untimed tile of another scene so that process start-up is not counted), and a 100-date
point profile. Tiles are rendered and PNG
encoded by the engines themselves (our ``TileRenderer.tile``+``encode``; cogeo-mosaic's
``MosaicBackend.tile`` / rio-tiler ``Reader.tile`` + ``ImageData.render``, as TiTiler's
endpoints do), without any HTTP tile cache. Only loopback is used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/remote.py` from anywhere: tests.http_storage
    sys.path.insert(0, str(ROOT))

BANDS = ("B04", "B03", "B02")
VMAX = 4000
EPSG = 32633
ORIGIN = (300_000.0, 5_700_000.0)  # UTM 33N, ~51.4 N 12.2 E
SPACING = 8_000.0  # m between scene origins: scenes of 5-10 km overlap their neighbours
ZOOMS = (6, 8, 10)
SINGLE_ZOOMS = (12, 13, 14)
SINGLE_SCENES = 4  # scenes the single-scene tiles are spread over (up to 4 tiles per zoom)


def _write(path: Path, data: np.ndarray, transform) -> None:
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path, "w", driver="COG", width=data.shape[-1], height=data.shape[-2],
                       count=data.shape[0], dtype="uint16", crs=f"EPSG:{EPSG}",
                       transform=transform, nodata=0, compress="DEFLATE", level=1, blocksize=256,
                       overview_resampling=Resampling.average) as dst:
        dst.write(data)


def _scene(root: Path, sid: str, transform, size: int, date: datetime, seed: int):
    """Write one scene (3 single-band COGs + one 3-band COG); its STAC item."""
    import pystac
    from rasterio.transform import array_bounds
    from rasterio.warp import transform_bounds

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    noise = rng.integers(0, 200, (3, size, size), dtype=np.uint16)
    data = np.stack([(300 + (xx * (k + 1) + yy * 3 + seed * 37) % 3000).astype("uint16")
                     for k in range(3)]) + noise
    folder = root / sid
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "rgb.tif", data, transform)
    bbox = transform_bounds(f"EPSG:{EPSG}", "EPSG:4326",
                            *array_bounds(size, size, transform), densify_pts=21)
    item = pystac.Item(sid, {"type": "Polygon", "coordinates": [[
        [bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]],
        [bbox[0], bbox[1]]]]}, list(bbox), date,
        properties={"constellation": "sentinel-2", "platform": "sentinel-2a",
                    "eo:cloud_cover": 0.0})
    for k, band in enumerate(BANDS):
        _write(folder / f"{band}.tif", data[k:k + 1], transform)
        item.add_asset(band, pystac.Asset(str(folder / f"{band}.tif"),
                                          media_type=pystac.MediaType.COG, roles=["data"],
                                          extra_fields={"raster:bands": [{"nodata": 0}]}))
    return item


def _mosaic_scene(args: tuple) -> dict:
    """Scene ``k`` of the mosaic grid (a pool task: returns the item as a dict)."""
    from rasterio.transform import from_origin

    root, k, side, size = args
    r, c = divmod(k, side)
    transform = from_origin(ORIGIN[0] + c * SPACING, ORIGIN[1] - r * SPACING, 10, 10)
    return _scene(root / "mosaic", f"M{k:05d}", transform, size,
                  datetime(2023, 1, 1, tzinfo=UTC) + timedelta(hours=k), k).to_dict()


def _stack_scene(args: tuple) -> dict:
    from rasterio.transform import from_origin

    root, d = args
    transform = from_origin(ORIGIN[0] + 1_000, ORIGIN[1] - 1_000, 10, 10)
    return _scene(root / "stack", f"T{d:03d}", transform, 512,
                  datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=5 * d), 10_000 + d).to_dict()


def build(root: Path, n: int, seed: int = 0, *, procs: int = 2) -> dict:
    """The scenes of the mosaic (grid over the region) and of the 100-date stack, written
    by ``procs`` processes; kept under ``root`` (``items.json`` marks a complete set), so a
    second run with the same ``n`` and ``seed`` reuses them."""
    import pystac

    done = root / "items.json"
    t0 = time.perf_counter()
    reused = done.exists()
    if not reused:
        rng = np.random.default_rng(seed)
        side = int(np.ceil(np.sqrt(n)))
        sizes = [int(rng.integers(512, 1025)) for _ in range(n)]
        with ProcessPoolExecutor(max(1, procs)) as pool:
            mosaic = list(pool.map(_mosaic_scene, [(root, k, side, sizes[k]) for k in range(n)],
                                   chunksize=16))
            stack = list(pool.map(_stack_scene, [(root, d) for d in range(100)], chunksize=8))
        done.write_text(json.dumps({"mosaic": mosaic, "stack": stack,
                                    "build_s": time.perf_counter() - t0}))
    cached = json.loads(done.read_text())
    return {k: [pystac.Item.from_dict(d) for d in cached[k]] for k in ("mosaic", "stack")} | {
        "build_s": cached["build_s"], "reused": reused}


def _viewport_tiles(bbox, z: int) -> list[tuple[int, int, int]]:
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    c = tms.tile((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2, z)
    return [(x, y, z) for y in range(c.y - 3, c.y + 4) for x in range(c.x - 4, c.x + 5)]


def prepare(workdir: Path, n: int, proxy_url: str, root: Path, *, titiler: bool = True) -> dict:
    """Catalog (with previews, timed) and MosaicJSONs (``titiler``: only when TiTiler runs,
    so ``--engines ours`` needs no bench extra); the work list for both engines."""
    import morecantile

    from engine.catalog import SQLiteCatalog
    from engine.ingest.run import commit_items
    from tests.http_storage import rehost

    scenes = build(root, n)
    remote = {k: [rehost(i, root, proxy_url) for i in scenes[k]] for k in ("mosaic", "stack")}
    cat = SQLiteCatalog(workdir / "catalog.sqlite")
    t0 = time.perf_counter()
    warnings = commit_items(cat, "mosaic", None, remote["mosaic"],
                            preview_dir=workdir / "data" / "previews")
    ingest_s = time.perf_counter() - t0
    commit_items(cat, "stack", None, remote["stack"])  # points read the files: no previews
    cat.close()
    mosaics = {}
    for key in ("mosaic", "stack") if titiler else ():
        from cogeo_mosaic.mosaic import MosaicJSON

        feats = [{"type": "Feature", "geometry": i.geometry, "properties": {
            "path": f"{proxy_url}/{key}/{i.id}/rgb.tif"}} for i in scenes[key]]
        mj = MosaicJSON.from_features(feats, minzoom=6, maxzoom=14, quadkey_zoom=8)
        mosaics[key] = str(workdir / f"{key}.json")
        Path(mosaics[key]).write_text(mj.model_dump_json(exclude_none=True))
    b = np.array([i.bbox for i in scenes["mosaic"]])
    region = [float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()),
              float(b[:, 3].max())]
    tms = morecantile.tms.get("WebMercatorQuad")
    mid = len(scenes["mosaic"]) // 2
    single = []  # (scene id, 3-band COG url, x, y, z): tiles well inside one scene
    for one in scenes["mosaic"][mid:mid + SINGLE_SCENES]:
        w, s, e, nn = one.bbox
        for z in SINGLE_ZOOMS:
            inner = list(tms.tiles(w + (e - w) * .3, s + (nn - s) * .3, e - (e - w) * .3,
                                   nn - (nn - s) * .3, [z]))
            single += [(one.id, f"{proxy_url}/mosaic/{one.id}/rgb.tif", t.x, t.y, t.z)
                       for t in inner[:: max(1, len(inner) // 4)][:4]]
    warm = scenes["mosaic"][max(0, mid - 1)]  # not timed: the process's first tile
    wt = tms.tile((warm.bbox[0] + warm.bbox[2]) / 2, (warm.bbox[1] + warm.bbox[3]) / 2, 14)
    sb = scenes["stack"][0].bbox
    return {"catalog": str(workdir / "catalog.sqlite"), "mosaics": mosaics,
            "viewports": {z: _viewport_tiles(region, z) for z in ZOOMS},
            "single": single, "warmup": (warm.id, f"{proxy_url}/mosaic/{warm.id}/rgb.tif",
                                         wt.x, wt.y, wt.z),
            "point": [(sb[0] + sb[2]) / 2, (sb[1] + sb[3]) / 2],
            "n": n, "build_s": round(scenes["build_s"], 1), "build_reused": scenes["reused"], "ingest_previews_s":
                round(ingest_s, 1), "preview_warnings": len(warnings)}


# -- one engine per process ----------------------------------------------------------------
def _timed(fn, jobs, workers: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        sizes = list(pool.map(fn, jobs))
    return time.perf_counter() - t0, sum(1 for s in sizes if s)


def run_ours(plan: dict, workers: int, part: str) -> dict:
    from engine.catalog import SQLiteCatalog
    from engine.collection import Collection
    from engine.render import TileRenderer
    from engine.timeseries.profiles import profile

    cat = SQLiteCatalog(plan["catalog"])
    renderer = TileRenderer(cat)
    chain = Collection("mosaic", catalog=cat).process().bands(*BANDS).scale(0, VMAX)
    ones = {sid: Collection("mosaic", catalog=cat).ids(sid).process().bands(*BANDS).scale(
        0, VMAX) for sid in {t[0] for t in [*plan["single"], plan["warmup"]]}}
    notices = []

    def tile(c, xyz):
        img = renderer.tile(c, xyz[2], xyz[0], xyz[1])
        if img is not None and img.metadata.get("scenes"):
            notices.append(img.metadata["scenes"])
        return len(renderer.encode(img, "png")) if img is not None else 0

    if part not in ("rest", "single", "profile"):
        out = _viewport(lambda xyz: tile(chain, xyz), plan, workers, int(part))
        out[f"z{part}_notices"] = len(notices)
        return out
    out = _single(lambda t: tile(ones[t[0]], t[2:]), plan, workers) if part != "profile" else {}
    if part == "single":
        return out
    x, y = plan["point"]
    t0 = time.perf_counter()
    df = profile(Collection("stack", catalog=cat), x, y, "(B04-B03)/(B04+B03)",
                 mask_clouds=False, max_scenes=1000)
    out["profile_s"] = round(time.perf_counter() - t0, 3)
    out["profile_dates"] = int(df["value"].notna().sum())
    return out


def run_titiler(plan: dict, workers: int, part: str) -> dict:
    from cogeo_mosaic.backends import MosaicBackend
    from rio_tiler.errors import EmptyMosaicError, TileOutsideBounds
    from rio_tiler.io import Reader

    def render(img) -> int:
        img.rescale(in_range=((0, VMAX),))
        return len(img.render(img_format="PNG"))

    def mosaic_tile(xyz):
        with MosaicBackend(plan["mosaics"]["mosaic"]) as src:
            try:
                img, _ = src.tile(*xyz)
            except (EmptyMosaicError, TileOutsideBounds):
                return 0
            except Exception as exc:
                if "No assets found" in str(exc):
                    return 0
                raise
        return render(img)

    def cog_tile(t):
        with Reader(t[1]) as src:
            return render(src.tile(*t[2:]))

    if part not in ("rest", "single", "profile"):
        return _viewport(mosaic_tile, plan, workers, int(part))
    out = _single(cog_tile, plan, workers) if part != "profile" else {}
    if part == "single":
        return out
    x, y = plan["point"]
    t0 = time.perf_counter()
    with MosaicBackend(plan["mosaics"]["stack"]) as src:
        values = src.point(x, y)
    out["profile_s"] = round(time.perf_counter() - t0, 3)
    out["profile_dates"] = len(values)
    return out


def _viewport(fn, plan: dict, workers: int, z: int) -> dict:
    """The 63 tiles of the zoom's viewport, cold (a fresh process) then warm."""
    out: dict = {}
    tiles = [tuple(t) for t in plan["viewports"][z]]
    for phase in ("cold", "warm"):
        secs, full = _timed(fn, tiles, workers)
        out[f"z{z}_{phase}_s"] = round(secs, 2)
    out[f"z{z}_tiles_with_data"] = full
    return out


def _single(fn, plan: dict, workers: int) -> dict:
    """Tiles inside one scene each (z12-14, never requested), after one untimed tile of
    another scene: the process's start-up (imports, first connection), not a tile's cost."""
    fn(tuple(plan["warmup"]))
    tiles = [tuple(t) for t in plan["single"]]
    secs, _ = _timed(fn, tiles, workers)
    return {"single_tiles": len(tiles), "single_s": round(secs, 2),
            "single_tiles_per_s": round(len(tiles) / secs, 1)}


def _child(engine: str, part: str, work: Path, args) -> dict:
    cmd = [sys.executable, "-m", "bench.remote", "--engine", engine, "--part", part,
           "--plan", str(work / "plan.json"), "--workers", str(args.workers)]
    try:
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True,
                              timeout=args.timeout_s)
    except subprocess.TimeoutExpired:
        return {f"z{part}_cold_s": f"> {args.timeout_s:.0f} (stopped)"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="scenes in the mosaic")
    ap.add_argument("--workers", type=int, default=4, help="threads per engine")
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "eox-remote-bench"),
                    help="where the generated COGs are kept between runs (per --n)")
    ap.add_argument("--timeout-s", type=float, default=300.0,
                    help="longest one engine may take for one zoom (then recorded as '>')")
    ap.add_argument("--engines", default="ours,titiler", help="which engines to run")
    ap.add_argument("--parts", default="6,8,10,rest",
                    help="which measurements: viewport zooms, 'single' (single-scene tiles), "
                    "'profile', or 'rest' (both in one process)")
    ap.add_argument("--log-requests", metavar="DIR",
                    help="write each part's storage requests (nginx access log lines) to "
                    "DIR/<engine>-<part>.log")
    ap.add_argument("--engine", choices=("ours", "titiler"), help=argparse.SUPPRESS)
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--plan", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine:  # a child: one engine, GDAL configured like the app does
        from engine.storage import configure_gdal

        configure_gdal(cache_mb=256)
        plan = json.loads(Path(args.plan).read_text())
        plan["viewports"] = {int(z): v for z, v in plan["viewports"].items()}
        run = run_ours if args.engine == "ours" else run_titiler
        print(json.dumps(run(plan, args.workers, args.part)), flush=True)
        return
    from tests.http_storage import DelayProxy, StaticServer

    with tempfile.TemporaryDirectory(prefix="eox-mosaic-") as tmp:
        work = Path(tmp)
        root = Path(args.cache) / f"n{args.n}"
        root.mkdir(parents=True, exist_ok=True)
        server = StaticServer(root, work / "nginx").start()
        proxy = DelayProxy(server.port, args.delay_ms)
        try:
            plan = prepare(work, args.n, proxy.url, root,
                           titiler="titiler" in args.engines.split(","))
            (work / "plan.json").write_text(json.dumps(plan))
            result = {k: plan[k] for k in ("n", "build_s", "build_reused", "ingest_previews_s",
                                           "preview_warnings")}
            result.update(workers=args.workers, delay_ms=args.delay_ms,
                          load_before=os.getloadavg()[0])
            for engine in args.engines.split(","):
                result[engine] = {"requests": 0}
                for part in args.parts.split(","):  # each in a fresh process: cold
                    before = len(server.requests())
                    got = _child(engine, part, work, args)
                    if any(k in result[engine] for k in got):  # a part run again: kept apart
                        got = {f"{k}_{part}_again": v for k, v in got.items()}
                    result[engine].update(got)
                    lines = server.requests()[before:]
                    result[engine]["requests"] += len(lines)
                    if args.log_requests:
                        Path(args.log_requests).mkdir(parents=True, exist_ok=True)
                        (Path(args.log_requests) / f"{engine}-{part}.log").write_text(
                            "\n".join(lines) + "\n")
            result["load_after"] = os.getloadavg()[0]
            result["date"] = datetime.now(UTC).isoformat(timespec="minutes")
        finally:
            proxy.stop()
            server.stop()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
