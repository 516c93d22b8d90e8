"""Geodesic length and area on the WGS84 ellipsoid (pyproj ``Geod``), never map distances.

Web Mercator stretches lengths by 1/cos(latitude) (x2 at 60 N), so everything drawn on the
map is measured here from its lon/lat vertices: edges are geodesics on the ellipsoid.

>>> round(length({"type": "LineString", "coordinates": [[0, 0], [0, 1]]}), 1)
110574.4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import shapely
from pyproj import Geod
from shapely.geometry.base import BaseGeometry

from engine.errors import InvalidInput
from engine.vector import parse_geometry

#: The WGS84 ellipsoid every measurement uses.
GEOD = Geod(ellps="WGS84")

#: Length units: name -> metres per unit ("auto" picks m or km).
LENGTH_UNITS: dict[str, float] = {"m": 1.0, "km": 1000.0, "mi": 1609.344, "nmi": 1852.0}
#: Area units: name -> square metres per unit ("auto" picks m², ha or km²).
AREA_UNITS: dict[str, float] = {"m2": 1.0, "ha": 1e4, "km2": 1e6, "acre": 4046.8564224}
_LABELS = {"m2": "m²", "km2": "km²", "ha": "ha", "acre": "acres"}


@dataclass(frozen=True)
class Measurement:
    """What a geometry measures: its kind, length (lines) or perimeter and area (polygons).

    ``note`` says when the geometry was repaired first (a self-intersecting polygon).
    """

    kind: str
    length_m: float
    area_m2: float
    note: str | None = None

    def describe(self, *, length_unit: str = "auto", area_unit: str = "auto") -> str:
        """One line for people: ``area 1.23 km² · perimeter 4.56 km``."""
        if self.kind in ("Polygon", "MultiPolygon"):
            return (f"area {format_area(self.area_m2, area_unit)} · perimeter "
                    f"{format_length(self.length_m, length_unit)}")
        if self.kind in ("LineString", "MultiLineString"):
            return f"length {format_length(self.length_m, length_unit)}"
        return "a point has no length or area"


def _geometry(geometry: dict | BaseGeometry) -> tuple[BaseGeometry, str | None]:
    if isinstance(geometry, BaseGeometry):
        if geometry.is_empty:
            raise InvalidInput("the geometry is empty: nothing to measure")
        return geometry, None
    return parse_geometry(geometry)


def length(geometry: dict | BaseGeometry) -> float:
    """Geodesic length in metres of a line, or the perimeter of a polygon (holes included).

    Args:
        geometry: GeoJSON geometry (or shapely geometry) in WGS84 lon/lat.
    """
    geom, _ = _geometry(geometry)
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return _perimeter(geom)
    return float(GEOD.geometry_length(geom))


def _perimeter(geom: BaseGeometry) -> float:
    """Length of every ring, holes included (pyproj counts exterior rings only)."""
    rings = shapely.get_rings(shapely.get_parts(geom))
    return float(sum(GEOD.geometry_length(r) for r in rings))


def area(geometry: dict | BaseGeometry) -> float:
    """Geodesic area in square metres of a (multi)polygon, holes subtracted; 0 for others.

    Args:
        geometry: GeoJSON geometry (or shapely geometry) in WGS84 lon/lat.
    """
    geom, _ = _geometry(geometry)
    return abs(float(GEOD.geometry_area_perimeter(geom)[0]))


def measure(geometry: dict | BaseGeometry) -> Measurement:
    """Length/perimeter and area of a geometry; self-intersecting polygons are repaired
    (``make_valid``) first and the repair is said in ``note``."""
    geom, note = _geometry(geometry)
    kind = geom.geom_type
    if kind in ("Polygon", "MultiPolygon"):  # the perimeter includes holes, as in QGIS
        a, _ = GEOD.geometry_area_perimeter(geom)
        return Measurement(kind, _perimeter(geom), abs(float(a)), note)
    return Measurement(kind, float(GEOD.geometry_length(geom)), 0.0, note)


def format_length(metres: float, unit: str = "auto", *, digits: int = 3) -> str:
    """``1234.5`` -> ``"1.23 km"``; ``unit`` is one of :data:`LENGTH_UNITS` or "auto"."""
    if unit == "auto":
        unit = "km" if abs(metres) >= 1000 else "m"
    if unit not in LENGTH_UNITS:
        raise InvalidInput(f"unknown length unit {unit!r}", choices=["auto", *LENGTH_UNITS])
    return f"{_round(metres / LENGTH_UNITS[unit], digits)} {unit}"


def format_area(square_metres: float, unit: str = "auto", *, digits: int = 3) -> str:
    """``25000`` -> ``"2.5 ha"``; ``unit`` is one of :data:`AREA_UNITS` or "auto"."""
    if unit == "auto":
        a = abs(square_metres)
        unit = "km2" if a >= 1e6 else "ha" if a >= 1e4 else "m2"
    if unit not in AREA_UNITS:
        raise InvalidInput(f"unknown area unit {unit!r}", choices=["auto", *AREA_UNITS])
    return f"{_round(square_metres / AREA_UNITS[unit], digits)} {_LABELS[unit]}"


def _round(value: float, digits: int) -> Any:
    """Round to ``digits`` significant figures, but never drop integer digits."""
    if value == 0:
        return 0
    from math import floor, log10

    places = max(0, digits - 1 - floor(log10(abs(value))))
    text = f"{value:,.{places}f}"
    return text
