"""The embedded catalog: one SQLite file with an R*Tree on item bboxes.

Why SQLite: stdlib, a single file, transactional writes (an interrupted ingest leaves the
catalog as it was), WAL lets several processes (tile service replicas) read while one
writes, and an R*Tree + indexed columns answer point/date/cloud queries in milliseconds
at a million items (see bench/RESULTS.md).

Layout: ``items`` keeps the full item JSON plus promoted, indexed columns (datetime range,
eo:cloud_cover, platform, constellation, processing:level, grid:code, sat:relative_orbit),
the exact bbox and the footprint as WKB; ``items_rtree`` indexes the bboxes; other
properties are filtered with ``json_extract``. ``queryables`` is maintained at write time.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

import pystac

from engine.catalog.base import Catalog, Query
from engine.catalog.sqlitems import STRUCTURAL_RELS, batches, item_rows, to_item
from engine.catalog.sqlsearch import SearchPlan
from engine.errors import CatalogError, NotFound, UnknownCollection

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY,
    max_span REAL NOT NULL DEFAULT 0,  -- longest start..end range of its items, seconds
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    rowid INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    datetime REAL,          -- properties.datetime, epoch seconds (NULL for range items)
    dt_lo REAL NOT NULL,    -- start of the item's time range (= datetime when it has one)
    dt_hi REAL NOT NULL,
    cloud REAL, platform TEXT, constellation TEXT, level TEXT, grid TEXT, orbit INTEGER,
    minx REAL, miny REAL, maxx REAL, maxy REAL,
    is_box INTEGER NOT NULL DEFAULT 0,  -- footprint equals its bbox: SQL test is exact
    geom BLOB,              -- footprint as WKB, for the exact intersection test
    json TEXT NOT NULL,     -- last: long rows spill to overflow pages read only on demand
    UNIQUE (collection, id)
);
CREATE INDEX IF NOT EXISTS items_coll_dt ON items (collection, dt_lo);
CREATE INDEX IF NOT EXISTS items_coll_cloud ON items (collection, cloud);
CREATE INDEX IF NOT EXISTS items_coll_platform ON items (collection, platform);
CREATE INDEX IF NOT EXISTS items_coll_grid ON items (collection, grid);
CREATE INDEX IF NOT EXISTS items_coll_orbit ON items (collection, orbit);
CREATE VIRTUAL TABLE IF NOT EXISTS items_rtree USING rtree (id, minx, maxx, miny, maxy);
CREATE TABLE IF NOT EXISTS queryables (
    collection TEXT NOT NULL, prop TEXT NOT NULL, PRIMARY KEY (collection, prop)
) WITHOUT ROWID;
"""

_UPSERT = """
INSERT INTO items (collection, id, datetime, dt_lo, dt_hi, cloud, platform, constellation,
                   level, grid, orbit, minx, miny, maxx, maxy, is_box, geom, json)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (collection, id) DO UPDATE SET
    datetime = excluded.datetime, dt_lo = excluded.dt_lo, dt_hi = excluded.dt_hi,
    cloud = excluded.cloud, platform = excluded.platform,
    constellation = excluded.constellation, level = excluded.level, grid = excluded.grid,
    orbit = excluded.orbit, minx = excluded.minx, miny = excluded.miny,
    maxx = excluded.maxx, maxy = excluded.maxy, is_box = excluded.is_box,
    geom = excluded.geom, json = excluded.json
RETURNING rowid
"""


class SQLiteCatalog(Catalog):
    """The embedded catalog in one SQLite file (created if missing).

    Safe to share between threads (one connection per thread) and processes (WAL).

    Args:
        path: the database file.
    """

    kind = "embedded"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._closed = False
        conn = self._conn()
        try:
            ready = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            if ready is None:  # only a new file is written on open; replicas just read
                with _transaction(conn):
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(
                        "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
        except (sqlite3.Error, CatalogError) as exc:
            self.close()
            raise CatalogError(f"cannot open the catalog {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SQLiteCatalog({self.location!r})"

    # -- connections ------------------------------------------------------------------
    def sql_connection(self) -> sqlite3.Connection:
        """A NEW connection to the same database file (WAL, busy timeout), owned by the
        caller: for modules that keep their own tables in the catalog file."""
        return _connect(self.path)

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise CatalogError(f"the catalog {self.location} is closed")
        conn = getattr(self._local, "conn", None)
        # A connection must not cross a fork: a child process opens its own.
        if conn is None or self._local.pid != os.getpid():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = _connect(self.path)
            except (OSError, sqlite3.Error) as exc:
                raise CatalogError(f"cannot open the catalog {self.path}: {exc}") from exc
            self._local.conn, self._local.pid = conn, os.getpid()
            with self._lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection this object opened (in all threads)."""
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    # -- collections ------------------------------------------------------------------
    def collections(self) -> list[pystac.Collection]:
        rows = self._conn().execute("SELECT json FROM collections ORDER BY id").fetchall()
        return [pystac.Collection.from_dict(json.loads(r[0]), migrate=False) for r in rows]

    def collection_ids(self) -> list[str]:
        """The collection ids, sorted (cheaper than :meth:`collections`)."""
        return [r[0] for r in self._conn().execute("SELECT id FROM collections ORDER BY id")]

    def collection(self, name: str) -> pystac.Collection:
        row = self._conn().execute("SELECT json FROM collections WHERE id = ?", (name,)).fetchone()
        if row is None:
            raise self._unknown(name)
        return pystac.Collection.from_dict(json.loads(row[0]), migrate=False)

    def add_collection(self, collection: pystac.Collection) -> None:
        """Create or update (upsert) a collection; its items are kept."""
        if not isinstance(collection, pystac.Collection):
            raise CatalogError(f"expected a pystac.Collection, got {type(collection).__name__}")
        data = collection.to_dict(include_self_link=False, transform_hrefs=False)
        data["links"] = [
            lk for lk in data.get("links", []) if lk.get("rel") not in STRUCTURAL_RELS
        ]
        conn = self._conn()
        with _transaction(conn):
            conn.execute(
                "INSERT INTO collections (id, json) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET json = excluded.json",
                (collection.id, json.dumps(data)),
            )

    def remove_collection(self, name: str) -> None:
        """Delete a collection and all its items, in one transaction."""
        conn = self._conn()
        with _transaction(conn):
            if conn.execute("SELECT 1 FROM collections WHERE id = ?", (name,)).fetchone() is None:
                raise self._unknown(name)
            conn.execute(
                "DELETE FROM items_rtree WHERE id IN "
                "(SELECT rowid FROM items WHERE collection = ?)",
                (name,),
            )
            conn.execute("DELETE FROM items WHERE collection = ?", (name,))
            conn.execute("DELETE FROM queryables WHERE collection = ?", (name,))
            conn.execute("DELETE FROM collections WHERE id = ?", (name,))

    def _check_collection(self, name: str) -> float:
        row = self._conn().execute(
            "SELECT max_span FROM collections WHERE id = ?", (name,)
        ).fetchone()
        if row is None:
            raise self._unknown(name)
        return float(row[0])

    def _unknown(self, name: str) -> UnknownCollection:
        return UnknownCollection(
            f"no collection {name!r} in the catalog", choices=self.collection_ids()
        )

    # -- items ------------------------------------------------------------------------
    def add_items(
        self, items: Iterable[pystac.Item | dict], *, collection: str
    ) -> list[str]:
        """Add or replace items of ``collection`` in ONE transaction: if anything fails
        (a bad item, an exception or KeyboardInterrupt from the iterable) nothing is kept.

        Items may be ``pystac.Item`` or STAC item dicts. Returns the ids written.
        """
        conn = self._conn()
        with _transaction(conn):
            row = conn.execute(
                "SELECT max_span FROM collections WHERE id = ?", (collection,)
            ).fetchone()
            if row is None:
                raise self._unknown(collection)
            max_span = float(row[0])
            props: set[str] = set()
            ids: dict[str, None] = {}
            for batch in batches(items, 512):
                for values in item_rows(batch, collection, props):
                    (rowid,) = conn.execute(_UPSERT, values).fetchone()
                    minx, miny, maxx, maxy = values[11:15]
                    if minx is None:
                        conn.execute("DELETE FROM items_rtree WHERE id = ?", (rowid,))
                    else:
                        conn.execute(
                            "INSERT OR REPLACE INTO items_rtree VALUES (?, ?, ?, ?, ?)",
                            (rowid, minx, maxx, miny, maxy),
                        )
                    max_span = max(max_span, values[4] - values[3])
                    ids[values[1]] = None
            conn.executemany(
                "INSERT OR IGNORE INTO queryables VALUES (?, ?)",
                [(collection, p) for p in sorted(props)],
            )
            conn.execute(
                "UPDATE collections SET max_span = ? WHERE id = ?", (max_span, collection)
            )
        return list(ids)

    def get_item(self, collection: str, item_id: str) -> pystac.Item:
        row = self._conn().execute(
            "SELECT json FROM items WHERE collection = ? AND id = ?", (collection, item_id)
        ).fetchone()
        if row is None:
            self._check_collection(collection)
            raise NotFound(f"no item {item_id!r} in the collection {collection!r}")
        return to_item(row[0])

    def has_item(self, collection: str, item_id: str) -> bool:
        row = self._conn().execute(
            "SELECT 1 FROM items WHERE collection = ? AND id = ?", (collection, item_id)
        ).fetchone()
        return row is not None

    def queryables(self, collection: str) -> set[str]:
        self._check_collection(collection)
        rows = self._conn().execute(
            "SELECT prop FROM queryables WHERE collection = ?", (collection,)
        )
        return {r[0] for r in rows}

    # -- search -----------------------------------------------------------------------
    def search(self, query: Query) -> list[pystac.Item]:
        plan = SearchPlan(query, max_span=self._check_collection(query.collection))
        conn = self._conn()
        if not plan.spatial:
            sql, params = plan.sql("i.json", limit=query.limit)
            return [to_item(r[0]) for r in conn.execute(sql, params)]
        rowids = list(plan.matching_rowids(conn, limit=query.limit))
        if not rowids:
            return []
        found = dict(
            conn.execute(
                "SELECT rowid, json FROM items WHERE rowid IN (SELECT value FROM json_each(?))",
                (json.dumps(rowids),),
            ).fetchall()
        )
        return [to_item(found[r]) for r in rowids]

    def count(self, query: Query) -> int:
        plan = SearchPlan(
            query.with_(limit=None, sortby=()), max_span=self._check_collection(query.collection)
        )
        conn = self._conn()
        if not plan.spatial:
            sql, params = plan.sql("count(*)", limit=None, order=False)
            return int(conn.execute(sql, params).fetchone()[0])
        return sum(1 for _ in plan.matching_rowids(conn, limit=None, order=False))

    def explain(self, query: Query) -> list[str]:
        """SQLite's plan for the query's main statement (for tuning and the benchmark)."""
        plan = SearchPlan(query, max_span=self._check_collection(query.collection))
        sql, params = plan.sql("i.rowid", limit=query.limit)
        return [r[3] for r in self._conn().execute("EXPLAIN QUERY PLAN " + sql, params)]


# -- helpers ---------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, timeout=30.0
    )
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe in WAL
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache per connection
    conn.execute("PRAGMA mmap_size = 1073741824")
    return conn


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ROLLBACK on any exception, KeyboardInterrupt too."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot write the catalog: {exc}") from exc
        return self.conn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as err:
                self.conn.execute("ROLLBACK")
                raise CatalogError(f"cannot write the catalog: {err}") from err
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise CatalogError(f"cannot write the catalog: {exc}") from exc
