"""Catalog endpoints: collections and the item search (``engine.collection.Collection``
over HTTP, answering a GeoJSON FeatureCollection)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Query

from engine.catalog.base import Catalog
from engine.collection import Collection
from engine.errors import InvalidQuery
from engine.security.redact import redact_hrefs

#: Largest page the search answers.
MAX_LIMIT = 10_000


def parse_value(text: str) -> Any:
    """A filter value typed as the user most likely meant: bool, int, float, else string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def parse_filter(text: str) -> tuple[str, str, Any]:
    """``"prop,op,value"`` -> (prop, op, value); ``in`` takes values separated by ``|``."""
    parts = text.split(",", 2)
    if len(parts) != 3 or not parts[0].strip() or not parts[1].strip():
        raise InvalidQuery(
            f"filter {text!r} must be 'property,operator,value' "
            "(e.g. eo:cloud_cover,<=,20 or platform,in,sentinel-2a|sentinel-2b)"
        )
    prop, op, raw = (p.strip() for p in parts)
    if op == "in":
        return prop, op, [parse_value(v) for v in raw.split("|")]
    return prop, op, parse_value(raw)


def parse_floats(text: str, *, n: int, what: str, example: str) -> list[float]:
    """``n`` comma-separated numbers, or InvalidQuery naming the parameter."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise InvalidQuery(f"{what} must be {n} comma-separated numbers like {example}, "
                           f"got {text!r}")
    return values


def parse_datetime_range(text: str) -> tuple[str | None, str | None]:
    """``"a/b"``, ``"../b"``, ``"a/.."`` or one date/period ``"2020-06"`` -> (start, end)."""
    if "/" in text:
        start, _, end = text.partition("/")
        return (start.strip() if start.strip() not in ("", "..") else None,
                end.strip() if end.strip() not in ("", "..") else None)
    return text.strip(), text.strip()


@dataclass
class CatalogRoutes:
    """Routes ``/api/collections`` and ``/api/search`` over a catalog."""

    catalog: Catalog
    router: APIRouter = field(init=False)

    def __post_init__(self) -> None:
        self.router = APIRouter(prefix="/api", tags=["catalog"])
        self._register()

    def search(
        self,
        collection: str,
        *,
        bbox: str | None = None,
        point: str | None = None,
        datetime: str | None = None,
        filters: list[str] = (),  # type: ignore[assignment]
        sortby: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Run a search given the HTTP parameters; a GeoJSON FeatureCollection."""
        coll = Collection(collection, catalog=self.catalog)
        if bbox is not None and point is not None:
            raise InvalidQuery("give either bbox or point, not both")
        if bbox is not None:
            box = parse_floats(bbox, n=4, what="bbox", example="5.9,45.8,10.5,47.8")
            coll = coll.filter_bbox(box)
        if point is not None:
            lon, lat = parse_floats(point, n=2, what="point", example="11.57,48.14")
            coll = coll.filter_point(lon, lat)
        if datetime:
            coll = coll.filter_date(*parse_datetime_range(datetime))
        for text in filters:
            coll = coll.filter(*parse_filter(text))
        if sortby:
            if "," in sortby:
                raise InvalidQuery(
                    f"sortby takes one property (e.g. -eo:cloud_cover), got {sortby!r}"
                )
            prop = sortby.lstrip("+-")
            coll = coll.sort(prop, ascending=not sortby.startswith("-"))
        coll = coll.limit(limit)
        items = coll.items()
        return {
            "type": "FeatureCollection",
            "features": [
                redact_hrefs(item.to_dict(include_self_link=False, transform_hrefs=False))
                for item in items
            ],
            "numberMatched": self.catalog.count(coll.query),
            "numberReturned": len(items),
        }

    def _register(self) -> None:
        router = self.router

        @router.get("/collections", summary="Every collection of the catalog")
        def collections() -> dict[str, Any]:
            return {
                "collections": [
                    redact_hrefs(c.to_dict(include_self_link=False, transform_hrefs=False))
                    for c in self.catalog.collections()
                ]
            }

        @router.get("/collections/{collection_id}", summary="One collection (404 if unknown)")
        def collection(collection_id: str) -> dict[str, Any]:
            found = self.catalog.collection(collection_id)
            return redact_hrefs(found.to_dict(include_self_link=False, transform_hrefs=False))

        @router.get(
            "/search",
            summary="Items of a collection matching a query (GeoJSON FeatureCollection)",
        )
        def search(
            collection: str = Query(description="Collection id"),
            bbox: str | None = Query(None, description="W,S,E,N in WGS84 degrees"),
            point: str | None = Query(None, description="lon,lat in WGS84 degrees"),
            datetime: str | None = Query(
                None, description="A date or period (2020, 2020-06) or an interval a/b, ../b, a/.."
            ),
            filter: list[str] = Query(  # the public parameter name
                [], description="property,operator,value (repeatable); 'in' values split by |"
            ),
            sortby: str | None = Query(None, description="One property; prefix - for descending"),
            limit: int = Query(100, ge=1, le=MAX_LIMIT, description="At most this many items"),
        ) -> dict[str, Any]:
            return self.search(collection, bbox=bbox, point=point, datetime=datetime,
                               filters=filter, sortby=sortby, limit=limit)
