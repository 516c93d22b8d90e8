"""The query suite every catalog backend must pass (see BACKENDS in conftest.py).

Each answer is compared with a brute-force filter of the synthetic items written here
independently: shapely ``intersects`` and plain Python comparisons.
"""

from __future__ import annotations

import operator
from datetime import UTC, date, datetime

import pytest
import shapely
from shapely.geometry import Point, Polygon, box, shape

from engine import Collection
from engine.errors import InvalidQuery, UnknownCollection, UnknownProperty

S2 = "sentinel-2-l2a"

OPS = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}


def _value(item, prop):
    if prop == "id":
        return item.id
    if prop == "datetime":
        return item.datetime
    value = item.properties.get(prop)
    if prop == "created" and value is not None:
        return datetime.fromisoformat(value)
    return value


def brute(items, *, geom=None, start=None, end=None, filters=(), ids=None):
    """Ids of the items matching, by plain Python."""
    out = []
    for item in items:
        if geom is not None and not shape(item.geometry).intersects(geom):
            continue
        if start is not None and item.datetime < start:
            continue
        if end is not None and item.datetime > end:
            continue
        if ids is not None and item.id not in ids:
            continue
        ok = True
        for prop, op, value in filters:
            v = _value(item, prop)
            if v is None:
                ok = False
            elif op == "in":
                ok = v in value
            else:
                ok = OPS[op](v, value)
            if not ok:
                break
        if ok:
            out.append(item.id)
    return out


def ids_of(items):
    return [i.id for i in items]


def dt(*args):
    return datetime(*args, tzinfo=UTC)


# (name, build the Collection, brute-force keyword arguments)
CASES = [
    ("point-box-tile", lambda c: c.filter_point(10.5, 48.5), {"geom": Point(10.5, 48.5)}),
    ("point-skewed-tile", lambda c: c.filter_point(12.0, 48.2), {"geom": Point(12.0, 48.2)}),
    # inside the skewed tile's bbox, outside its footprint (south-east corner)
    ("point-bbox-not-footprint", lambda c: c.filter_point(12.85, 47.62), {"geom": Point(12.85, 47.62)}),
    ("point-on-shared-edge", lambda c: c.filter_point(11.0, 48.3), {"geom": Point(11.0, 48.3)}),
    ("point-nowhere", lambda c: c.filter_point(-60.0, -10.0), {"geom": Point(-60.0, -10.0)}),
    ("bbox-small", lambda c: c.filter_bbox((10.9, 48.9, 11.1, 49.05)), {"geom": box(10.9, 48.9, 11.1, 49.05)}),
    ("bbox-string", lambda c: c.filter_bbox("0,42,2,43.5"), {"geom": box(0, 42, 2, 43.5)}),
    # inside the skewed tile's bbox, outside its footprint
    ("bbox-in-bbox-not-footprint", lambda c: c.filter_bbox([12.75, 47.5, 12.95, 47.65]), {"geom": box(12.75, 47.5, 12.95, 47.65)}),
    (
        "geometry-triangle",
        lambda c: c.filter_geometry({"type": "Polygon", "coordinates": [[[12.9, 42.4], [14.0, 42.4], [14.0, 43.0], [12.9, 42.4]]]}),
        {"geom": Polygon([(12.9, 42.4), (14.0, 42.4), (14.0, 43.0)])},
    ),
    (
        "geometry-shapely-line",
        lambda c: c.filter_geometry(shapely.LineString([(9.0, 47.0), (13.0, 49.5)])),
        {"geom": shapely.LineString([(9.0, 47.0), (13.0, 49.5)])},
    ),
    ("date-year", lambda c: c.filter_date("2018"), {"start": dt(2018, 1, 1)}),
    ("date-range", lambda c: c.filter_date("2018-04-01", "2018-10-31"), {"start": dt(2018, 4, 1), "end": dt(2018, 10, 31, 23, 59, 59, 999999)}),
    ("date-months", lambda c: c.filter_date("2019-02", "2019-05"), {"start": dt(2019, 2, 1), "end": dt(2019, 5, 31, 23, 59, 59, 999999)}),
    ("date-objects", lambda c: c.filter_date(date(2017, 6, 1), date(2017, 12, 31)), {"start": dt(2017, 6, 1), "end": dt(2017, 12, 31, 23, 59, 59, 999999)}),
    ("date-iso-times", lambda c: c.filter_date("2019-03-01T12:00:00Z", "2019-09-01T06:30:00+02:00"), {"start": dt(2019, 3, 1, 12), "end": dt(2019, 9, 1, 4, 30)}),
    ("date-open-start", lambda c: c.filter_date(None, "2017-05-01"), {"end": dt(2017, 5, 1, 23, 59, 59, 999999)}),
    ("date-open-end", lambda c: c.filter_date(datetime(2020, 9, 1)), {"start": dt(2020, 9, 1)}),
    ("date-twice-intersects", lambda c: c.filter_date("2018", "2018").filter_date("2018-06", "2019-06"), {"start": dt(2018, 6, 1), "end": dt(2018, 12, 31, 23, 59, 59, 999999)}),
    ("date-twice-open-ends", lambda c: c.filter_date("2018").filter_date(None, "2019-06"), {"start": dt(2018, 1, 1), "end": dt(2019, 6, 30, 23, 59, 59, 999999)}),
    ("cloud-le-20", lambda c: c.filter("eo:cloud_cover", "<=", 20), {"filters": [("eo:cloud_cover", "<=", 20)]}),
    ("cloud-ne", lambda c: c.filter("eo:cloud_cover", "!=", 50.0), {"filters": [("eo:cloud_cover", "!=", 50.0)]}),
    ("cloud-lt", lambda c: c.filter("eo:cloud_cover", "<", 10.5), {"filters": [("eo:cloud_cover", "<", 10.5)]}),
    ("cloud-gt", lambda c: c.filter("eo:cloud_cover", ">", 90), {"filters": [("eo:cloud_cover", ">", 90)]}),
    ("cloud-ge", lambda c: c.filter("eo:cloud_cover", ">=", 75.5), {"filters": [("eo:cloud_cover", ">=", 75.5)]}),
    ("platform-eq", lambda c: c.filter("platform", "=", "sentinel-2b"), {"filters": [("platform", "=", "sentinel-2b")]}),
    ("platform-ne", lambda c: c.filter("platform", "!=", "sentinel-2b"), {"filters": [("platform", "!=", "sentinel-2b")]}),
    ("orbit-in", lambda c: c.filter("sat:relative_orbit", "in", [22, 79]), {"filters": [("sat:relative_orbit", "in", (22, 79))]}),
    ("orbit-lt", lambda c: c.filter("sat:relative_orbit", "<", 65), {"filters": [("sat:relative_orbit", "<", 65)]}),
    ("grid-in-tuple", lambda c: c.filter("grid:code", "in", ("MGRS-32UPU", "MGRS-30TWM")), {"filters": [("grid:code", "in", ("MGRS-32UPU", "MGRS-30TWM"))]}),
    ("level-eq", lambda c: c.filter("processing:level", "=", "L2A"), {"filters": [("processing:level", "=", "L2A")]}),
    ("constellation-ne", lambda c: c.filter("constellation", "!=", "sentinel-2"), {"filters": [("constellation", "!=", "sentinel-2")]}),
    ("json-prop-gt", lambda c: c.filter("view:sun_elevation", ">", 40.0), {"filters": [("view:sun_elevation", ">", 40.0)]}),
    ("json-prop-le-int", lambda c: c.filter("s2:nodata_pixel_percentage", "<=", 12), {"filters": [("s2:nodata_pixel_percentage", "<=", 12)]}),
    ("json-prop-str", lambda c: c.filter("sat:orbit_state", "=", "descending"), {"filters": [("sat:orbit_state", "=", "descending")]}),
    ("json-prop-in", lambda c: c.filter("sat:orbit_state", "in", ["ascending"]), {"filters": [("sat:orbit_state", "in", ("ascending",))]}),
    ("json-datetime-prop", lambda c: c.filter("created", ">=", "2019-01-01"), {"filters": [("created", ">=", dt(2019, 1, 1))]}),
    ("datetime-lt-string", lambda c: c.filter("datetime", "<", "2017-08-15T00:00:00Z"), {"filters": [("datetime", "<", dt(2017, 8, 15))]}),
    ("datetime-le-month", lambda c: c.filter("datetime", "<=", "2017-03"), {"filters": [("datetime", "<=", dt(2017, 3, 31, 23, 59, 59, 999999))]}),
    ("id-eq", lambda c: c.filter("id", "=", "sentinel-2-l2a-0007"), {"filters": [("id", "=", "sentinel-2-l2a-0007")]}),
    ("ids", lambda c: c.ids("sentinel-2-l2a-0003", "sentinel-2-l2a-0099", "no-such-id"), {"ids": {"sentinel-2-l2a-0003", "sentinel-2-l2a-0099"}}),
    ("ids-list", lambda c: c.ids(["sentinel-2-l2a-0010", "sentinel-2-l2a-0011"]), {"ids": {"sentinel-2-l2a-0010", "sentinel-2-l2a-0011"}}),
    (
        "combo-point-date-cloud",
        lambda c: c.filter_point(11.57, 48.14).filter_date("2018-04-01", "2019-10-31").filter("eo:cloud_cover", "<=", 60),
        {"geom": Point(11.57, 48.14), "start": dt(2018, 4, 1), "end": dt(2019, 10, 31, 23, 59, 59, 999999), "filters": [("eo:cloud_cover", "<=", 60)]},
    ),
    (
        "combo-bbox-platform-orbit-ids",
        lambda c: c.filter_bbox((10, 47, 13, 49)).filter("platform", "=", "sentinel-2a").filter("sat:relative_orbit", "in", [65]),
        {"geom": box(10, 47, 13, 49), "filters": [("platform", "=", "sentinel-2a"), ("sat:relative_orbit", "in", (65,))]},
    ),
    ("spatial-replaces", lambda c: c.filter_point(-60, -10).filter_bbox((10, 48, 10.5, 48.5)), {"geom": box(10, 48, 10.5, 48.5)}),
]


@pytest.mark.parametrize("name,build,spec", CASES, ids=[c[0] for c in CASES])
def test_query_matches_brute_force(loaded_catalog, synthetic_items, name, build, spec):
    items = synthetic_items[S2]
    coll = build(Collection(S2, catalog=loaded_catalog))
    expected = brute(items, **spec)
    got = ids_of(coll.items())
    assert sorted(got) == sorted(expected)
    assert len(got) == len(set(got))
    assert coll.count() == len(expected)


def test_brute_force_cases_are_not_trivial(synthetic_items):
    """Guard against a suite that passes because every answer is empty or everything."""
    items = synthetic_items[S2]
    sizes = {}
    for name, _, spec in CASES:
        sizes[name] = len(brute(items, **spec))
    empty = {"point-nowhere", "point-bbox-not-footprint", "bbox-in-bbox-not-footprint", "constellation-ne"}
    everything = {"level-eq"}
    assert {n for n, s in sizes.items() if s == 0} == empty
    assert {n for n, s in sizes.items() if s == len(items)} == everything
    # the item bboxes do contain these, only the exact footprint test rejects them
    assert any(box(*i.bbox).intersects(Point(12.85, 47.62)) for i in items)
    assert any(box(*i.bbox).intersects(box(12.75, 47.5, 12.95, 47.65)) for i in items)


@pytest.mark.parametrize("prop", ["eo:cloud_cover", "view:sun_elevation", "created", "datetime"])
def test_equality_on_an_existing_value(loaded_catalog, synthetic_items, prop):
    items = synthetic_items[S2]
    target = next(i for i in items[17:] if prop == "datetime" or prop in i.properties)
    raw = target.properties.get(prop) if prop != "datetime" else target.datetime.isoformat()
    expected = brute(items, filters=[(prop, "=", _value(target, prop))])
    got = ids_of(Collection(S2, catalog=loaded_catalog).filter(prop, "=", raw).items())
    assert target.id in got
    assert sorted(got) == sorted(expected)


def test_other_collections_are_separate(loaded_catalog, synthetic_items):
    for name in ("sentinel-2-l1c", "landsat-c2-l2"):
        coll = Collection(name, catalog=loaded_catalog).filter_bbox((0, 40, 15, 50))
        expected = brute(synthetic_items[name], geom=box(0, 40, 15, 50))
        assert sorted(ids_of(coll.items())) == sorted(expected)
        assert all(i.collection_id == name for i in coll.limit(5).items())


def test_filter_day(loaded_catalog, synthetic_items):
    items = synthetic_items[S2]
    day = items[42].datetime
    got = ids_of(Collection(S2, catalog=loaded_catalog).filter_day(day.year, day.month, day.day).items())
    expected = [i.id for i in items if i.datetime.date() == day.date()]
    assert items[42].id in got
    assert sorted(got) == sorted(expected)


@pytest.mark.parametrize("ascending", [True, False])
def test_sort_by_datetime_and_limit(loaded_catalog, synthetic_items, ascending):
    items = synthetic_items[S2]
    coll = Collection(S2, catalog=loaded_catalog).filter_bbox((10, 47, 13, 49))
    expected = sorted(brute(items, geom=box(10, 47, 13, 49)), key=lambda i: _by_id(items)[i].datetime, reverse=not ascending)
    assert ids_of(coll.sort("datetime", ascending=ascending).items()) == expected
    assert ids_of(coll.sort("datetime", ascending=ascending).limit(7).items()) == expected[:7]


def _by_id(items):
    return {i.id: i for i in items}


@pytest.mark.parametrize("prop", ["eo:cloud_cover", "sat:relative_orbit", "view:sun_elevation", "platform"])
@pytest.mark.parametrize("ascending", [True, False])
def test_sort_by_property(loaded_catalog, synthetic_items, prop, ascending):
    items = synthetic_items[S2]
    # only items that have the property, so missing-value placement does not matter here
    coll = Collection(S2, catalog=loaded_catalog).filter(prop, "!=", "none" if prop == "platform" else -1)
    got = coll.sort(prop, ascending=ascending).items()
    keys = [i.properties[prop] for i in got]
    expected = sorted((i.properties[prop] for i in items if prop in i.properties), reverse=not ascending)
    assert keys == expected
    top = coll.sort(prop, ascending=ascending).limit(5).items()
    assert [i.properties[prop] for i in top] == expected[:5]


def test_combination_sorted_limited(loaded_catalog, synthetic_items):
    items = synthetic_items[S2]
    coll = (
        Collection(S2, catalog=loaded_catalog)
        .filter_bbox("10,47.5,12.5,49")
        .filter_date("2017-06", "2020-06")
        .filter("eo:cloud_cover", "<", 70)
        .filter("platform", "in", ["sentinel-2a", "sentinel-2b"])
        .sort("datetime", ascending=False)
        .limit(10)
    )
    pool = brute(
        items, geom=box(10, 47.5, 12.5, 49), start=dt(2017, 6, 1), end=dt(2020, 6, 30, 23, 59, 59, 999999),
        filters=[("eo:cloud_cover", "<", 70)],
    )
    expected = sorted(pool, key=lambda i: _by_id(items)[i].datetime, reverse=True)[:10]
    assert len(pool) > 10
    assert ids_of(coll.items()) == expected
    assert coll.count() == 10
    assert Collection(S2, catalog=loaded_catalog).limit(3).count() == 3
    assert coll.first().id == expected[0]


def test_items_round_trip(loaded_catalog, synthetic_items):
    original = synthetic_items[S2][5]
    (got,) = Collection(S2, catalog=loaded_catalog).ids(original.id).items()
    assert got.datetime == original.datetime
    assert shape(got.geometry).equals(shape(original.geometry))
    assert got.properties["grid:code"] == original.properties["grid:code"]
    assert set(got.assets) == set(original.assets)
    assert got.assets["B04"].extra_fields["file:size"] == original.assets["B04"].extra_fields["file:size"]
    assert loaded_catalog.get_item(S2, original.id).id == original.id


# -- bad input: error class and message -----------------------------------------------


def test_unknown_collection_lists_choices(loaded_catalog):
    with pytest.raises(UnknownCollection) as err:
        Collection("sentinel-3", catalog=loaded_catalog)
    assert "sentinel-3" in str(err.value)
    assert {"sentinel-2-l2a", "sentinel-2-l1c", "landsat-c2-l2"} <= set(err.value.choices)
    assert "landsat-c2-l2" in str(err.value)


def test_unknown_property_lists_queryables(loaded_catalog):
    coll = Collection(S2, catalog=loaded_catalog)
    with pytest.raises(UnknownProperty) as err:
        coll.filter("eo:cloudcover", "<=", 20)
    assert "eo:cloudcover" in str(err.value)
    assert {"eo:cloud_cover", "platform", "datetime", "id"} <= set(err.value.choices)
    with pytest.raises(UnknownProperty):
        coll.sort("no_such_prop")


@pytest.mark.parametrize("op", ["==", "~", "like", ""])
def test_unknown_operator(loaded_catalog, op):
    with pytest.raises(InvalidQuery) as err:
        Collection(S2, catalog=loaded_catalog).filter("eo:cloud_cover", op, 20)
    assert repr(op) in str(err.value)
    assert set(err.value.choices) == {"=", "!=", "<", "<=", ">", ">=", "in"}


@pytest.mark.parametrize(
    "build,needle",
    [
        (lambda c: c.filter_date("2019-01-01", "2018-01-01"), "inverted"),
        (lambda c: c.filter_date("2018", "2018").filter_date("2019"), "does not overlap"),
        (lambda c: c.filter_date("2018-13-01"), "2018-13-01"),
        (lambda c: c.filter_date("yesterday"), "yesterday"),
        (lambda c: c.filter_date("2018-02-30"), "2018-02-30"),
        (lambda c: c.filter_day(2018, 2, 30), "2018-2-30"),
        (lambda c: c.filter_bbox((12, 40, 10, 50)), "antimeridian"),
        (lambda c: c.filter_bbox((10, 50, 12, 40)), "south"),
        (lambda c: c.filter_bbox((10, 40, 12, 95)), "latitudes"),
        (lambda c: c.filter_bbox((-190, 40, 12, 50)), "longitudes"),
        (lambda c: c.filter_bbox((10, 40, 12)), "4 numbers"),
        (lambda c: c.filter_bbox("10,40,east,50"), "4 numbers"),
        (lambda c: c.filter_point(200, 10), "longitude"),
        (lambda c: c.filter_point(10, -91), "latitude"),
        (lambda c: c.filter_geometry({"type": "Polygon", "coordinates": [[[500, 0], [501, 0], [501, 1], [500, 0]]]}), "WGS84"),
        (lambda c: c.filter_geometry({"type": "Blob"}), "GeoJSON"),
        (lambda c: c.filter_geometry(42), "geometry"),
        (lambda c: c.filter("sat:relative_orbit", "in", 22), "'in' takes a list"),
        (lambda c: c.filter("platform", "in", "sentinel-2a"), "'in' takes a list"),
        (lambda c: c.filter("sat:relative_orbit", "=", [22, 79]), "'in'"),
        (lambda c: c.filter("eo:cloud_cover", "<=", None), "cannot compare"),
        (lambda c: c.filter("datetime", ">", "last week"), "last week"),
        (lambda c: c.limit(0), "positive"),
        (lambda c: c.limit(2.5), "positive"),
        (lambda c: c.ids(), "one or more"),
    ],
)
def test_bad_input_is_invalid_query(loaded_catalog, build, needle):
    with pytest.raises(InvalidQuery) as err:
        build(Collection(S2, catalog=loaded_catalog))
    assert needle in str(err.value)
