"""Geodesic measurements against independent references on the WGS84 ellipsoid.

References are computed here without pyproj: the meridian arc by numerically integrating
the meridional radius of curvature, and the area of a latitude/longitude quadrangle by the
closed-form ellipsoidal formula (authalic latitude function q).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.errors import InvalidInput
from engine.measure import area, format_area, format_length, length, measure

A = 6378137.0
F = 1 / 298.257223563
E2 = F * (2 - F)
E = math.sqrt(E2)
B = A * (1 - F)


def meridian_arc(lat0: float, lat1: float) -> float:
    """Length of the meridian between two latitudes: integral of M(phi) (Simpson, 20001 pts)."""
    phi = np.radians(np.linspace(lat0, lat1, 20001))
    m = A * (1 - E2) / (1 - E2 * np.sin(phi) ** 2) ** 1.5
    h = phi[1] - phi[0]
    return float(h / 3 * (m[0] + m[-1] + 4 * m[1:-1:2].sum() + 2 * m[2:-1:2].sum()))


def quadrangle_area(lat0: float, lat1: float, dlon: float) -> float:
    """Exact ellipsoidal area between two parallels over ``dlon`` degrees of longitude."""
    def q(lat: float) -> float:
        s = math.sin(math.radians(lat))
        return s / (1 - E2 * s * s) + math.log((1 + E * s) / (1 - E * s)) / (2 * E)

    return B * B * math.radians(dlon) / 2 * (q(lat1) - q(lat0))


def line(*points):
    return {"type": "LineString", "coordinates": [list(p) for p in points]}


def quadrangle(lon0, lat0, lon1, lat1, *, step=0.001):
    """A lon/lat box whose north and south edges follow the parallels (densified)."""
    n = round((lon1 - lon0) / step)
    south = [[lon0 + i * (lon1 - lon0) / n, lat0] for i in range(n + 1)]
    north = [[lon1 - i * (lon1 - lon0) / n, lat1] for i in range(n + 1)]
    return {"type": "Polygon", "coordinates": [south + north + [[lon0, lat0]]]}


def test_one_degree_of_meridian_at_the_equator():
    ref = meridian_arc(0, 1)
    assert ref == pytest.approx(110574.4, abs=0.1)  # the published value
    assert length(line((0, 0), (0, 1))) == pytest.approx(ref, rel=1e-7)


def test_one_degree_of_meridian_at_60_north():
    ref = meridian_arc(60, 61)
    assert ref == pytest.approx(111420.7, abs=0.1)
    got = length(line((10, 60), (10, 61)))
    assert got == pytest.approx(ref, rel=1e-7)
    assert abs(got - ref) / ref < 1e-3  # the bar, met by far


def test_quadrangle_area_at_60_north():
    ref = quadrangle_area(60, 61, 1)
    assert 6.0e9 < ref < 6.3e9
    got = area(quadrangle(5, 60, 6, 61))
    assert got == pytest.approx(ref, rel=1e-4)


def test_never_mercator_distances():
    # one degree of longitude at 60 N is half of one at the equator: about 55.8 km
    got = length(line((0, 60), (1, 60)))
    assert 55_700 < got < 55_900
    # and on the equator about 111.3 km (a * pi / 180)
    assert length(line((0, 0), (1, 0))) == pytest.approx(A * math.pi / 180, rel=1e-9)


def test_holes_are_subtracted_and_perimeter_counts_them():
    outer = quadrangle(0, 60, 1, 61)["coordinates"][0]
    hole = quadrangle(0.25, 60.25, 0.75, 60.75)["coordinates"][0][::-1]
    m = measure({"type": "Polygon", "coordinates": [outer, hole]})
    ref = quadrangle_area(60, 61, 1) - quadrangle_area(60.25, 60.75, 0.5)
    assert m.kind == "Polygon" and m.area_m2 == pytest.approx(ref, rel=1e-4)
    perim = length({"type": "Polygon", "coordinates": [outer]}) + length(
        {"type": "Polygon", "coordinates": [hole]})
    assert m.length_m == pytest.approx(perim, rel=1e-9)


def test_multipolygon_and_lines():
    a = quadrangle(0, 60, 1, 61)["coordinates"]
    b = quadrangle(2, 60, 3, 61)["coordinates"]
    assert area({"type": "MultiPolygon", "coordinates": [a, b]}) == pytest.approx(
        2 * quadrangle_area(60, 61, 1), rel=1e-4)
    multi = {"type": "MultiLineString", "coordinates": [[[0, 0], [0, 1]], [[5, 60], [5, 61]]]}
    assert length(multi) == pytest.approx(meridian_arc(0, 1) + meridian_arc(60, 61), rel=1e-7)
    assert area(line((0, 0), (0, 1))) == 0.0
    m = measure({"type": "Point", "coordinates": [1, 2]})
    assert m.length_m == 0 and m.area_m2 == 0 and "point" in m.describe()


def test_self_intersecting_polygon_is_repaired_with_a_note():
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    m = measure(bowtie)
    assert m.note and "Self-intersection" in m.note
    # two triangles, each a quarter of the 1x1 degree box (near the equator, ~3 % off)
    box = area(quadrangle(0, 0, 1, 1))
    assert m.area_m2 == pytest.approx(box / 2, rel=0.01)


@pytest.mark.parametrize("geometry, message", [
    ({"type": "Polygon", "coordinates": []}, "empty"),
    ({"type": "LineString", "coordinates": [[0, 0], [0, 95]]}, "WGS84"),
    ({"type": "Nope", "coordinates": [0, 0]}, "invalid GeoJSON"),
    ({"coordinates": [0, 0]}, "GeoJSON geometry"),
])
def test_bad_geometries(geometry, message):
    with pytest.raises(InvalidInput, match=message):
        measure(geometry)


def test_units():
    assert format_length(1234.5) == "1.23 km"
    assert format_length(12.345) == "12.3 m"
    assert format_length(1609.344, "mi") == "1.00 mi"
    assert format_area(25_000) == "2.50 ha"
    assert format_area(2.5e6) == "2.50 km²"
    assert format_area(250) == "250 m²"
    assert format_area(1e6, "m2") == "1,000,000 m²"
    with pytest.raises(InvalidInput) as err:
        format_area(1.0, "acres!")
    assert "km2" in err.value.choices
    m = measure(quadrangle(0, 60, 1, 61))
    assert m.describe(area_unit="km2").startswith("area 6,")
