"""Normalize the date, datetime, bbox and geometry forms users write into one canonical form.

Public query functions accept what people type ("2018", "2018-04", date, ISO strings,
"W,S,E,N", shapely or GeoJSON geometries); everything is converted once, here.
"""

from __future__ import annotations

import calendar
import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import shapely
import shapely.geometry

from engine.errors import InvalidQuery

#: Properties whose values are datetimes (compared as instants, not as strings).
DATETIME_PROPERTIES: frozenset[str] = frozenset(
    {"datetime", "start_datetime", "end_datetime", "created", "updated", "published", "expires"}
)

DateLike = str | date | datetime | None
BBox = tuple[float, float, float, float]

_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")


def is_datetime_property(name: str) -> bool:
    """True for properties holding datetimes (``datetime``, ``created``, ``*_datetime``...)."""
    return name in DATETIME_PROPERTIES or name.endswith("_datetime")


def to_utc(value: datetime) -> datetime:
    """A timezone-aware UTC datetime; naive datetimes are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_datetime(text: str) -> datetime:
    """Parse an ISO 8601 datetime string ("Z" or an offset; naive means UTC)."""
    raw = text.strip()
    candidate = raw[:-1] + "+00:00" if raw[-1:] in ("Z", "z") else raw
    try:
        return to_utc(datetime.fromisoformat(candidate))
    except ValueError:
        pass
    # fromisoformat in 3.11 rejects some valid RFC 3339 forms (e.g. 7+ fraction digits).
    m = re.match(r"^(.*T\d{2}:\d{2}:\d{2})\.(\d+)(.*)$", candidate)
    if m:
        try:
            return to_utc(datetime.fromisoformat(f"{m[1]}.{m[2][:6].ljust(6, '0')}{m[3]}"))
        except ValueError:
            pass
    raise InvalidQuery(
        f"cannot read the date {text!r}: use YYYY, YYYY-MM, YYYY-MM-DD or an ISO datetime "
        "such as 2018-04-01T10:30:00Z"
    )


def date_bound(value: DateLike, *, end: bool) -> datetime | None:
    """The first (``end=False``) or last (``end=True``) instant a date-like value covers.

    "2018" covers the year, "2018-04" the month, "2018-04-01" or a ``date`` the day; an ISO
    datetime or ``datetime`` is one instant. ``None`` stays ``None`` (an open end).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return to_utc(value)
    if isinstance(value, date):
        return _day_bound(value, end=end)
    if not isinstance(value, str):
        raise InvalidQuery(
            f"a date must be a string, date or datetime, not {type(value).__name__}"
        )
    text = value.strip()
    m = _PARTIAL.match(text)
    if not m:
        return parse_datetime(text)
    year, month, day = int(m[1]), m[2], m[3]
    try:
        if day is not None:
            return _day_bound(date(year, int(month), int(day)), end=end)
        if month is not None:
            mo = int(month)
            last = calendar.monthrange(year, mo)[1] if 1 <= mo <= 12 else 0
            return _day_bound(date(year, mo, last if end else 1), end=end)
        return _day_bound(date(year, 12, 31) if end else date(year, 1, 1), end=end)
    except ValueError as exc:
        raise InvalidQuery(f"cannot read the date {value!r}: {exc}") from None


def _day_bound(day: date, *, end: bool) -> datetime:
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start + timedelta(days=1, microseconds=-1) if end else start


def format_datetime(value: datetime) -> str:
    """RFC 3339 UTC text ("2018-04-01T10:30:00Z", microseconds only when present)."""
    v = to_utc(value)
    text = v.strftime("%Y-%m-%dT%H:%M:%S")
    if v.microsecond:
        text += f".{v.microsecond:06d}"
    return text + "Z"


def format_bound(value: datetime) -> str:
    """How a message shows a date bound: "2018-04-01" for the first or last instant of a
    UTC day (what a typed date became), else the RFC 3339 instant."""
    v = to_utc(value)
    if v.time() in (time.min, time.max):
        return v.date().isoformat()
    return format_datetime(v)


def normalize_bbox(value: str | Sequence[float]) -> BBox:
    """Validate a WGS84 bbox given as "W,S,E,N" or a 4-sequence; returns a float 4-tuple.

    Boxes crossing the antimeridian (W > E) are refused: split them in two queries.
    """
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
    else:
        try:
            parts = list(value)
        except TypeError:
            raise InvalidQuery(
                f"a bbox is 'W,S,E,N' or a list of 4 numbers, not {type(value).__name__}"
            ) from None
    if len(parts) != 4:
        raise InvalidQuery(f"a bbox has 4 numbers (W, S, E, N), got {len(parts)}: {value!r}")
    try:
        w, s, e, n = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise InvalidQuery(f"a bbox has 4 numbers (W, S, E, N), got {value!r}") from None
    if any(math.isnan(v) or v in (float("inf"), float("-inf")) for v in (w, s, e, n)):
        raise InvalidQuery(f"bbox values must be finite numbers, got {value!r}")
    if not (-180 <= w <= 180 and -180 <= e <= 180):
        raise InvalidQuery(f"bbox longitudes must be within -180..180, got W={w}, E={e}")
    if not (-90 <= s <= 90 and -90 <= n <= 90):
        raise InvalidQuery(f"bbox latitudes must be within -90..90, got S={s}, N={n}")
    if w > e:
        raise InvalidQuery(
            f"bbox west ({w}) is greater than east ({e}); boxes crossing the antimeridian "
            "are not supported, split them in two"
        )
    if s > n:
        raise InvalidQuery(f"bbox south ({s}) is greater than north ({n})")
    return (w, s, e, n)


def normalize_point(lon: Any, lat: Any) -> tuple[float, float]:
    """Validate a WGS84 lon/lat point."""
    try:
        x, y = float(lon), float(lat)
    except (TypeError, ValueError):
        raise InvalidQuery(f"a point is two numbers (lon, lat), got {lon!r}, {lat!r}") from None
    if not -180 <= x <= 180:
        raise InvalidQuery(f"longitude must be within -180..180, got {x}")
    if not -90 <= y <= 90:
        raise InvalidQuery(f"latitude must be within -90..90, got {y}")
    return (x, y)


def normalize_geometry(value: Any) -> dict:
    """A GeoJSON geometry dict (plain lists, JSON-ready) from a GeoJSON geometry or Feature
    dict, a shapely geometry, or any object with ``__geo_interface__``; validated as WGS84."""
    if hasattr(value, "__geo_interface__") and not isinstance(value, dict):
        value = value.__geo_interface__
    if not isinstance(value, dict):
        raise InvalidQuery(
            "a geometry is a GeoJSON dict, a shapely geometry or an object with "
            f"__geo_interface__, not {type(value).__name__}"
        )
    if value.get("type") == "Feature":
        value = value.get("geometry") or {}
    try:
        geom = shapely.geometry.shape(value)
    except Exception as exc:  # noqa: BLE001 - shapely raises several types for bad GeoJSON
        raise InvalidQuery(f"not a valid GeoJSON geometry: {exc}") from None
    if geom.is_empty:
        raise InvalidQuery("the geometry is empty")
    w, s, e, n = geom.bounds
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise InvalidQuery(
            f"the geometry is not in WGS84 lon/lat: its bounds are {geom.bounds}"
        )
    if not geom.is_valid:
        raise InvalidQuery(f"the geometry is invalid: {shapely.is_valid_reason(geom)}")
    return json.loads(json.dumps(shapely.geometry.mapping(geom)))


def bbox_geometry(bbox: BBox) -> shapely.Geometry:
    """The shapely geometry of a bbox, degenerating to a point or line for zero-size boxes."""
    w, s, e, n = bbox
    if w == e and s == n:
        return shapely.Point(w, s)
    if w == e or s == n:
        return shapely.LineString([(w, s), (e, n)])
    return shapely.box(w, s, e, n)
