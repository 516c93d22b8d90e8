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
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import shapely
import shapely.geometry

from engine.catalog.base import OPERATORS, Catalog, Filter, Query
from engine.errors import (
    CatalogError,
    IngestError,
    InvalidQuery,
    NotFound,
    UnknownCollection,
)
from engine.timeutil import bbox_geometry, date_bound, is_datetime_property, parse_datetime

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

#: STAC property -> promoted column of ``items`` (indexed where queries need it).
PROMOTED: dict[str, str] = {
    "eo:cloud_cover": "cloud",
    "platform": "platform",
    "constellation": "constellation",
    "processing:level": "level",
    "grid:code": "grid",
    "sat:relative_orbit": "orbit",
}

#: Links that tie an item or collection to the catalog it came from; not stored.
_STRUCTURAL_RELS = frozenset({"self", "root", "parent", "collection", "child", "item"})

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
            lk for lk in data.get("links", []) if lk.get("rel") not in _STRUCTURAL_RELS
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
            for batch in _batches(items, 512):
                for values in _item_rows(batch, collection, props):
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
        return _to_item(row[0])

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
        plan = _Plan(query, max_span=self._check_collection(query.collection))
        conn = self._conn()
        if not plan.spatial:
            sql, params = plan.sql("i.json", limit=query.limit)
            return [_to_item(r[0]) for r in conn.execute(sql, params)]
        rowids = list(plan.matching_rowids(conn, limit=query.limit))
        if not rowids:
            return []
        found = dict(
            conn.execute(
                "SELECT rowid, json FROM items WHERE rowid IN (SELECT value FROM json_each(?))",
                (json.dumps(rowids),),
            ).fetchall()
        )
        return [_to_item(found[r]) for r in rowids]

    def count(self, query: Query) -> int:
        plan = _Plan(
            query.with_(limit=None, sortby=()), max_span=self._check_collection(query.collection)
        )
        conn = self._conn()
        if not plan.spatial:
            sql, params = plan.sql("count(*)", limit=None, order=False)
            return int(conn.execute(sql, params).fetchone()[0])
        return sum(1 for _ in plan.matching_rowids(conn, limit=None, order=False))

    def explain(self, query: Query) -> list[str]:
        """SQLite's plan for the query's main statement (for tuning and the benchmark)."""
        plan = _Plan(query, max_span=self._check_collection(query.collection))
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


_ITEM_FIELDS = frozenset(
    {"id", "geometry", "bbox", "stac_extensions", "collection", "links", "assets",
     "properties", "type", "stac_version"}
)


def _to_item(text: str) -> pystac.Item:
    """A pystac Item from stored JSON. Twice as fast as ``Item.from_dict``: the JSON was
    normalized at write time, so migration and extension deprecation checks are skipped."""
    d = json.loads(text)
    props = d.get("properties") or {}
    when = props.get("datetime")
    item = pystac.Item(
        id=d["id"],
        geometry=d.get("geometry"),
        bbox=d.get("bbox"),
        datetime=parse_datetime(when) if when else None,
        properties=props,
        stac_extensions=d.get("stac_extensions"),
        collection=d.get("collection"),
        extra_fields={k: v for k, v in d.items() if k not in _ITEM_FIELDS},
        assets={k: pystac.Asset.from_dict(v) for k, v in (d.get("assets") or {}).items()},
    )
    for link in d.get("links") or []:
        item.add_link(pystac.Link.from_dict(link))
    return item


def _epoch(value: str | datetime | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_datetime(value)
    return value.timestamp()


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _item_rows(batch: list[Any], collection: str, props_seen: set[str]) -> list[tuple[Any, ...]]:
    """The ``items`` rows of a batch of items; footprints are parsed in one vectorized call.
    Raises IngestError naming the first bad item."""
    prepared = [_prepare(item, collection) for item in batch]
    geojson = [json.dumps(p[0]["geometry"]) for p in prepared if p[0].get("geometry") is not None]
    try:
        geoms = iter(shapely.from_geojson(geojson)) if geojson else iter(())
    except shapely.errors.ShapelyError as exc:  # find and name the bad one
        for data, *_ in prepared:
            if data.get("geometry") is not None:
                _geometry(data["id"], data["geometry"])
        raise IngestError(f"an item has an invalid geometry: {exc}") from None
    rows = []
    for data, dt, lo, hi in prepared:
        geom_wkb, is_box, bounds = None, 0, (None, None, None, None)
        if data.get("geometry") is not None:
            geom = next(geoms)
            if geom is None or geom.is_empty:
                raise IngestError(f"item {data['id']!r} has an empty or invalid geometry")
            bounds = tuple(float(v) for v in geom.bounds)
            if not (-180 <= bounds[0] <= bounds[2] <= 180 and -90 <= bounds[1] <= bounds[3] <= 90):
                raise IngestError(f"item {data['id']!r} geometry is not in WGS84 lon/lat: {bounds}")
            is_box = int(_is_box(geom, bounds))
            geom_wkb = shapely.to_wkb(geom)
            data["bbox"] = list(bounds)
        props = data["properties"]
        props_seen.update(props)
        cloud = props.get("eo:cloud_cover")
        orbit = props.get("sat:relative_orbit")
        rows.append((
            collection, data["id"], dt, lo, hi,
            float(cloud) if isinstance(cloud, (int, float)) else None,
            props.get("platform"), props.get("constellation"), props.get("processing:level"),
            props.get("grid:code"), int(orbit) if isinstance(orbit, (int, float)) else None,
            *bounds, is_box, geom_wkb, json.dumps(data, separators=(",", ":")),
        ))
    return rows


def _is_box(geom: shapely.Geometry, bounds: tuple[float, ...]) -> bool:
    """True if the footprint is exactly its bbox (then SQL bound checks are exact)."""
    if geom.geom_type != "Polygon" or len(geom.interiors) or len(geom.exterior.coords) != 5:
        return False
    w, s, e, n = bounds
    corners = {(w, s), (w, n), (e, s), (e, n)}
    coords = {(float(x), float(y)) for x, y, *_ in geom.exterior.coords}
    return coords == corners and w < e and s < n


def _geometry(item_id: str, geometry: Any) -> shapely.Geometry:
    try:
        return shapely.geometry.shape(geometry)
    except Exception as exc:  # shapely raises several types for malformed GeoJSON
        raise IngestError(f"item {item_id!r} has an invalid geometry: {exc}") from None


def _prepare(item: pystac.Item | dict, collection: str) -> tuple[dict, float | None, float, float]:
    """The item as a dict ready to store, with its datetime and time range (epoch s)."""
    if isinstance(item, pystac.Item):
        data = item.to_dict(include_self_link=False, transform_hrefs=False)
    elif isinstance(item, dict):
        data = dict(item)
    else:
        raise IngestError(f"expected a pystac.Item or a STAC item dict, got {type(item).__name__}")
    item_id = data.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise IngestError(f"an item has no id (in collection {collection!r})")
    props = data.get("properties")
    if not isinstance(props, dict):
        raise IngestError(f"item {item_id!r} has no properties")
    try:
        dt = _epoch(props.get("datetime"))
        lo = _epoch(props.get("start_datetime")) if dt is None else dt
        hi = _epoch(props.get("end_datetime")) if dt is None else dt
    except Exception as exc:  # InvalidQuery from the parser, or a non-string value
        raise IngestError(f"item {item_id!r} has an unreadable datetime: {exc}") from None
    if lo is None or hi is None:
        raise IngestError(f"item {item_id!r} has neither datetime nor start/end_datetime")
    if data.get("geometry") is not None and not isinstance(data["geometry"], dict):
        raise IngestError(f"item {item_id!r} has an invalid geometry: not a GeoJSON object")
    data["collection"] = collection
    data["links"] = [lk for lk in data.get("links", []) if lk.get("rel") not in _STRUCTURAL_RELS]
    return data, dt, lo, hi


#: Query areas (square degrees) up to which the R*Tree drives a query that also has a
#: date range; larger areas start from the (collection, date) index instead.
RTREE_MAX_AREA = 400.0

_EPOCH_SQL = "round((julianday({}) - 2440587.5) * 86400.0, 3)"


class _Plan:
    """The SQL for one Query: WHERE clause, ORDER BY, and the exact spatial test."""

    def __init__(self, query: Query, *, max_span: float) -> None:
        self.query = query
        self.where: list[str] = ["i.collection = ?"]
        self.params: list[Any] = [query.collection]
        self.spatial = query.bbox is not None or query.intersects is not None
        self._time(query, max_span)
        for f in query.filters:
            self._filter(f)
        if query.ids is not None:
            self.where.append("i.id IN (SELECT value FROM json_each(?))")
            self.params.append(json.dumps(list(query.ids)))
        self.order = self._order(query.sortby)
        self.shapes: list[shapely.Geometry] = []
        self.rect_query = True
        self.area = 0.0
        if self.spatial:
            self._space(query)

    # time range: items whose [dt_lo, dt_hi] overlaps [start, end]
    def _time(self, query: Query, max_span: float) -> None:
        if query.end is not None:
            self.where.append("i.dt_lo <= ?")
            self.params.append(query.end.timestamp())
        if query.start is not None:
            start = query.start.timestamp()
            # The first bound lets the (collection, dt_lo) index range-scan from both sides.
            self.where.append("i.dt_lo >= ? AND i.dt_hi >= ?")
            self.params += [start - max_span, start]

    def _filter(self, f: Filter) -> None:
        if f.op not in OPERATORS:
            raise InvalidQuery(f"unknown operator {f.op!r}", choices=OPERATORS)
        expr, params, conv = _column(f.prop)
        if f.op == "in":
            if not isinstance(f.value, (list, tuple, set, frozenset)):
                raise InvalidQuery(f"'in' takes a list of values, got {f.value!r}")
            self.where.append(f"{expr} IN (SELECT value FROM json_each(?))")
            self.params += [*params, json.dumps([conv(v) for v in f.value])]
        else:
            self.where.append(f"{expr} {f.op} ?")
            self.params += [*params, conv(f.value)]

    def _order(self, sortby: Sequence[tuple[str, bool]]) -> str:
        terms: list[str] = []
        params: list[Any] = []
        for prop, ascending in sortby or (("datetime", False),):
            expr, p, _ = _column(prop, sort=True)
            # Missing values sort last in both directions (as in DuckDB and most STAC APIs).
            terms.append(f"({expr}) IS NULL, {expr} {'ASC' if ascending else 'DESC'}")
            params += p + p
        self.order_params = params
        return ", ".join([*terms, "i.id"])

    def _space(self, query: Query) -> None:
        # Bounds every candidate's bbox must satisfy: the AND of each shape's overlap test.
        lo_x, lo_y, hi_x, hi_y = -1e9, -1e9, 1e9, 1e9
        if query.bbox is not None:
            self.shapes.append(bbox_geometry(query.bbox))
        if query.intersects is not None:
            try:
                shape = shapely.geometry.shape(query.intersects)
            except Exception as exc:  # shapely raises several types for malformed GeoJSON
                raise InvalidQuery(f"not a valid GeoJSON geometry: {exc}") from None
            self.shapes.append(shape)
            self.rect_query = bool(
                shape.geom_type == "Point" or shape.equals(bbox_geometry(shape.bounds))
            )
        for shape in self.shapes:
            w, s, e, n = shape.bounds
            lo_x, lo_y, hi_x, hi_y = max(lo_x, w), max(lo_y, s), min(hi_x, e), min(hi_y, n)
            shapely.prepare(shape)
        self.area = max(0.0, hi_x - lo_x) * max(0.0, hi_y - lo_y)
        # The R*Tree stores float32 boxes rounded outward: it preselects, the exact float64
        # columns decide.
        self.where.append(
            "r.minx <= ? AND r.maxx >= ? AND r.miny <= ? AND r.maxy >= ? "
            "AND i.minx <= ? AND i.maxx >= ? AND i.miny <= ? AND i.maxy >= ?"
        )
        self.params += [hi_x, lo_x, hi_y, lo_y] * 2

    def sql(self, columns: str, *, limit: int | None, order: bool = True) -> tuple[str, list[Any]]:
        # CROSS JOIN fixes the loop order (SQLite honours it): a small area is answered
        # from the R*Tree; a large area with a date range from the date index.
        if not self.spatial:
            source = "items i"
        elif self.area <= RTREE_MAX_AREA or (self.query.start is None and self.query.end is None):
            source = "items_rtree r CROSS JOIN items i ON i.rowid = r.id"
        else:
            source = "items i INDEXED BY items_coll_dt CROSS JOIN items_rtree r ON r.id = i.rowid"
        sql = f"SELECT {columns} FROM {source} WHERE {' AND '.join(self.where)}"
        params = list(self.params)
        if order:
            sql += f" ORDER BY {self.order}"
            params += self.order_params
        if limit is not None:
            sql += " LIMIT ?"
            params.append(min(int(limit), 2**62))  # beyond SQLite's integers: no limit
        return sql, params

    def matching_rowids(
        self, conn: sqlite3.Connection, *, limit: int | None, order: bool = True
    ) -> Iterator[int]:
        """Rowids passing the exact footprint test, in order, at most ``limit``."""
        sql, params = self.sql("i.rowid, i.is_box, i.geom", limit=None, order=order)
        cursor = conn.execute(sql, params)
        left = limit if limit is not None else -1
        while left != 0:
            rows = cursor.fetchmany(1024)
            if not rows:
                return
            keep = self._exact(rows)
            for (rowid, _, _), ok in zip(rows, keep, strict=True):
                if ok:
                    yield rowid
                    left -= 1
                    if left == 0:
                        return

    def _exact(self, rows: list[tuple[int, int, bytes]]) -> np.ndarray:
        keep = np.ones(len(rows), dtype=bool)
        need = np.array(
            [not (self.rect_query and is_box) for _, is_box, _ in rows], dtype=bool
        )
        if need.any():
            geoms = shapely.from_wkb([rows[k][2] for k in np.flatnonzero(need)])
            ok = np.ones(len(geoms), dtype=bool)
            for shape in self.shapes:
                ok &= shapely.intersects(geoms, shape)
            keep[need] = ok
        return keep


def _column(prop: str, *, sort: bool = False) -> tuple[str, list[Any], Any]:
    """SQL expression, its parameters, and the value converter for a property."""
    if prop == "id":
        return "i.id", [], _same
    if prop == "collection":
        return "i.collection", [], _same
    if prop == "datetime":
        return ("i.dt_lo" if sort else "i.datetime"), [], _to_epoch_value
    if prop in PROMOTED:
        return f"i.{PROMOTED[prop]}", [], _same
    if '"' in prop or not prop or not prop.isprintable():
        raise InvalidQuery(f"invalid property name {prop!r}")
    path = f'$.properties."{prop}"'
    if is_datetime_property(prop):
        return _EPOCH_SQL.format("json_extract(i.json, ?)"), [path], _to_epoch_ms
    return "json_extract(i.json, ?)", [path], _same


def _same(value: Any) -> Any:
    return value


def _to_epoch_value(value: Any) -> float:
    if isinstance(value, (datetime, date, str)):
        bound = date_bound(value, end=False)
        assert bound is not None
        return bound.timestamp()
    raise InvalidQuery(f"a datetime is compared with a date or a string, not {value!r}")


def _to_epoch_ms(value: Any) -> float:
    return round(_to_epoch_value(value), 3)
