"""Load, noisy-neighbour and soak runs against a real tile server on 127.0.0.1 (run manually).

    .venv/bin/python bench/load.py                      # 50 clients for 60 s vs 1 client
    .venv/bin/python bench/load.py --noisy              # plain tiles with/without bad functions
    .venv/bin/python bench/load.py --soak               # 10 min, RSS sampled every 30 s
    options: --clients 50 --duration 60 --think 2 --no-cache --workdir DIR --app MOD:FACTORY

The script writes a synthetic 4096x4096 px, 4-band Sentinel-2-like scene (uint16 COGs)
into a catalog, starts uvicorn (one worker) on a free loopback port with the app of
``app.wiring.build_service`` plus the sandbox executor, and drives it with asyncio + httpx
clients (one keep-alive connection each) that fetch random tiles (z12-16, inside the scene)
of three chains: plain true colour, an NDVI expression with a colormap, and a sandboxed
user function. Reports requests/s, p50/p95/p99, errors (anything but 200/204), the
server's RSS (and its sandbox workers', with the tile cache's bytes and the open datasets
from /healthz in a soak) and the load average. Every loop is bounded by
time; the server is stopped at the end. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("bench.load")

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
SIZE = 4096
ORIGIN = (500_000.0, 5_560_000.0)  # EPSG:32633, near 15.0 E 50.2 N
BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
COLLECTION = "bench-load"

PLAIN = {"source": {"collection": COLLECTION},
         "steps": [{"name": "bands", "bands": ["B04", "B03", "B02"]},
                   {"name": "scale", "min": [0], "max": [3000]}]}
NDVI = {"source": {"collection": COLLECTION},
        "steps": [{"name": "expression", "expression": "(B08 - B04) / (B08 + B04)"},
                  {"name": "scale", "min": [-1], "max": [1]},
                  {"name": "colormap", "colormap": "viridis"}]}
BRIGHTEN = "def brighten(a):\n    return a * 1.2\n"
SANDBOXED = {"source": {"collection": COLLECTION},
             "steps": [{"name": "bands", "bands": ["B04", "B03", "B02"]},
                       {"name": "execute", "function": "brighten", "source": BRIGHTEN},
                       {"name": "scale", "min": [0], "max": [3000]}]}
#: The noisy neighbour's functions: one never returns, one eats memory.
SPIN = "def spin(a, n):\n    while True:\n        n = n + 1\n    return a\n"
HOG = ("def hog(a, n):\n    keep = []\n    while True:\n        keep.append(a * n)\n"
       "    return a\n")


# -- server side: the app factory uvicorn imports (--factory) ----------------------------------
def service_app():
    """The tile service of ``eoexplorer tiles`` (``build_service`` plugs in the sandbox per
    the EOX_SANDBOX_* settings the bench sets); the executor is installed here only when
    the wiring did not."""
    from app.settings import Settings
    from app.wiring import build_service
    from engine.chain.executor import get_executor
    from engine.sandbox import install_executor

    service = build_service(Settings())
    if get_executor() is None:
        install_executor()
    return service


# -- data ---------------------------------------------------------------------------------------
def prepare(workdir: Path) -> Path:
    """Write the scene's COGs and a catalog once; returns the catalog path."""
    import numpy as np
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from scipy.ndimage import zoom as upsample

    from engine.catalog import SQLiteCatalog
    from engine.ingest.items import BandAsset, build_collection, make_item

    db = workdir / "catalog.sqlite"
    if db.exists():
        return db
    folder = workdir / "cogs"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    assets = []
    for i, (name, common) in enumerate(BANDS.items()):
        field_ = upsample(rng.random((32, 32)), SIZE / 32, order=3)[:SIZE, :SIZE]
        noise = rng.random((SIZE, SIZE)) * 0.15
        scale = 4000 if name == "B08" else 2500
        arr = (np.clip(field_ + noise, 0, 1.2) * scale + 1 + i).astype("uint16")
        path = folder / f"{name}.tif"
        with rasterio.open(path, "w", driver="COG", width=SIZE, height=SIZE, count=1,
                           dtype="uint16", crs=CRS.from_epsg(32633), nodata=0,
                           transform=from_origin(*ORIGIN, 10, 10), compress="DEFLATE",
                           blocksize=512, overviews="AUTO") as dst:
            dst.write(arr, 1)
        assets.append(BandAsset(key=name, href=path, eo_band={"name": name,
                                                               "common_name": common}))
    item = make_item("S2A_33UVS_20210701", datetime(2021, 7, 1, 10, tzinfo=UTC), assets,
                     properties={"eo:cloud_cover": 3.0, "constellation": "sentinel-2"},
                     collection=COLLECTION)
    with SQLiteCatalog(db) as catalog:
        catalog.add_collection(build_collection(COLLECTION, [item]))
        catalog.add_items([item], collection=COLLECTION)
    return db


def tile_pool(db: Path, count: int, *, seed: int = 3) -> list[tuple[int, int, int]]:
    """``count`` random z12-16 tiles lying fully inside the scene."""
    import morecantile
    from rasterio.warp import transform_bounds

    w, s, e, n = transform_bounds("EPSG:32633", "EPSG:4326", ORIGIN[0], ORIGIN[1] - SIZE * 10,
                                  ORIGIN[0] + SIZE * 10, ORIGIN[1])
    tms = morecantile.tms.get("WebMercatorQuad")
    tiles = []
    for z in range(12, 17):
        for t in tms.tiles(w, s, e, n, [z]):
            b = tms.bounds(t)
            if b.left > w + 0.01 and b.right < e - 0.01 and b.bottom > s + 0.01 and b.top < n - 0.01:
                tiles.append((t.z, t.x, t.y))
    rng = random.Random(seed)
    rng.shuffle(tiles)
    return tiles[:count]


# -- the server ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Server:
    """``uvicorn bench.load:service_app --factory`` on a free loopback port."""

    def __init__(self, db: Path, workdir: Path, *, cache_mb: int, env: dict[str, str],
                 app: str = "bench.load:service_app") -> None:
        self.port = free_port()
        self.base = f"http://{LOOPBACK}:{self.port}"
        shutil.rmtree(workdir / "tile-cache", ignore_errors=True)  # every run starts cold
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        environ = {**os.environ, "PYTHONPATH": path, "EOX_CATALOG": str(db),
                   "EOX_DATA_DIR": str(workdir), "EOX_TILE_CACHE_MB": str(cache_mb),
                   "EOX_TILE_DISK_CACHE_MB": str(cache_mb and 1024),
                   "EOX_ADDRESS": LOOPBACK, "EOX_SANDBOX_WORKERS": "2",
                   "EOX_SANDBOX_TIMEOUT_S": "2", "EOX_SANDBOX_MEMORY_MB": "768", **env}
        cmd = [sys.executable, "-m", "uvicorn", app, "--factory",
               "--host", LOOPBACK, "--port", str(self.port), "--no-access-log",
               "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, env=environ, cwd=ROOT)

    def wait(self, timeout: float = 90) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not start in {timeout} s")

    def rss_mb(self) -> tuple[float, float]:
        """RSS of the server process and of its children (sandbox workers), in MiB."""
        import psutil

        proc = psutil.Process(self.proc.pid)
        own = proc.memory_info().rss
        kids = 0
        for child in proc.children(recursive=True):
            try:
                kids += child.memory_info().rss
            except psutil.Error:
                continue
        return own / 2**20, kids / 2**20

    def health(self) -> dict:
        """The server's bounded state (/healthz): tile cache bytes, open datasets."""
        import httpx

        try:
            body = httpx.get(self.base + "/healthz", timeout=10).json()
        except (httpx.HTTPError, ValueError):
            return {}
        handles = body.get("handles", {})
        return {"tile_cache_mb": round(body.get("cache", {}).get("bytes", 0) / 2**20, 1),
                "open_datasets": handles.get("idle", 0) + handles.get("lent", 0)}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


# -- clients ------------------------------------------------------------------------------------
@dataclass
class Stats:
    """Latencies (s) and statuses of one group of clients."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0
    transport_kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def failed(self, exc: Exception) -> None:
        self.transport_errors += 1
        kind = type(exc).__name__
        self.transport_kinds[kind] = self.transport_kinds.get(kind, 0) + 1

    def add(self, latency: float, status: int) -> None:
        self.latencies.append(latency)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    @property
    def errors(self) -> int:
        return self.transport_errors + sum(n for s, n in self.statuses.items()
                                           if s not in (200, 204))

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1] * 1000

    def summary(self) -> dict:
        n = len(self.latencies)
        return {"requests": n, "rps": round(n / self.seconds, 1) if self.seconds else 0,
                "p50_ms": round(self.pct(50), 1), "p95_ms": round(self.pct(95), 1),
                "p99_ms": round(self.pct(99), 1), "errors": self.errors,
                "statuses": dict(sorted(self.statuses.items())),
                "transport_errors": dict(sorted(self.transport_kinds.items()))}


async def register(client, chain: dict) -> str:
    r = await client.post("/api/chains", json=chain)
    r.raise_for_status()
    return r.json()["id"]


async def tile_clients(base: str, chain_ids: list[str], tiles: list, *, clients: int,
                       duration: float, seed: int, think: float = 0.0) -> Stats:
    """``clients`` concurrent keep-alive clients fetching random tiles until the deadline,
    pausing ``think`` s on average (exponential) between requests (0: closed loop)."""
    import httpx

    stats = Stats()
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def one(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            while time.monotonic() < deadline:
                cid = rng.choice(chain_ids)
                z, x, y = rng.choice(tiles)
                t0 = time.perf_counter()
                try:
                    r = await client.get(f"/api/chains/{cid}/tiles/{z}/{x}/{y}.png")
                    stats.add(time.perf_counter() - t0, r.status_code)
                except httpx.HTTPError as exc:
                    stats.failed(exc)
                if think:
                    await asyncio.sleep(min(rng.expovariate(1 / think),
                                            max(0.0, deadline - time.monotonic())))

    start = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(clients)))
    stats.seconds = time.monotonic() - start
    return stats


async def neighbour_clients(base: str, tiles: list, *, clients: int, duration: float) -> Stats:
    """Clients that register functions looping forever or eating memory and fetch their
    tiles (every chain new, so nothing is cached); their errors are expected."""
    import httpx

    stats = Stats()
    deadline = time.monotonic() + duration

    async def one(i: int) -> None:
        rng = random.Random(i)
        n = 0
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            while time.monotonic() < deadline:
                n += 1
                name, src = ("spin", SPIN) if (i + n) % 2 else ("hog", HOG)
                chain = json.loads(json.dumps(SANDBOXED))
                chain["steps"][1] = {"name": "execute", "function": name, "source": src,
                                     "args": [i * 100_000 + n]}
                z, x, y = rng.choice(tiles)
                t0 = time.perf_counter()
                try:
                    cid = await register(client, chain)
                    r = await client.get(f"/api/chains/{cid}/tiles/{z}/{x}/{y}.png")
                    stats.add(time.perf_counter() - t0, r.status_code)
                except httpx.HTTPError as exc:
                    stats.failed(exc)

    start = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(clients)))
    stats.seconds = time.monotonic() - start
    return stats


# -- runs -----------------------------------------------------------------------------------------
async def setup_chains(base: str) -> dict[str, str]:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        return {"plain": await register(client, PLAIN), "ndvi": await register(client, NDVI),
                "sandboxed": await register(client, SANDBOXED)}


def load_avg() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def run_load(args, server: Server, tiles: list) -> dict:
    chains = asyncio.run(setup_chains(server.base))
    ids = list(chains.values())
    rss0 = server.rss_mb()
    la0 = load_avg()
    warm = asyncio.run(tile_clients(server.base, ids, tiles[:30], clients=4, duration=5, seed=1))
    unloaded = asyncio.run(tile_clients(server.base, ids, tiles, clients=1,
                                        duration=args.baseline, seed=2))
    loaded = asyncio.run(tile_clients(server.base, ids, tiles, clients=args.clients,
                                      duration=args.duration, seed=3, think=args.think))
    rss1 = server.rss_mb()
    return {"mode": "load", "chains": list(chains), "clients": args.clients,
            "think_s": args.think, "tile_pool": len(tiles),
            "duration_s": args.duration, "tile_cache_mb": args.cache_mb,
            "warmup_errors": warm.errors, "unloaded": unloaded.summary(),
            "loaded": loaded.summary(),
            "p95_ratio": round(loaded.pct(95) / unloaded.pct(95), 2),
            "server_rss_mb": [round(rss0[0]), round(rss1[0])],
            "sandbox_workers_rss_mb": [round(rss0[1]), round(rss1[1])],
            "load_average_before": la0, "load_average_after": load_avg()}


def run_noisy(args, server: Server, tiles: list) -> dict:
    chains = asyncio.run(setup_chains(server.base))
    plain = [chains["plain"]]
    victims = max(1, args.clients - args.neighbours)
    asyncio.run(tile_clients(server.base, plain, tiles[:30], clients=4, duration=5, seed=1))
    rss0 = server.rss_mb()
    quiet = asyncio.run(tile_clients(server.base, plain, tiles, clients=victims,
                                     duration=args.duration, seed=4, think=args.think))

    async def both():
        return await asyncio.gather(
            tile_clients(server.base, plain, tiles, clients=victims, duration=args.duration,
                         seed=5, think=args.think),
            neighbour_clients(server.base, tiles, clients=args.neighbours,
                              duration=args.duration))

    noisy, neighbour = asyncio.run(both())
    rss1 = server.rss_mb()
    return {"mode": "noisy", "victim_clients": victims, "neighbours": args.neighbours,
            "think_s": args.think, "tile_pool": len(tiles),
            "duration_s": args.duration, "tile_cache_mb": args.cache_mb,
            "without_neighbour": quiet.summary(), "with_neighbour": noisy.summary(),
            "neighbour": neighbour.summary(),
            "p95_ratio": round(noisy.pct(95) / quiet.pct(95), 2),
            "server_rss_mb": [round(rss0[0]), round(rss1[0])],
            "sandbox_workers_rss_mb": [round(rss0[1]), round(rss1[1])],
            "load_average_after": load_avg()}


def run_soak(args, server: Server, tiles: list) -> dict:
    chains = asyncio.run(setup_chains(server.base))
    ids = list(chains.values())
    samples: list[tuple[int, float, float]] = []
    state: list[dict] = []  # the tile cache's bytes and open datasets at each sample
    total = Stats()
    start = time.monotonic()
    while time.monotonic() - start < args.duration:
        own, kids = server.rss_mb()
        samples.append((round(time.monotonic() - start), round(own, 1), round(kids, 1)))
        state.append(server.health())
        log.info("t=%4d s  server RSS %.0f MiB  sandbox %.0f MiB  %s  load %s", samples[-1][0],
                 own, kids, state[-1], load_avg())
        part = asyncio.run(tile_clients(server.base, ids, tiles, clients=args.clients,
                                        duration=min(args.sample, args.duration -
                                                     (time.monotonic() - start)),
                                        seed=len(samples), think=args.think))
        total.latencies += part.latencies
        total.transport_errors += part.transport_errors
        for k, v in part.transport_kinds.items():
            total.transport_kinds[k] = total.transport_kinds.get(k, 0) + v
        for k, v in part.statuses.items():
            total.statuses[k] = total.statuses.get(k, 0) + v
        total.seconds += part.seconds
    own, kids = server.rss_mb()
    samples.append((round(time.monotonic() - start), round(own, 1), round(kids, 1)))
    state.append(server.health())
    after_warmup = [s for s in samples if s[0] >= args.sample] or samples
    return {"mode": "soak", "clients": args.clients, "think_s": args.think,
            "duration_s": args.duration,
            "tile_cache_mb": args.cache_mb, "requests": total.summary(),
            "rss_samples_s_server_sandbox_mb": samples, "server_state": state,
            "server_rss_growth_mb": round(samples[-1][1] - samples[0][1], 1),
            "server_rss_growth_after_first_sample_mb":
                round(samples[-1][1] - after_warmup[0][1], 1),
            "load_average_after": load_avg()}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--noisy", action="store_true", help="noisy-neighbour run")
    mode.add_argument("--soak", action="store_true", help="10-minute soak, RSS every 30 s")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--neighbours", type=int, default=5, help="noisy clients (--noisy)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per phase (default 60; 600 with --soak)")
    parser.add_argument("--baseline", type=float, default=20, help="unloaded phase seconds")
    parser.add_argument("--think", type=float, default=0.0,
                        help="mean pause between a client's requests, s (0: closed loop)")
    parser.add_argument("--sample", type=float, default=30, help="soak RSS sampling period")
    parser.add_argument("--no-cache", dest="cache_mb", action="store_const", const=0,
                        default=256, help="disable the tile caches, memory and disk "
                        "(every tile renders)")
    parser.add_argument("--cache-mb", dest="cache_mb", type=int,
                        help="tile cache budget, MiB (default 256; a small one shows the "
                        "soak's plateau within 10 minutes)")
    parser.add_argument("--tiles", type=int, default=3000, help="size of the tile pool")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "eox-bench-load")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--app", default="bench.load:service_app",
                        help="uvicorn app factory to serve (e.g. a wrapper that also "
                        "records diagnostics); PYTHONPATH is kept")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 600.0 if args.soak else 60.0
    if not 0 < args.duration <= 3600 or not 1 <= args.clients <= 500:
        parser.error("--duration must be in (0, 3600] and --clients in [1, 500]")
    args.workdir.mkdir(parents=True, exist_ok=True)
    db = prepare(args.workdir)
    tiles = tile_pool(db, args.tiles)
    log.info("%d tiles in the pool; load average %s on %d CPUs", len(tiles), load_avg(),
             os.cpu_count() or 0)
    server = Server(db, args.workdir, cache_mb=args.cache_mb, env={}, app=args.app)
    try:
        server.wait()
        run = run_noisy if args.noisy else run_soak if args.soak else run_load
        result = run(args, server, tiles)
    finally:
        server.stop()
    text = json.dumps(result, indent=2)
    log.info("%s", text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
