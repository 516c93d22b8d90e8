"""Catalog query latency: embedded SQLite vs DuckDB (stac-geoparquet) vs a Python scan.

    .venv/bin/python bench/catalog.py [--n 1000000] [--queries 300] [--scan-n 100000]

N synthetic Sentinel-2-like items (random MGRS-like tiles over the globe, ~1 degree skewed
footprints, ~600 acquisitions per tile over 8 years, cloud 0-100 with 5% unknown, 4 band
assets) are written to (a) our SQLiteCatalog, (b) a stac-geoparquet file queried by DuckDB,
both by reading the parquet file and from a native DuckDB table. Each engine answers the
same random queries "point + 1-year date range + cloud <= X": SQLite through the public
``Collection`` API (full pystac Items) and ids-only; DuckDB ids-only (bbox columns in SQL,
exact footprint test with shapely on the candidates, as our backend does). The plain Python
scan over pystac Items is timed on the first ``--scan-n`` items with fewer queries and
scaled linearly to N (it is reported as such). Result counts must agree across engines.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pystac
import shapely
from shapely.geometry import Point, shape

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import Collection
from engine.catalog import SQLiteCatalog

log = logging.getLogger("bench.catalog")

COLLECTION = "sentinel-2-l2a"
T0 = datetime(2017, 1, 1, tzinfo=UTC)
YEARS = 8
SPAN = YEARS * 365 * 86400
ACQ_PER_TILE = 600
BANDS = (("B02", "blue"), ("B03", "green"), ("B04", "red"), ("B08", "nir"))


# -- synthetic items --------------------------------------------------------------------


def make_tiles(rng: np.random.Generator, n_tiles: int) -> list[tuple[str, list[list[float]], int]]:
    """(grid code, footprint ring, relative orbit) of random MGRS-like tiles."""
    tiles = []
    letters = "CDEFGHJKLMNPQRSTUVWX"
    for k in range(n_tiles):
        lat = float(rng.uniform(-60, 70))
        lon = float(rng.uniform(-178, 178))
        # ~110 km: 1 degree of latitude, 1/cos(lat) degrees of longitude, skewed as UTM is
        dx = min(1.0 / math.cos(math.radians(lat)), 3.0)
        skew = float(rng.uniform(-0.15, 0.15))
        ring = [
            [lon, lat], [lon + dx, lat + skew], [lon + dx - skew, lat + 1 + skew], [lon - skew, lat + 1],
        ]
        ring = [[round(x, 6), round(y, 6)] for x, y in ring] + [[round(lon, 6), round(lat, 6)]]
        zone = int((lon + 180) // 6) + 1
        code = f"MGRS-{zone:02d}{letters[int((lat + 80) // 8) % 20]}{k:05d}"
        tiles.append((code, ring, int(rng.integers(1, 144))))
    return tiles


def make_items(n: int, seed: int = 7, only_first: int | None = None) -> tuple[list[dict], list]:
    """N STAC item dicts and the tiles they lie on (or only the first ``only_first`` items
    of that same set)."""
    rng = np.random.default_rng(seed)
    tiles = make_tiles(rng, max(20, n // ACQ_PER_TILE))
    tile_of = rng.integers(0, len(tiles), n)
    seconds = rng.integers(0, SPAN, n)
    cloud = np.round(rng.uniform(0, 100, n), 2)
    cloud_known = rng.random(n) > 0.05
    sizes = rng.integers(20_000_000, 140_000_000, (n, len(BANDS)))
    platforms = np.where(rng.random(n) < 0.5, "sentinel-2a", "sentinel-2b")
    items = []
    for k in range(n if only_first is None else min(n, only_first)):
        code, ring, orbit = tiles[tile_of[k]]
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        when = T0 + timedelta(seconds=int(seconds[k]))
        item_id = f"S2X_{code[5:]}_{when:%Y%m%dT%H%M%S}_{k:07d}"
        props = {
            "datetime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "platform": str(platforms[k]),
            "constellation": "sentinel-2",
            "processing:level": "L2A",
            "grid:code": code,
            "sat:relative_orbit": orbit,
            "proj:epsg": 32600 + int(code[5:7]),
            "bench:seq": k,
        }
        if cloud_known[k]:
            props["eo:cloud_cover"] = float(cloud[k])
        items.append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "stac_extensions": [],
                "id": item_id,
                "collection": COLLECTION,
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "bbox": [min(xs), min(ys), max(xs), max(ys)],
                "properties": props,
                "links": [],
                "assets": {
                    band: {
                        "href": f"/data/s2/{item_id}/{band}.tif",
                        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                        "roles": ["data"],
                        "eo:bands": [{"name": band, "common_name": common}],
                        "file:size": int(sizes[k, j]),
                    }
                    for j, (band, common) in enumerate(BANDS)
                },
            }
        )
    return items, tiles


def make_queries(tiles: list, count: int, seed: int = 11) -> list[tuple[float, float, datetime, datetime, float]]:
    """(lon, lat, start, end, max cloud): points inside random tiles, 1-year ranges."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        _, ring, _ = tiles[int(rng.integers(0, len(tiles)))]
        x0, y0 = ring[0]
        lon, lat = x0 + float(rng.uniform(0.2, 0.8)), y0 + float(rng.uniform(0.2, 0.8))
        start = T0 + timedelta(seconds=int(rng.integers(0, SPAN - 365 * 86400)))
        out.append((lon, lat, start, start + timedelta(days=365), float(rng.choice([10, 20, 30, 50]))))
    return out


# -- engines ----------------------------------------------------------------------------


def chunks(items: list[dict], size: int) -> Iterator[list[dict]]:
    for k in range(0, len(items), size):
        yield items[k : k + size]


def build_sqlite(items: list[dict], path: Path) -> SQLiteCatalog:
    cat = SQLiteCatalog(path)
    cat.add_collection(
        pystac.Collection(
            COLLECTION, "benchmark", pystac.Extent(
                pystac.SpatialExtent([[-180, -90, 180, 90]]),
                pystac.TemporalExtent([[T0, T0 + timedelta(seconds=SPAN)]]),
            ),
        )
    )
    for part in chunks(items, 100_000):
        cat.add_items(part, collection=COLLECTION)
    return cat


def build_parquet(items: list[dict], path: Path) -> None:
    import stac_geoparquet.arrow as sga

    reader = sga.parse_stac_items_to_arrow(items, chunk_size=100_000)
    sga.to_parquet(reader, path)


def duckdb_query_fn(con, source: str) -> Callable[[tuple], list[str]]:
    """ids matching one query: bbox/date/cloud in SQL, exact footprint with shapely."""
    sql = f"""
        SELECT id, geometry FROM {source}
        WHERE bbox.xmin <= $x AND bbox.xmax >= $x AND bbox.ymin <= $y AND bbox.ymax >= $y
          AND datetime >= $start AND datetime <= $end AND "eo:cloud_cover" <= $cloud
    """

    def run(q: tuple) -> list[str]:
        lon, lat, start, end, cloud = q
        rows = con.execute(
            sql, {"x": lon, "y": lat, "start": start, "end": end, "cloud": cloud}
        ).fetchall()
        if not rows:
            return []
        geoms = shapely.from_wkb([bytes(r[1]) for r in rows])
        ok = shapely.intersects(geoms, Point(lon, lat))
        return [r[0] for r, hit in zip(rows, ok, strict=True) if hit]

    return run


def sqlite_ids_fn(cat: SQLiteCatalog) -> Callable[[tuple], list[str]]:
    """ids through the backend's SQL + exact test (no JSON parsing): the DuckDB analogue."""
    from engine.catalog.sqlsearch import SearchPlan

    def run(q: tuple) -> list[str]:
        lon, lat, start, end, cloud = q
        query = base.filter_point(lon, lat).filter_date(start, end).filter("eo:cloud_cover", "<=", cloud).query
        plan = SearchPlan(query, max_span=cat._check_collection(COLLECTION))
        conn = cat._conn()
        rowids = list(plan.matching_rowids(conn, limit=None, order=False))
        if not rowids:
            return []
        return [r[0] for r in conn.execute(
            "SELECT id FROM items WHERE rowid IN (SELECT value FROM json_each(?))", (json.dumps(rowids),)
        )]

    base = Collection(COLLECTION, catalog=cat)
    return run


def sqlite_items_fn(cat: SQLiteCatalog) -> Callable[[tuple], list[str]]:
    """Full pystac Items through the public Collection API, as the dashboard asks."""
    base = Collection(COLLECTION, catalog=cat)

    def run(q: tuple) -> list[str]:
        lon, lat, start, end, cloud = q
        coll = base.filter_point(lon, lat).filter_date(start, end).filter("eo:cloud_cover", "<=", cloud)
        return [i.id for i in coll.items()]

    return run


def scan_fn(items: list[pystac.Item]) -> Callable[[tuple], list[str]]:
    """A plain Python scan over pystac Items (bbox first, then the footprint)."""

    def run(q: tuple) -> list[str]:
        lon, lat, start, end, cloud = q
        pt = Point(lon, lat)
        out = []
        for item in items:
            w, s, e, n = item.bbox
            if not (w <= lon <= e and s <= lat <= n):
                continue
            if not (start <= item.datetime <= end):
                continue
            cc = item.properties.get("eo:cloud_cover")
            if cc is None or cc > cloud:
                continue
            if shape(item.geometry).intersects(pt):
                out.append(item.id)
        return out

    return run


def timed(
    fn: Callable[[tuple], list[str]], queries: list[tuple], *, passes: int = 2
) -> tuple[list[np.ndarray], list[int]]:
    """Per-pass query times (ms); pass 1 meets whatever the page cache holds, pass 2 is warm."""
    runs, counts = [], []
    for _ in range(passes):
        times, counts = [], []
        for q in queries:
            t = time.perf_counter()
            counts.append(len(fn(q)))
            times.append((time.perf_counter() - t) * 1000)
        runs.append(np.array(times))
    return runs, counts


def size_mb(*paths: Path) -> float:
    total = 0
    for p in paths:
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        elif p.exists():
            total += p.stat().st_size
    return total / 1e6


# -- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="number of items")
    parser.add_argument("--queries", type=int, default=300, help="random queries per engine")
    parser.add_argument("--scan-n", type=int, default=100_000, help="items in the Python scan")
    parser.add_argument("--scan-queries", type=int, default=10, help="queries for the scan")
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default: a temp dir")
    parser.add_argument(
        "--reuse", action="store_true", help="query the databases already in --workdir"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import duckdb

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        items, tiles = make_items(args.n, only_first=args.scan_n if args.reuse else None)
        log.info("generated %d items on %d tiles in %.1f s", len(items), len(tiles), time.perf_counter() - t)
        queries = make_queries(tiles, args.queries)

        db, pq, duck_db = work / "catalog.sqlite", work / "items.parquet", work / "items.duckdb"
        reuse = args.reuse and db.exists() and pq.exists() and duck_db.exists()
        build_sqlite_s = build_pq_s = build_tbl_s = float("nan")
        if not reuse:
            for old in (db, pq, duck_db):
                old.unlink(missing_ok=True)
            t = time.perf_counter()
            build_sqlite(items, db).close()
            build_sqlite_s = time.perf_counter() - t
            t = time.perf_counter()
            build_parquet(items, pq)
            build_pq_s = time.perf_counter() - t
            t = time.perf_counter()
            con = duckdb.connect(str(duck_db))
            con.execute(f"CREATE TABLE items AS SELECT * FROM read_parquet('{pq}')")
            con.execute("CHECKPOINT")
            con.close()
            build_tbl_s = time.perf_counter() - t + build_pq_s
        cat = SQLiteCatalog(db)
        sqlite_mb = size_mb(db, db.with_name(db.name + "-wal"))
        con_tbl = duckdb.connect(str(duck_db))
        t = time.perf_counter()
        # Rows ordered by longitude let DuckDB's zonemaps skip row groups (its best case).
        con_tbl.execute(
            "CREATE OR REPLACE TEMP TABLE items_sorted AS SELECT * FROM items ORDER BY bbox.xmin"
        )
        build_sorted_s = time.perf_counter() - t + build_tbl_s
        con_pq = duckdb.connect()

        results: dict[str, tuple[np.ndarray, list[int]]] = {}
        results["sqlite (Collection API, pystac Items)"] = timed(sqlite_items_fn(cat), queries)
        results["sqlite (ids only)"] = timed(sqlite_ids_fn(cat), queries)
        results["duckdb over stac-geoparquet file (ids)"] = timed(
            duckdb_query_fn(con_pq, f"read_parquet('{pq}')"), queries
        )
        results["duckdb native table (ids)"] = timed(duckdb_query_fn(con_tbl, "items"), queries)
        results["duckdb table sorted by lon (ids)"] = timed(
            duckdb_query_fn(con_tbl, "items_sorted"), queries
        )
        reference = results["sqlite (ids only)"][1]
        for name, (_, counts) in results.items():
            if counts != reference:
                raise SystemExit(f"result counts differ between sqlite and {name}")

        # The Python scan: a subset, fewer queries, checked against DuckDB on the same subset.
        scan_n = min(args.scan_n, args.n, len(items))
        t = time.perf_counter()
        subset = [pystac.Item.from_dict(d, migrate=False) for d in items[:scan_n]]
        load_scan_s = time.perf_counter() - t
        scan_q = queries[: args.scan_queries]
        (scan_times,), scan_counts = timed(scan_fn(subset), scan_q, passes=1)
        sub_fn = duckdb_query_fn(con_pq, f"(SELECT * FROM read_parquet('{pq}') WHERE \"bench:seq\" < {scan_n})")
        if [len(sub_fn(q)) for q in scan_q] != scan_counts:
            raise SystemExit("the Python scan disagrees with DuckDB on the same subset")
        scale = args.n / scan_n

        log.info("")
        log.info("N = %d items, %d queries (point + 1-year range + cloud <= 10..50)", args.n, args.queries)
        log.info("mean result count: %.1f items (min %d, max %d)", np.mean(reference), min(reference), max(reference))
        log.info(
            "%-40s %13s %13s %9s %8s", "engine", "pass1 p50/p95", "pass2 p50/p95", "build s", "size MB"
        )
        builds = {
            "sqlite (Collection API, pystac Items)": (build_sqlite_s, sqlite_mb),
            "sqlite (ids only)": (build_sqlite_s, sqlite_mb),
            "duckdb over stac-geoparquet file (ids)": (build_pq_s, size_mb(pq)),
            "duckdb native table (ids)": (build_tbl_s, size_mb(duck_db)),
            "duckdb table sorted by lon (ids)": (build_sorted_s, float("nan")),
        }
        for name, (runs, _) in results.items():
            b, mb = builds[name]
            cols = [f"{np.percentile(r, 50):6.1f}/{np.percentile(r, 95):6.1f}" for r in runs]
            log.info("%-40s %13s %13s %9.0f %8.0f", name, *cols, b, mb)
        log.info(
            "%-40s %6.0f/%6.0f %13s %9s %8s",
            f"python scan, pystac (x{scale:g} from {scan_n})",
            np.percentile(scan_times, 50) * scale, np.percentile(scan_times, 95) * scale,
            "-", f"{load_scan_s * scale:.0f} load", "-",
        )
        log.info("python scan on %d items measured: p50 %.1f ms, %d queries; counts match DuckDB",
                 scan_n, np.percentile(scan_times, 50), len(scan_q))
        log.info("sqlite plan: %s", " | ".join(cat.explain(
            Collection(COLLECTION, catalog=cat).filter_point(*queries[0][:2])
            .filter_date(*queries[0][2:4]).filter("eo:cloud_cover", "<=", 20).query)))
        cat.close()
        con_pq.close()
        con_tbl.close()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
