"""The Collection query API: immutability, normalization, dataframe, place, defaults."""

from __future__ import annotations

import math
import sys
import types
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
import shapely
from shapely.geometry import box, shape

import engine
from engine import Collection
from engine.catalog import (
    SQLiteCatalog,
    get_default_catalog,
    open_catalog,
    set_default_catalog,
)
from engine.errors import UnknownCollection

S2 = "sentinel-2-l2a"


@pytest.fixture(scope="module")
def cat(synthetic, tmp_path_factory):
    items, collections = synthetic
    c = SQLiteCatalog(tmp_path_factory.mktemp("coll") / "c.sqlite")
    for coll in collections:
        c.add_collection(coll)
        c.add_items(items[coll.id], collection=coll.id)
    yield c
    c.close()


def test_exported_from_engine():
    assert engine.Collection is Collection


def test_methods_return_new_collections(cat):
    base = Collection(S2, catalog=cat)
    narrowed = base.filter_point(11.57, 48.14).filter("eo:cloud_cover", "<=", 20).limit(5)
    assert base.query.intersects is None and base.query.filters == () and base.query.limit is None
    assert narrowed is not base
    assert narrowed.name == S2 and narrowed.catalog is cat
    assert base.count() == 150


def test_query_is_normalized(cat):
    coll = (
        Collection(S2, catalog=cat)
        .filter_bbox("10, 47, 12.5, 49")
        .filter_date("2018-04", datetime(2018, 10, 31, 12, 0))
        .filter("datetime", ">", "2018-05")
        .sort("eo:cloud_cover", ascending=False)
        .ids(["a", "b", "a"])
    )
    q = coll.query
    assert q.bbox == (10.0, 47.0, 12.5, 49.0)
    assert q.start == datetime(2018, 4, 1, tzinfo=UTC)
    assert q.end == datetime(2018, 10, 31, 12, 0, tzinfo=UTC)  # naive taken as UTC
    (f,) = q.filters
    # ">" a month compares with the END of the month
    assert (f.prop, f.op, f.value) == ("datetime", ">", datetime(2018, 5, 31, 23, 59, 59, 999999, tzinfo=UTC))
    assert q.sortby == (("eo:cloud_cover", False),)
    assert q.ids == ("a", "b")
    point = Collection(S2, catalog=cat).filter_bbox((0, 0, 1, 1)).filter_point("11.5", 48).query
    assert point.bbox is None
    assert point.intersects == {"type": "Point", "coordinates": [11.5, 48.0]}


def test_geometry_forms(cat, synthetic):
    poly = box(10.2, 48.2, 10.4, 48.4)

    class GeoObj:
        __geo_interface__ = shapely.geometry.mapping(poly)

    feature = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(poly)}
    expected = sorted(i.id for i in synthetic[0][S2] if shape(i.geometry).intersects(poly))
    assert expected
    for form in (poly, GeoObj(), feature, shapely.geometry.mapping(poly)):
        got = Collection(S2, catalog=cat).filter_geometry(form)
        assert sorted(i.id for i in got.items()) == expected


def test_repr_reads_like_the_chain(cat):
    coll = (
        Collection(S2, catalog=cat).filter_point(11.57, 48.14).filter_date("2018-04-01", "2018-10-31")
        .filter("eo:cloud_cover", "<=", 20).filter("platform", "in", ["sentinel-2a"])
        .sort("datetime", ascending=False).limit(50)
    )
    assert repr(coll) == (
        "Collection('sentinel-2-l2a').filter_point(11.57, 48.14)"
        ".filter_date('2018-04-01', '2018-10-31')"
        ".filter('eo:cloud_cover', '<=', 20).filter('platform', 'in', ['sentinel-2a'])"
        ".sort('datetime', ascending=False).limit(50)"
    )


def test_first_and_count_with_limit(cat, synthetic):
    newest = max(synthetic[0][S2], key=lambda i: i.datetime)
    assert Collection(S2, catalog=cat).first().id == newest.id
    assert Collection(S2, catalog=cat).filter_point(-60, -10).first() is None
    assert Collection(S2, catalog=cat).limit(4).count() == 4
    assert len(Collection(S2, catalog=cat).limit(4).items()) == 4


def test_to_dataframe(cat, synthetic):
    items = [i for i in synthetic[0][S2] if i.properties["grid:code"] == "MGRS-32UPU"]
    df = Collection(S2, catalog=cat).filter("grid:code", "=", "MGRS-32UPU").sort("datetime").to_dataframe()
    assert list(df.columns) == ["Date", "Platform", "Level", "Orbit", "Tile", "Cloud %", "Size MB", "id"]
    items.sort(key=lambda i: i.datetime)
    assert list(df["id"]) == [i.id for i in items]
    assert isinstance(df["Date"].dtype, pd.DatetimeTZDtype)
    assert list(df["Date"]) == [pd.Timestamp(i.datetime) for i in items]
    assert set(df["Tile"]) == {"32UPU"}
    assert set(df["Orbit"]) == {65} and str(df["Orbit"].dtype) == "Int64"
    assert set(df["Level"]) == {"L2A"}
    for (_, row), item in zip(df.iterrows(), items, strict=True):
        size = sum(a.extra_fields["file:size"] for a in item.assets.values()) / 1e6
        assert row["Size MB"] == pytest.approx(size)
        cloud = item.properties.get("eo:cloud_cover")
        assert (math.isnan(row["Cloud %"]) if cloud is None else row["Cloud %"] == cloud)
        assert row["Platform"] == item.properties["platform"]
    assert df["Cloud %"].isna().any()  # some items have no cloud cover
    empty = Collection(S2, catalog=cat).filter_point(-60, -10).to_dataframe()
    assert len(empty) == 0 and list(empty.columns) == list(df.columns)


def test_filter_place_uses_the_gazetteer_bbox(cat, synthetic, monkeypatch):
    places = {
        "munich": types.SimpleNamespace(lon=11.57, lat=48.14, bbox=(11.36, 48.06, 11.72, 48.25)),
        "fiji": types.SimpleNamespace(lon=178.0, lat=-17.8, bbox=(177.0, -19.2, -178.2, -16.0)),
    }
    fake = types.ModuleType("engine.gazetteer")
    fake.place = lambda name: places[name.lower()]
    monkeypatch.setitem(sys.modules, "engine.gazetteer", fake)
    coll = Collection(S2, catalog=cat).filter_place("Munich")
    assert coll.query.bbox == (11.36, 48.06, 11.72, 48.25)
    expected = sorted(
        i.id for i in synthetic[0][S2] if shape(i.geometry).intersects(box(11.36, 48.06, 11.72, 48.25))
    )
    assert sorted(i.id for i in coll.items()) == expected and expected
    fiji = Collection(S2, catalog=cat).filter_place("Fiji").query.intersects
    assert fiji["type"] == "MultiPolygon"
    assert shape(fiji).bounds == (-180.0, -19.2, 180.0, -16.0)


def test_filter_place_with_the_real_gazetteer(cat):
    pytest.importorskip("engine.gazetteer")
    coll = Collection(S2, catalog=cat).filter_place("Munich")
    w, s, e, n = coll.query.bbox
    assert w < 11.57 < e and s < 48.14 < n


def test_filter_day_accepts_and_validates(cat):
    q = Collection(S2, catalog=cat).filter_day(2018, 4, 1).query
    assert q.start == datetime(2018, 4, 1, tzinfo=UTC)
    assert q.end == datetime(2018, 4, 1, 23, 59, 59, 999999, tzinfo=UTC)
    q = Collection(S2, catalog=cat).filter_date(date(2018, 4, 1), None).query
    assert q.end is None


def test_default_catalog(cat, tmp_path, monkeypatch):
    set_default_catalog(cat)
    try:
        assert get_default_catalog() is cat
        assert Collection(S2).catalog is cat
    finally:
        set_default_catalog(None)
    monkeypatch.setattr("engine.paths.default_catalog_path", lambda: tmp_path / "d" / "default.sqlite")
    try:
        default = get_default_catalog()
        assert isinstance(default, SQLiteCatalog)
        assert default.path == tmp_path / "d" / "default.sqlite" and default.path.exists()
        assert get_default_catalog() is default
    finally:
        get_default_catalog().close()
        set_default_catalog(None)


def test_open_catalog_url_goes_to_the_stac_api_backend(monkeypatch):
    opened = []
    fake = types.ModuleType("engine.catalog.stacapi")
    fake.StacApiCatalog = lambda url: opened.append(url) or "api"
    monkeypatch.setitem(sys.modules, "engine.catalog.stacapi", fake)
    assert open_catalog("https://earth-search.aws.element84.com/v1") == "api"
    assert open_catalog("HTTP://localhost:8081") == "api"
    assert opened == ["https://earth-search.aws.element84.com/v1", "HTTP://localhost:8081"]


def test_collection_honours_eox_catalog_like_the_cli(cat, tmp_path, monkeypatch):
    """Collection(name) opens the catalog the settings name (EOX_CATALOG), the same file the
    CLI's Settings() reads, and follows a change of the variable."""
    from engine.config import EngineSettings

    set_default_catalog(None)
    monkeypatch.setenv("EOX_CATALOG", str(cat.path))
    try:
        coll = Collection(S2)
        assert coll.catalog.path == cat.path == Path(EngineSettings().catalog)
        assert coll.count() == Collection(S2, catalog=cat).count() > 0
        other = tmp_path / "other.sqlite"
        monkeypatch.setenv("EOX_CATALOG", str(other))
        with pytest.raises(UnknownCollection) as err:  # an empty catalog: S2 is not in it
            Collection(S2)
        assert S2 in str(err.value)
        assert get_default_catalog().path == other
    finally:
        set_default_catalog(None)
