"""The query API: an immutable, chainable ``Collection`` in the style of JRC JEO-lab.

::

    coll = (Collection("sentinel-2-l2a").filter_point(11.57, 48.14)
            .filter_date("2018-04-01", "2018-10-31").filter("eo:cloud_cover", "<=", 20)
            .sort("datetime", ascending=False).limit(50))
    coll.items(); coll.to_dataframe()

Every method validates its input with a clear message and returns a NEW Collection holding
a normalized :class:`~engine.catalog.base.Query`; nothing touches the catalog until
``items()``, ``count()``, ``first()`` or ``to_dataframe()``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import pandas as pd
import pystac

from engine.catalog import CORE_PROPERTIES, OPERATORS, Catalog, Filter, Query, get_default_catalog
from engine.errors import InvalidQuery, UnknownProperty
from engine.timeutil import (
    DateLike,
    date_bound,
    format_bound,
    format_datetime,
    is_datetime_property,
    normalize_bbox,
    normalize_geometry,
    normalize_point,
)

#: Columns of :meth:`Collection.to_dataframe`, in order.
DATAFRAME_COLUMNS: tuple[str, ...] = (
    "Date", "Platform", "Level", "Orbit", "Tile", "Cloud %", "Size MB", "id",
)

_SCALARS = (str, int, float, bool, date, datetime)


class Collection:
    """Items of one catalog collection, narrowed by chained filters.

    Immutable: each method returns a new Collection. Filters are AND-ed. A date filter
    narrows an earlier one (ranges intersect); a spatial filter (point, bbox, geometry,
    place) REPLACES an earlier spatial filter, because "intersects A and intersects B" is
    not one geometry.

    Args:
        name: collection id; unknown names raise UnknownCollection listing the valid ones.
        catalog: the catalog to query; the process default (``get_default_catalog()``)
            when omitted.
    """

    def __init__(self, name: str, *, catalog: Catalog | None = None) -> None:
        cat = catalog if catalog is not None else get_default_catalog()
        cat.collection(name)  # raises UnknownCollection with the valid names
        self._catalog = cat
        self._query = Query(collection=name)
        self._allowed: dict[str, set[str]] = {}  # lazily filled, shared by derived copies

    def _with(self, **changes: Any) -> Collection:
        new = object.__new__(Collection)
        new._catalog = self._catalog
        new._query = self._query.with_(**changes)
        new._allowed = self._allowed
        return new

    # -- read-only views --------------------------------------------------------------
    @property
    def name(self) -> str:
        """The collection id."""
        return self._query.collection

    @property
    def catalog(self) -> Catalog:
        """The catalog this collection reads."""
        return self._catalog

    @property
    def query(self) -> Query:
        """The normalized query that backends answer."""
        return self._query

    def properties(self) -> set[str]:
        """Property names usable in ``filter`` and ``sort``: core ones plus the queryables."""
        if "props" not in self._allowed:
            self._allowed["props"] = set(CORE_PROPERTIES) | set(
                self._catalog.queryables(self.name)
            )
        return self._allowed["props"]

    # -- spatial ----------------------------------------------------------------------
    def filter_point(self, lon: float, lat: float) -> Collection:
        """Items whose footprint contains the WGS84 point (lon, lat)."""
        x, y = normalize_point(lon, lat)
        return self._with(bbox=None, intersects={"type": "Point", "coordinates": [x, y]})

    def filter_bbox(self, bbox: str | Sequence[float]) -> Collection:
        """Items intersecting a WGS84 box given as (W, S, E, N) or "W,S,E,N"."""
        return self._with(bbox=normalize_bbox(bbox), intersects=None)

    def filter_geometry(self, geometry: Any) -> Collection:
        """Items intersecting a geometry: GeoJSON dict (or Feature), shapely geometry, or
        anything with ``__geo_interface__``, in WGS84."""
        return self._with(bbox=None, intersects=normalize_geometry(geometry))

    def filter_place(self, name: str) -> Collection:
        """Items intersecting a named place's search area (offline gazetteer): its bbox,
        for a city at least 60 km around it (:attr:`engine.gazetteer.Place.search_bbox`)."""
        from engine.gazetteer import place

        found = place(name)
        bbox = getattr(found, "search_bbox", getattr(found, "bbox", None))
        if bbox is None:
            return self.filter_point(found.lon, found.lat)
        w, s, e, n = bbox
        if w > e:  # crosses the antimeridian: the two halves as one geometry
            halves = [_ring(w, s, 180.0, n), _ring(-180.0, s, e, n)]
            return self.filter_geometry({"type": "MultiPolygon", "coordinates": halves})
        return self.filter_bbox(bbox)

    # -- temporal ---------------------------------------------------------------------
    def filter_date(self, start: DateLike, end: DateLike = None) -> Collection:
        """Items dated within [start, end], both inclusive; ``None`` is an open end.

        Each bound may be "2018", "2018-04", "2018-04-01", an ISO datetime, a date or a
        datetime: a start covers from the first instant of its period, an end to the last
        (``filter_date("2018-04", "2018-06")`` is April 1 to June 30 inclusive).
        """
        lo, hi = date_bound(start, end=False), date_bound(end, end=True)
        if lo is not None and hi is not None and lo > hi:
            raise InvalidQuery(
                f"the date range is inverted: start {format_bound(lo)} is after "
                f"end {format_bound(hi)}"
            )
        q = self._query
        if q.start is not None and (lo is None or q.start > lo):
            lo = q.start
        if q.end is not None and (hi is None or q.end < hi):
            hi = q.end
        if lo is not None and hi is not None and lo > hi:
            raise InvalidQuery(
                f"the date range {start!r}..{end!r} does not overlap the earlier date filter "
                f"{_fmt(q.start)}..{_fmt(q.end)}"
            )
        return self._with(start=lo, end=hi)

    def filter_day(self, year: int, month: int, day: int) -> Collection:
        """Items of one UTC day."""
        try:
            d = date(int(year), int(month), int(day))
        except (TypeError, ValueError) as exc:
            raise InvalidQuery(f"not a valid day {year}-{month}-{day}: {exc}") from None
        return self.filter_date(d, d)

    # -- properties -------------------------------------------------------------------
    def filter(self, prop: str, op: str, value: Any) -> Collection:
        """Items whose property ``prop`` compares to ``value`` with ``op``.

        ``op`` is one of ``= != < <= > >= in`` (``in`` takes a list or tuple). Items
        without the property never match. Datetime properties accept the same forms as
        :meth:`filter_date` (``<=`` and ``>`` compare with the END of a partial date, so
        ``filter("datetime", "<=", "2018-06")`` includes all of June).
        """
        if op not in OPERATORS:
            raise InvalidQuery(f"unknown operator {op!r}", choices=OPERATORS)
        self._check_property(prop)
        if op == "in":
            if isinstance(value, (str, bytes)) or not isinstance(
                value, (list, tuple, set, frozenset)
            ):
                raise InvalidQuery(
                    f"'in' takes a list or tuple of values, got {value!r}"
                )
            normalized: Any = tuple(_scalar(prop, op, v) for v in value)
        else:
            normalized = _scalar(prop, op, value)
        return self._with(filters=(*self._query.filters, Filter(prop, op, normalized)))

    def ids(self, *ids: str | Iterable[str]) -> Collection:
        """Only the items with these ids: ``ids("a", "b")`` or ``ids(["a", "b"])``."""
        flat: list[str] = []
        for value in ids:
            if isinstance(value, str):
                flat.append(value)
            elif isinstance(value, Iterable):
                flat.extend(value)
            else:
                raise InvalidQuery(f"item ids are strings, got {value!r}")
        if not flat or not all(isinstance(v, str) and v for v in flat):
            raise InvalidQuery(f"ids() takes one or more non-empty id strings, got {ids!r}")
        return self._with(ids=tuple(dict.fromkeys(flat)))

    # -- ordering ---------------------------------------------------------------------
    def sort(self, prop: str, ascending: bool = True) -> Collection:
        """Order by one property (replacing an earlier sort); missing values come last."""
        self._check_property(prop)
        return self._with(sortby=((prop, bool(ascending)),))

    def limit(self, n: int | None) -> Collection:
        """At most ``n`` items (``None`` removes the limit)."""
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise InvalidQuery(f"limit must be a positive integer, got {n!r}")
        return self._with(limit=n)

    # -- processing (engine.chain) ------------------------------------------------------
    def process(self, *, mosaic: str = "first", mosaic_expression: str | None = None):
        """A processing chain on these items (``.bands(...).scale(...)``); see engine.chain."""
        from engine.chain import process

        return process(self, mosaic=mosaic, mosaic_expression=mosaic_expression)

    def process_multi(self, bands: Sequence[str], *, times: bool = False,
                      mosaic: str = "first", mosaic_expression: str | None = None):
        """A chain reading ``bands`` in order; ``times=True`` stacks dates (t, b, y, x)."""
        from engine.chain import process_multi

        return process_multi(self, bands, times=times, mosaic=mosaic,
                             mosaic_expression=mosaic_expression)

    # -- time (engine.timeseries) -------------------------------------------------------
    def profile(self, lon: float | None = None, lat: float | None = None,
                expression: str | None = None, *, geometry: Any = None,
                mask_clouds: bool = True) -> pd.DataFrame:
        """One value of ``expression`` (default NDVI) per scene at a point or over a polygon;
        see :func:`engine.timeseries.profile`."""
        from engine.timeseries.profiles import DEFAULT_EXPRESSION, profile

        return profile(self, lon, lat, expression or DEFAULT_EXPRESSION, geometry=geometry,
                       mask_clouds=mask_clouds)

    # -- results ----------------------------------------------------------------------
    def items(self) -> list[pystac.Item]:
        """The matching items, sorted (newest first unless ``sort`` says otherwise)."""
        return self._catalog.search(self._query)

    def count(self) -> int:
        """How many items match (at most the limit, if one is set)."""
        n = self._catalog.count(self._query.with_(limit=None))
        return n if self._query.limit is None else min(n, self._query.limit)

    def first(self) -> pystac.Item | None:
        """The first matching item, or ``None`` when nothing matches."""
        found = self._catalog.search(self._query.with_(limit=1))
        return found[0] if found else None

    def to_dataframe(self) -> pd.DataFrame:
        """One row per item: Date, Platform, Level, Orbit, Tile, Cloud %, Size MB, id."""
        return items_dataframe(self.items())

    # -- helpers ----------------------------------------------------------------------
    def footprints(self) -> Any:
        """The items' outlines as a ``gv.Polygons`` with scene properties as hover columns
        (engine.hvelements.footprints)."""
        from engine.hvelements import footprints

        return footprints(self)

    def _check_property(self, prop: Any) -> None:
        if not isinstance(prop, str) or prop not in self.properties():
            raise UnknownProperty(
                f"the collection {self.name!r} has no property {prop!r}",
                choices=self.properties(),
            )

    def __repr__(self) -> str:
        q = self._query
        parts = [f"Collection({q.collection!r})"]
        if q.bbox is not None:
            parts.append(f".filter_bbox({list(q.bbox)!r})")
        if q.intersects is not None:
            if q.intersects.get("type") == "Point":
                lon, lat = q.intersects["coordinates"][:2]
                parts.append(f".filter_point({lon!r}, {lat!r})")
            else:
                parts.append(f".filter_geometry(<{q.intersects.get('type')}>)")
        if q.start is not None or q.end is not None:
            parts.append(f".filter_date({_fmt(q.start)!r}, {_fmt(q.end)!r})")
        for f in q.filters:
            value = [_show(v) for v in f.value] if f.op == "in" else _show(f.value)
            parts.append(f".filter({f.prop!r}, {f.op!r}, {value!r})")
        if q.ids is not None:
            parts.append(f".ids({', '.join(repr(i) for i in q.ids)})")
        for prop, ascending in q.sortby:
            parts.append(f".sort({prop!r}, ascending={ascending})")
        if q.limit is not None:
            parts.append(f".limit({q.limit})")
        return "".join(parts)


def _scalar(prop: str, op: str, value: Any) -> Any:
    """One comparison value, normalized: datetimes for datetime properties."""
    if value is None or not isinstance(value, _SCALARS):
        several = isinstance(value, (list, tuple))
        hint = " (use the 'in' operator for several values)" if several else ""
        raise InvalidQuery(
            f"cannot compare {prop!r} with {value!r}: use a string, number, bool or date{hint}"
        )
    if is_datetime_property(prop):
        if isinstance(value, (bool, int, float)):
            raise InvalidQuery(f"{prop!r} is a datetime: compare it with a date string or datetime")
        return date_bound(value, end=op in ("<=", ">"))
    if isinstance(value, (date, datetime)):
        raise InvalidQuery(f"{prop!r} is not a datetime property; cannot compare it with a date")
    return value


def _ring(w: float, s: float, e: float, n: float) -> list[list[list[float]]]:
    return [[[w, s], [e, s], [e, n], [w, n], [w, s]]]


def _fmt(value: datetime | None) -> str | None:
    return None if value is None else format_bound(value)


def _show(value: Any) -> Any:
    return format_datetime(value) if isinstance(value, datetime) else value


def _row(item: pystac.Item) -> list[Any]:
    props = item.properties
    when = item.datetime or item.common_metadata.start_datetime
    sizes = [a.extra_fields.get("file:size") for a in item.assets.values()]
    sizes = [s for s in sizes if isinstance(s, (int, float))]
    tile = props.get("grid:code")
    if isinstance(tile, str):
        for prefix in ("MGRS-", "WRS2-"):
            tile = tile.removeprefix(prefix)
    cloud = props.get("eo:cloud_cover")
    return [
        when,
        props.get("platform"),
        props.get("processing:level"),
        props.get("sat:relative_orbit"),
        tile,
        cloud if cloud is not None else float("nan"),
        sum(sizes) / 1e6 if sizes else float("nan"),
        item.id,
    ]


def items_dataframe(items: list[pystac.Item]) -> pd.DataFrame:
    """The table ``Collection.to_dataframe`` gives, for items already fetched."""
    rows = [_row(item) for item in items]
    df = pd.DataFrame(rows, columns=list(DATAFRAME_COLUMNS))
    df["Date"] = pd.to_datetime(df["Date"], utc=True)
    for col in ("Platform", "Level", "Orbit", "Tile"):
        df[col] = _one_type(df[col], "Int64" if col == "Orbit" else None)
    for col in ("Cloud %", "Size MB"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return df


def _one_type(column: pd.Series, dtype: str | None) -> pd.Series:
    """A property column of one type: ``dtype`` when every value fits it, else text.

    Catalog properties are free JSON: a column mixing numbers and strings (an orbit given as
    text by one item) broke the table (``int('<img ...>')``, pyarrow's ArrowInvalid)."""
    present = [v for v in column if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if dtype is not None:
        try:
            return column.astype(dtype)
        except (TypeError, ValueError):
            pass
    elif len({type(v) for v in present}) <= 1 and all(
            isinstance(v, str | int | float | bool) for v in present):
        return column
    return column.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v))
                      else str(v)).astype(object)
