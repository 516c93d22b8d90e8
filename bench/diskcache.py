"""Second-level tile cache: files (service.diskcache) vs a SQLite table (run manually).

    .venv/bin/python bench/diskcache.py [--tiles 2000] [--procs 2]

Both stores keep the same tiles (random bytes of 10-90 KiB, like PNG tiles) under a
temporary folder. Measured: writes and hits, in one process and in ``--procs`` processes
at once (each writing its own tiles, then reading every tile, as uvicorn workers would).
The SQLite store is the straightforward alternative: one table (key, blob, last use),
WAL mode, ``synchronous=NORMAL``, one transaction per write, a connection per process.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

log = logging.getLogger("bench.diskcache")


class SQLiteTiles:
    """The alternative: tiles as blobs in a SQLite table."""

    def __init__(self, path: Path) -> None:
        self.con = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.execute("CREATE TABLE IF NOT EXISTS tiles (key TEXT PRIMARY KEY, "
                         "data BLOB NOT NULL, used REAL NOT NULL)")

    def put(self, key: str, data: bytes) -> None:
        self.con.execute("INSERT OR REPLACE INTO tiles VALUES (?, ?, ?)", (key, data, time.time()))

    def get(self, key: str) -> bytes | None:
        row = self.con.execute("SELECT data FROM tiles WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]


def _files(root: Path):
    from service.cache import CachedTile
    from service.diskcache import DiskKey, DiskTileCache, etag_of

    cache = DiskTileCache(root, 2**40)

    def key(i: int) -> DiskKey:
        return DiskKey("0123456789abcdef", "fp", 16, 30000 + i // 64, 20000 + i % 64, 256, "png")

    def put(i: int, data: bytes) -> None:
        cache.put(key(i), CachedTile(content=data, etag=etag_of(data)))

    def get(i: int) -> bytes | None:
        hit = cache.get(key(i))
        return None if hit is None else hit.content

    return put, get


def _sqlite(root: Path):
    store = SQLiteTiles(root / "tiles.sqlite")
    return (lambda i, data: store.put(f"0123456789abcdef/fp/16/{i}.png", data),
            lambda i: store.get(f"0123456789abcdef/fp/16/{i}.png"))


STORES = {"files": _files, "sqlite": _sqlite}


def payloads(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [os.urandom(rng.randint(10, 90) * 1024) for _ in range(n)]


def worker(store: str, root: str, ids: list[int], all_ids: list[int], seed: int,
           barrier, out) -> None:
    put, get = STORES[store](Path(root))
    data = payloads(len(ids), seed)
    barrier.wait()
    t0 = time.perf_counter()
    for i, d in zip(ids, data, strict=True):
        put(i, d)
    t_put = time.perf_counter() - t0
    barrier.wait()
    lat = []
    for i in all_ids:
        t = time.perf_counter()
        assert get(i) is not None
        lat.append(time.perf_counter() - t)
    out.put((t_put / len(ids), lat))


def run(store: str, n: int, procs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"eox-bench-{store}-") as root:
        ids = list(range(n))
        random.Random(1).shuffle(ids)
        chunks = [ids[k::procs] for k in range(procs)]
        reads = ids[:]
        random.Random(2).shuffle(reads)
        ctx = mp.get_context("spawn")
        barrier, out = ctx.Barrier(procs), ctx.Queue()
        ps = [ctx.Process(target=worker, args=(store, root, chunk, reads, k, barrier, out))
              for k, chunk in enumerate(chunks)]
        for p in ps:
            p.start()
        results = [out.get(timeout=600) for _ in ps]
        for p in ps:
            p.join()
        lat = [x for _, ls in results for x in ls]
        return {"put_ms": 1000 * statistics.mean(r[0] for r in results),
                "get_p50_ms": 1000 * statistics.median(lat),
                "get_p95_ms": 1000 * statistics.quantiles(lat, n=20)[18]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("%d tiles of 10-90 KiB; load average %s", args.tiles, os.getloadavg())
    for procs in sorted({1, args.procs}):
        for r in range(args.rounds):
            for store in (("files", "sqlite") if r % 2 == 0 else ("sqlite", "files")):
                res = run(store, args.tiles, procs)
                log.info("%-6s procs=%d round %d: put %.3f ms/tile, get p50 %.3f ms, p95 %.3f ms",
                         store, procs, r + 1, res["put_ms"], res["get_p50_ms"],
                         res["get_p95_ms"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
