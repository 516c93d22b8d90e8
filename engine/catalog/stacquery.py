"""How a catalog Query maps onto a STAC API and what is left to do locally: CQL2-JSON and
Query-extension filters, the datetime interval, per-item predicates, the canonical sort
(:mod:`engine.catalog.stacapi` uses these)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import pystac
import shapely
import shapely.geometry
from pystac_client.exceptions import APIError

from engine.catalog.base import OPERATORS, Filter, Query
from engine.errors import InvalidQuery
from engine.timeutil import bbox_geometry, format_datetime, is_datetime_property, parse_datetime

#: Order used when a query has no sortby (the embedded backend's: newest first).
DEFAULT_SORT: tuple[tuple[str, bool], ...] = (("datetime", False),)

_CQL2_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "in": "in"}
_QUERY_OPS = {"=": "eq", "!=": "neq", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte", "in": "in"}
def api_status(exc: APIError) -> int | None:
    return getattr(exc, "status_code", None)


def plain_collection(found: pystac.Collection) -> pystac.Collection:
    """A plain pystac.Collection (not a pystac-client CollectionClient bound to the API)."""
    d = found.to_dict(transform_hrefs=False)
    d["links"] = [ln for ln in d.get("links", []) if ln.get("rel") not in ("root", "parent")]
    return pystac.Collection.from_dict(d, preserve_dict=False)


def strip_properties(name: str) -> str:
    return name.removeprefix("properties.")


def validate_query(query: Query) -> None:
    for f in query.filters:
        if f.op not in OPERATORS:
            raise InvalidQuery(
                f"unknown operator {f.op!r} in a filter on {f.prop!r}", choices=OPERATORS
            )
        if f.op == "in" and (isinstance(f.value, str) or not isinstance(f.value, Iterable)):
            raise InvalidQuery(f"the 'in' filter on {f.prop!r} takes a list of values")
    if query.limit is not None and query.limit < 0:
        raise InvalidQuery(f"the limit must be >= 0, got {query.limit}")


def datetime_interval(start: datetime | None, end: datetime | None) -> str:
    a = format_datetime(start) if start is not None else ".."
    b = format_datetime(end) if end is not None else ".."
    return f"{a}/{b}"


def canonical_sortby(sortby: Iterable[tuple[str, bool]]) -> tuple[tuple[str, bool], ...]:
    """The query's sort keys (default: newest first) completed by ``id`` to break ties."""
    keys = tuple(sortby) or DEFAULT_SORT
    if "id" not in [p for p, _ in keys]:
        keys = (*keys, ("id", True))
    return keys


# -- filters as CQL2-JSON, Query extension, or a local predicate -------------------------
def _is_time(prop: str, value: Any) -> bool:
    return isinstance(value, datetime) or is_datetime_property(prop)


def _as_time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else parse_datetime(str(value))


def _cql2_literal(prop: str, value: Any) -> Any:
    if _is_time(prop, value):
        return {"timestamp": format_datetime(_as_time(value))}
    return value


def is_null(prop: str) -> dict[str, Any]:
    return {"op": "isNull", "args": [{"property": prop}]}


def cql2_and(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    return b if a is None else {"op": "and", "args": [a, b]}


def cql2(filters: Iterable[Filter]) -> dict[str, Any]:
    """The filters as one CQL2-JSON expression (AND of the comparisons)."""
    parts: list[dict[str, Any]] = []
    for f in filters:
        lhs = {"property": f.prop}
        if f.op == "in":
            values = [_cql2_literal(f.prop, v) for v in f.value]
            parts.append({"op": "in", "args": [lhs, values]})
        else:
            parts.append({"op": _CQL2_OPS[f.op], "args": [lhs, _cql2_literal(f.prop, f.value)]})
    return parts[0] if len(parts) == 1 else {"op": "and", "args": parts}


def query_ext(filters: Iterable[Filter]) -> dict[str, dict[str, Any]]:
    """The filters in the Query extension's form ``{prop: {op: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for f in filters:
        if f.op == "in":
            value: Any = [_query_literal(f.prop, v) for v in f.value]
        else:
            value = _query_literal(f.prop, f.value)
        out.setdefault(f.prop, {})[_QUERY_OPS[f.op]] = value
    return out


def _query_literal(prop: str, value: Any) -> Any:
    return format_datetime(_as_time(value)) if _is_time(prop, value) else value


def _value(item: pystac.Item, prop: str) -> Any:
    """An item's value for a property name (id, collection and datetime included)."""
    if prop == "id":
        return item.id
    if prop == "collection":
        return item.collection_id
    value = item.properties.get(strip_properties(prop))
    if value is not None and is_datetime_property(prop):
        return _as_time(value)
    return value


def _comparable(prop: str, value: Any, ref: Any) -> Any:
    """``ref`` converted to the type of the item's ``value`` (datetimes, numbers)."""
    if isinstance(value, datetime):
        return _as_time(ref)
    if isinstance(value, (int, float)) and isinstance(ref, str):
        try:
            return float(ref)
        except ValueError:
            return ref
    return ref


def item_predicate(f: Filter) -> Callable[[pystac.Item], bool]:
    """A local test of one filter, with SQL/CQL2 semantics: a missing value never matches."""

    def test(item: pystac.Item) -> bool:
        value = _value(item, f.prop)
        if value is None:
            return False
        try:
            if f.op == "in":
                return value in [_comparable(f.prop, value, v) for v in f.value]
            ref = _comparable(f.prop, value, f.value)
            if f.op == "=":
                return bool(value == ref)
            if f.op == "!=":
                return bool(value != ref)
            if f.op == "<":
                return bool(value < ref)
            if f.op == "<=":
                return bool(value <= ref)
            if f.op == ">":
                return bool(value > ref)
            return bool(value >= ref)
        except TypeError:
            return False  # incomparable types (e.g. a number against text): no match

    return test


def item_geometry(item: pystac.Item) -> shapely.Geometry:
    if item.geometry is not None:
        return shapely.geometry.shape(item.geometry)
    if item.bbox is not None:
        w, s, *_, e, n = item.bbox  # 2D or 3D bbox
        return bbox_geometry((w, s, e, n))
    return shapely.GeometryCollection()


def matches_ogc_leftovers(item: dict[str, Any], params: dict[str, Any]) -> bool:
    """What the OGC items endpoint cannot do: ids and intersects."""
    if "ids" in params and item.get("id") not in params["ids"]:
        return False
    if "intersects" in params:
        footprint = shapely.geometry.shape(item["geometry"]) if item.get("geometry") else None
        if footprint is None:
            return False
        return bool(footprint.intersects(shapely.geometry.shape(params["intersects"])))
    return True


# -- canonical ordering -----------------------------------------------------------------
class _Key:
    """A sort key: missing values last in either direction, descending by negation."""

    __slots__ = ("asc", "value")

    def __init__(self, value: Any, asc: bool) -> None:
        self.value = value
        self.asc = asc

    def __lt__(self, other: _Key) -> bool:
        a, b = self.value, other.value
        if a is None or b is None:
            return a is not None and b is None  # present < missing
        try:
            return bool(a < b) if self.asc else bool(b < a)
        except TypeError:
            return (str(a) < str(b)) if self.asc else (str(b) < str(a))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key) and self.value == other.value


def _sort_value(item: pystac.Item, prop: str) -> Any:
    value = _value(item, prop)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def canonical_sorted(items: list[pystac.Item], sortby: tuple[tuple[str, bool], ...]
                     ) -> list[pystac.Item]:
    """Items in the canonical order of ``sortby`` (missing values last)."""
    return sorted(items, key=lambda it: [_Key(_sort_value(it, p), asc) for p, asc in sortby])
