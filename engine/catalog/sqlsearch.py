"""The SQL of one catalog search: WHERE clause, ORDER BY, the R*Tree or date index, and
the exact spatial test of candidate footprints (:class:`SearchPlan`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import shapely
import shapely.geometry

from engine.catalog.base import OPERATORS, Filter, Query
from engine.errors import InvalidQuery
from engine.timeutil import bbox_geometry, date_bound, is_datetime_property

#: STAC property -> promoted column of ``items`` (indexed where queries need it).
PROMOTED: dict[str, str] = {
    "eo:cloud_cover": "cloud",
    "platform": "platform",
    "constellation": "constellation",
    "processing:level": "level",
    "grid:code": "grid",
    "sat:relative_orbit": "orbit",
}

#: Query areas (square degrees) up to which the R*Tree drives a query that also has a
#: date range; larger areas start from the (collection, date) index instead.
RTREE_MAX_AREA = 400.0

_EPOCH_SQL = "round((julianday({}) - 2440587.5) * 86400.0, 3)"


class SearchPlan:
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
            except Exception as exc:  # noqa: BLE001 - shapely raises several types here
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
