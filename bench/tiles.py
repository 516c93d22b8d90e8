"""Tile throughput: our service vs TiTiler on the same COGs, cold then warm (run manually).

    .venv/bin/python bench/tiles.py [--workers 2] [--concurrency 8] [--tiles 300]
    .venv/bin/python bench/tiles.py --engines ours,base --baseline /tmp/old-tree

``--engines`` picks the servers (``ours``, ``titiler``, ``base``: our service run from
``--baseline``, an export of an earlier tree, for a before/after under the same load).

Both servers are separate uvicorn processes with the same number of workers on 127.0.0.1,
the same GDAL environment, and read the same single-band COGs (B04/B03/B02 true colour,
rescale 0..3000, nearest resampling, PNG with alpha): TiTiler through its
``MultiBaseTilerFactory`` + rio-tiler ``STACReader`` on the item JSON, ours through a chain
over the SQLite catalog. The same shuffled list of tiles across zooms is requested at a fixed
concurrency from fresh processes (cold: never-requested URLs) and then again (warm: our tile
cache answers; TiTiler has no tile cache, only the OS page cache and GDAL's block cache).

Data: the real Sentinel-2 granule in ../shared/data/s2-l2a-29RKH-20200219 (when present)
and a synthetic 8192x8192 px 3-band scene written once into the work directory.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger("bench.tiles")

ROOT = Path(__file__).resolve().parents[1]
#: ../shared/data beside the checkout (or beside the folder of worktrees holding it)
REAL_S2 = next((d for d in (ROOT.parent / "shared" / "data" / "s2-l2a-29RKH-20200219",
                            ROOT.parents[1] / "shared" / "data" / "s2-l2a-29RKH-20200219")
                if d.exists()), ROOT.parent / "shared" / "data" / "s2-l2a-29RKH-20200219")
BANDS = ("B04", "B03", "B02")
COMMON = {"B04": "red", "B03": "green", "B02": "blue"}
RESCALE = (0, 3000)
#: GDAL settings given to BOTH servers (what TiTiler's docs recommend for COGs).
GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_CACHEMAX": "256",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "FALSE",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff",
}


@dataclass
class Dataset:
    """One scene: its STAC item JSON (for TiTiler), collection and zooms to request."""

    collection: str
    item_id: str
    item_json: Path
    bbox: tuple[float, float, float, float]
    zooms: tuple[int, ...]


# -- data -------------------------------------------------------------------------------------
def synthetic_scene(folder: Path, *, size: int = 8192) -> dict[str, Path]:
    """Three uint16 COGs with a texture of smooth fields plus noise (compresses like imagery)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from scipy.ndimage import zoom as upsample

    folder.mkdir(parents=True, exist_ok=True)
    paths = {b: folder / f"SYN_{b}.tif" for b in BANDS}
    if all(p.exists() for p in paths.values()):
        return paths
    rng = np.random.default_rng(42)
    base = upsample(rng.random((64, 64)), size / 64, order=3)[:size, :size]
    detail = upsample(rng.random((1024, 1024)), size / 1024, order=1)[:size, :size]
    for i, band in enumerate(BANDS):
        noise = rng.normal(0, 40, (size, size))
        arr = 300 + 1800 * base + 500 * detail * (1 + 0.3 * i) + noise + 150 * i
        arr = np.clip(arr, 1, 10000).astype("uint16")
        profile = {
            "driver": "COG", "dtype": "uint16", "count": 1, "width": size, "height": size,
            "crs": "EPSG:32631", "transform": from_origin(600_000, 4_900_000, 10, 10),
            "nodata": 0, "compress": "DEFLATE", "blocksize": 512, "overviews": "AUTO",
            "num_threads": "ALL_CPUS",
        }  # fmt: skip
        with rasterio.open(paths[band], "w", **profile) as dst:
            dst.write(arr, 1)
    return paths


def prepare(workdir: Path) -> tuple[Path, list[Dataset]]:
    """Write the synthetic scene, build the catalog and the item JSONs; (db, datasets)."""
    from engine.catalog import SQLiteCatalog
    from engine.ingest.items import BandAsset, build_collection, make_item

    workdir.mkdir(parents=True, exist_ok=True)
    scenes: list[tuple[str, str, dict[str, Path], datetime, tuple[int, ...]]] = []
    if (REAL_S2 / "B04.tif").exists():
        real = {b: REAL_S2 / f"{b}.tif" for b in BANDS}
        scenes.append(("bench-s2", "S2A_29RKH_20200219", real,
                       datetime(2020, 2, 19, 11, 34, tzinfo=UTC), (8, 9, 10, 11, 12)))
    else:
        log.warning("%s is absent: benchmarking the synthetic scene only", REAL_S2)
    scenes.append(("bench-synthetic", "SYN_31TCJ_20210701", synthetic_scene(workdir / "syn"),
                   datetime(2021, 7, 1, 10, 30, tzinfo=UTC), (10, 11, 12, 13, 14, 15)))
    db = workdir / "catalog.sqlite"
    if db.exists():
        db.unlink()
    datasets = []
    with SQLiteCatalog(db) as catalog:
        for collection, item_id, paths, when, zooms in scenes:
            assets = [BandAsset(key=b, href=paths[b], eo_band={"name": b, "common_name": COMMON[b]})
                      for b in BANDS]
            item = make_item(item_id, when, assets, collection=collection,
                             properties={"platform": "sentinel-2a", "constellation": "sentinel-2"})
            catalog.add_collection(build_collection(collection, [item]))
            catalog.add_items([item], collection=collection)
            item_json = workdir / f"{item_id}.json"
            item_json.write_text(json.dumps(item.to_dict(include_self_link=False,
                                                         transform_hrefs=False)))
            datasets.append(Dataset(collection, item_id, item_json, tuple(item.bbox), zooms))
    return db, datasets


def tile_list(datasets: list[Dataset], total: int, *, seed: int = 7) -> list[tuple[int, int, int, int]]:
    """(dataset index, z, x, y) of tiles fully inside each scene, spread over its zooms."""
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    rng = random.Random(seed)
    pools = []
    for i, d in enumerate(datasets):
        w, s, e, n = d.bbox
        for z in d.zooms:
            inside = [(i, t.z, t.x, t.y) for t in tms.tiles(w, s, e, n, [z])
                      if _inside(tms.bounds(t), (w, s, e, n))]
            rng.shuffle(inside)
            pools.append(inside)
    out: list[tuple[int, int, int, int]] = []
    while len(out) < total and any(pools):  # round robin: low zooms run out first
        for pool in pools:
            if pool and len(out) < total:
                out.append(pool.pop())
    rng.shuffle(out)
    return out


def _inside(b, box) -> bool:
    return b.left >= box[0] and b.bottom >= box[1] and b.right <= box[2] and b.top <= box[3]


# -- TiTiler (imported by its uvicorn workers) -----------------------------------------------
def titiler_app():
    """TiTiler's multi-asset tiler over STAC items (as titiler.application mounts /stac)."""
    from fastapi import FastAPI
    from rio_tiler.io import STACReader
    from titiler.core.errors import DEFAULT_STATUS_CODES, add_exception_handlers
    from titiler.core.factory import MultiBaseTilerFactory

    app = FastAPI(title="TiTiler (bench)")
    app.include_router(MultiBaseTilerFactory(reader=STACReader).router)
    add_exception_handlers(app, DEFAULT_STATUS_CODES)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    return app


# -- servers ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A uvicorn process (``--workers N``) started for one measurement."""

    def __init__(self, name: str, target: str, *, workers: int, env: dict[str, str],
                 app_dir: Path, cwd: Path = ROOT) -> None:
        self.name = name
        self.port = free_port()
        cmd = [sys.executable, "-m", "uvicorn", target, "--factory", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", str(workers), "--no-access-log",
               "--log-level", "warning", "--app-dir", str(app_dir)]
        self.proc = subprocess.Popen(cmd, env={**os.environ, **GDAL_ENV, **env}, cwd=cwd)
        self.base = f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float = 240) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start in {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- load -------------------------------------------------------------------------------------
async def _fetch_all(port: int, paths: list[str], concurrency: int) -> tuple[float, list[float], list[int], int]:
    """GET every path over ``concurrency`` keep-alive connections (a minimal HTTP/1.1
    client, so the client's own CPU use stays small next to the servers')."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in paths:
        queue.put_nowait(p)
    latencies: list[float] = []
    statuses: list[int] = []
    nbytes = 0

    async def worker() -> None:
        nonlocal nbytes
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                try:
                    path = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                latencies.append(time.perf_counter() - t0)
                statuses.append(status)
                nbytes += len(body)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies, statuses, nbytes


@dataclass
class Run:
    name: str
    seconds: float
    latencies: list[float]
    statuses: list[int]
    nbytes: int

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    def pct(self, q: float) -> float:
        return statistics.quantiles(self.latencies, n=100)[int(q) - 1] * 1000

    def line(self) -> str:
        bad = sum(s != 200 for s in self.statuses)
        return (f"{self.name:<16} {len(self.latencies):>5} tiles {self.seconds:7.2f} s "
                f"{self.rps:8.1f} tiles/s  p50 {self.pct(50):7.1f} ms  p95 {self.pct(95):7.1f} ms"
                f"  non-200: {bad}  {self.nbytes / len(self.latencies) / 1024:5.1f} KiB/tile")


def measure(name: str, port: int, paths: list[str], concurrency: int) -> Run:
    seconds, lat, statuses, nbytes = asyncio.run(_fetch_all(port, paths, concurrency))
    return Run(name, seconds, lat, statuses, nbytes)


# -- main -------------------------------------------------------------------------------------
def our_paths(base: str, datasets: list[Dataset], tiles, *, nonce: int) -> list[str]:
    """Register one chain per dataset (a rescale top never used before: a cold chain id)."""
    import httpx

    templates = []
    for d in datasets:
        chain = {"source": {"collection": d.collection, "ids": [d.item_id]},
                 "steps": [{"name": "bands", "bands": list(BANDS)},
                           {"name": "scale", "min": [RESCALE[0]], "max": [RESCALE[1] + nonce * 1e-6]}]}
        r = httpx.post(base + "/api/chains", json=chain, timeout=30)
        r.raise_for_status()
        templates.append(r.json()["tiles"].removeprefix(base))
    return [templates[i].format(z=z, x=x, y=y) for i, z, x, y in tiles]


def titiler_paths(datasets: list[Dataset], tiles) -> list[str]:
    out = []
    for i, z, x, y in tiles:
        d = datasets[i]
        assets = "&".join(f"assets={b}" for b in BANDS)
        out.append(f"/tiles/WebMercatorQuad/{z}/{x}/{y}.png?url={quote(str(d.item_json))}"
                   f"&{assets}&rescale={RESCALE[0]},{RESCALE[1]}")
    return out


def compare_pixels(ours: str, theirs: str, our_paths_: list[str], their_paths: list[str],
                   n: int = 20) -> float:
    """Share of RGBA pixels equal between both servers over ``n`` tiles (same work done?)."""
    import httpx
    import numpy as np
    from PIL import Image

    same = total = 0
    for a, b in list(zip(our_paths_, their_paths, strict=True))[:n]:
        pa = np.asarray(Image.open(io.BytesIO(httpx.get(ours + a, timeout=60).content)).convert("RGBA"))
        pb = np.asarray(Image.open(io.BytesIO(httpx.get(theirs + b, timeout=60).content)).convert("RGBA"))
        close = (np.abs(pa.astype(int) - pb.astype(int)) <= 1).all(axis=-1)
        same += int(close.sum())
        total += close.size
    return same / total


def warm_page_cache(datasets: list[Dataset]) -> None:
    """Read every source file once so neither server pays the first disk read."""
    for d in datasets:
        item = json.loads(d.item_json.read_text())
        for asset in item["assets"].values():
            Path(asset["href"]).read_bytes()


def one_round(args, db: Path, datasets: list[Dataset], tiles, *, titiler_first: bool,
              check_pixels: bool) -> dict[str, Run]:
    """Fresh processes for both servers; cold then warm pass on each."""
    env_ours = {"EOX_CATALOG": str(db), "EOX_DATA_DIR": str(args.workdir),
                "EOX_TILE_CACHE_MB": str(args.cache_mb),
                "EOX_TILE_DISK_CACHE_MB": str(args.disk_cache_mb)}
    servers: dict[str, Server] = {}
    runs: dict[str, Run] = {}
    try:
        for name in args.engines:
            if name == "titiler":
                servers[name] = Server("titiler", "tiles:titiler_app", workers=args.workers,
                                       env={}, app_dir=ROOT / "bench")
            else:  # ours, or ours from the baseline tree
                root, data = ((ROOT, args.workdir) if name == "ours"
                              else (args.baseline, args.workdir / "base"))  # own tile caches
                servers[name] = Server(name, "app.asgi:service_app", workers=args.workers,
                                       env={**env_ours, "PYTHONPATH": str(root),
                                            "EOX_DATA_DIR": str(data)},
                                       app_dir=root, cwd=root)
        for srv in servers.values():
            srv.wait()
        nonce = time.time_ns() % 1_000_000
        paths = {name: titiler_paths(datasets, tiles) if name == "titiler"
                 else our_paths(srv.base, datasets, tiles, nonce=nonce)
                 for name, srv in servers.items()}
        order = list(servers)
        if not titiler_first:
            order.reverse()
        for phase in ("cold", "warm"):
            for name in order:
                key = f"{name} {phase}"
                runs[key] = measure(key, servers[name].port, paths[name], args.concurrency)
                log.info(runs[key].line())
        if check_pixels and {"ours", "titiler"} <= set(servers):
            agree = compare_pixels(servers["ours"].base, servers["titiler"].base,
                                   paths["ours"], paths["titiler"])
            log.info("pixel agreement ours vs titiler (|diff| <= 1 in RGBA): %.4f", agree)
    finally:
        for srv in servers.values():
            srv.stop()
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of EACH server")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tiles", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="fresh-process rounds (median)")
    parser.add_argument("--cache-mb", type=int, default=256, help="our tile cache per worker")
    parser.add_argument("--disk-cache-mb", type=int, default=1024,
                        help="our tile cache on disk, shared by the workers (0: off)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "eox-bench-tiles")
    parser.add_argument("--engines", default="ours,titiler",
                        help="comma-separated servers: ours, titiler, base (--baseline's)")
    parser.add_argument("--baseline", type=Path,
                        help="an export of an earlier tree, served as 'base'")
    args = parser.parse_args(argv)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if set(args.engines) - {"ours", "titiler", "base"} or ("base" in args.engines) != bool(
            args.baseline):
        parser.error("--engines takes ours, titiler, base; base needs --baseline (and back)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    db, datasets = prepare(args.workdir)
    tiles = tile_list(datasets, args.tiles)
    warm_page_cache(datasets)
    log.info("%d tiles over %s; workers=%d each, concurrency=%d, %d rounds; load average %s",
             len(tiles), ", ".join(f"{d.collection} z{d.zooms[0]}-{d.zooms[-1]}" for d in datasets),
             args.workers, args.concurrency, args.rounds, os.getloadavg())
    rounds = [one_round(args, db, datasets, tiles, titiler_first=i % 2 == 0, check_pixels=i == 0)
              for i in range(args.rounds)]
    med = {k: statistics.median(r[k].rps for r in rounds) for k in rounds[0]}
    log.info("median over %d rounds (tiles/s): %s", args.rounds,
             ", ".join(f"{k} {v:.1f}" for k, v in med.items()))
    p = {k: (statistics.median(r[k].pct(50) for r in rounds),
             statistics.median(r[k].pct(95) for r in rounds)) for k in rounds[0]}
    log.info("median p50/p95 (ms): %s", ", ".join(f"{k} {a:.0f}/{b:.0f}" for k, (a, b) in p.items()))
    if {"ours cold", "titiler cold"} <= set(med):
        log.info("ratio cold (ours/titiler): %.2fx   goal >= 1.5x",
                 med["ours cold"] / med["titiler cold"])
        log.info("ratio warm (ours cached / titiler warm): %.2fx   goal >= 10x",
                 med["ours warm"] / med["titiler warm"])
    if {"ours cold", "base cold"} <= set(med):
        log.info("ratio ours/base: cold %.2fx, warm %.2fx", med["ours cold"] / med["base cold"],
                 med["ours warm"] / med["base warm"])
    log.info("load average at the end %s", os.getloadavg())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
