"""The heaviest chain the cost budget allows vs another client's uncached tiles (issue #18).

    .venv/bin/python bench/heavy.py                    # 30 s quiet, 30 s with the heavy client
    options: --duration 30 --heavy-clients 1 --workdir DIR --json OUT

One tile server (``bench/load.py``'s scene, app and uvicorn, tile caches off so every
victim tile renders) on 127.0.0.1. The victim: one client fetching random 256 px tiles of
a true-colour chain, first alone, then while the heavy client(s) send, back to back, 512 px
tiles of the most expensive chain the default budget accepts: 32 steps, 32 expression parts
with 2,000 terms in all (about 2,000 numpy operations over 262,144 pixels per tile), every
tile a new position. The server's RSS is sampled every 0.25 s. Reports the victim's p50/p95
quiet and loaded, their ratio, the heavy client's tiles/s and statuses, and the peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import (  # after the path
    COLLECTION,
    PLAIN,
    Server,
    Stats,
    load_avg,
    prepare,
    register,
    tile_clients,
    tile_pool,
)

log = logging.getLogger("bench.heavy")


def heaviest_chain(*, steps: int = 32, parts: int = 32, terms: int = 2000) -> dict:
    """The costliest chain the default budget accepts: ``parts`` expression parts of about
    ``terms / parts`` terms each, then masks up to ``steps`` steps, one band, a stretch."""
    per_part = terms // parts
    # "B08*1.0001" is 5 syntax nodes (BinOp, Name, Load, Constant, Mult), a "+" 2 more
    factors = max(1, (per_part + 1) // 7)  # 7 f - 1 nodes a part
    parts_text = [("+".join(f"B0{'8' if (k + p) % 2 else '4'}*1.{p:02d}{k:02d}"
                            for k in range(factors))) for p in range(parts)]
    rest = [{"name": "mask", "values": [float(v)]} for v in range(steps - 3)]
    return {"source": {"collection": COLLECTION},
            "steps": [{"name": "expression", "expression": ";".join(parts_text)}, *rest,
                      {"name": "band", "index": 0}, {"name": "scale", "min": 0, "max": 9e5}]}


async def heavy_clients(base: str, cid: str, tiles: list, *, clients: int,
                        duration: float, seed: int) -> Stats:
    """Clients sending 512 px tiles of the heavy chain back to back, each a new tile."""
    import httpx

    stats = Stats()
    deadline = time.monotonic() + duration

    async def one(i: int) -> None:
        rng = random.Random(seed * 100 + i)
        order = list(tiles)
        rng.shuffle(order)
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            for z, x, y in order:
                if time.monotonic() >= deadline:
                    break
                t0 = time.perf_counter()
                try:
                    r = await client.get(f"/api/chains/{cid}/tiles/{z}/{x}/{y}.png",
                                         params={"tilesize": 512})
                    stats.add(time.perf_counter() - t0, r.status_code)
                except httpx.HTTPError as exc:
                    stats.failed(exc)

    start = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(clients)))
    stats.seconds = time.monotonic() - start
    return stats


class RssSampler:
    """The server's peak RSS (MiB), sampled every ``period`` s in a thread."""

    def __init__(self, server: Server, period: float = 0.25) -> None:
        self.server, self.period = server, period
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss_mb()[0])
            self._stop.wait(self.period)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(args, server: Server, tiles: list) -> dict:
    async def setup() -> tuple[str, str]:
        import httpx

        async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
            return await register(client, PLAIN), await register(client, heaviest_chain())

    import httpx

    plain, heavy = asyncio.run(setup())
    concurrency = httpx.get(server.base + "/healthz").json()["render"]["concurrency"]
    asyncio.run(tile_clients(server.base, [plain], tiles[:20], clients=2, duration=3, seed=1))
    rss0 = server.rss_mb()[0]
    with RssSampler(server) as quiet_rss:
        quiet = asyncio.run(tile_clients(server.base, [plain], tiles, clients=1,
                                         duration=args.duration, seed=2))

    async def both():
        return await asyncio.gather(
            tile_clients(server.base, [plain], tiles, clients=1, duration=args.duration,
                         seed=3),
            heavy_clients(server.base, heavy, tiles, clients=args.heavy_clients,
                          duration=args.duration, seed=4))

    with RssSampler(server) as loaded_rss:
        loaded, attacker = asyncio.run(both())
    return {"mode": "heavy", "duration_s": args.duration, "heavy_clients": args.heavy_clients,
            "render_concurrency": concurrency,
            "victim_quiet": quiet.summary(), "victim_loaded": loaded.summary(),
            "p95_ratio": round(loaded.pct(95) / quiet.pct(95), 2),
            "heavy": {**attacker.summary(), "tiles_per_s": round(
                len(attacker.latencies) / attacker.seconds, 2) if attacker.seconds else 0},
            "server_rss_mb": {"start": round(rss0), "quiet_peak": round(quiet_rss.peak),
                              "loaded_peak": round(loaded_rss.peak)},
            "load_average_after": load_avg(), "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--heavy-clients", type=int, default=1,
                        help="connections sending the heavy chain at once")
    parser.add_argument("--tiles", type=int, default=3000, help="size of the tile pool")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "eox-bench-load")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600 or not 1 <= args.heavy_clients <= 16:
        parser.error("--duration must be in (0, 600] and --heavy-clients in [1, 16]")
    args.workdir.mkdir(parents=True, exist_ok=True)
    db = prepare(args.workdir)
    tiles = tile_pool(db, args.tiles)
    server = Server(db, args.workdir, cache_mb=0, env={})
    try:
        server.wait()
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
