"""The STAC API backend against a real STAC API (stac-fastapi-geoparquet on 127.0.0.1).

The shared query suite (test_catalog_queries.py) runs on a server with the Filter and Sort
extensions; here the same kinds of queries run on a server WITHOUT them (the backend then
filters and sorts client-side) and must give the same answers, computed independently.
Also: conformance discovery, the OGC items fallback, errors.
"""

from __future__ import annotations

import logging
import operator
import socket
from datetime import UTC, datetime

import pystac
import pytest
import shapely
from pystac_client import Client
from shapely.geometry import box, shape
from stacapi_server import make_stacapi_catalog, serve_stac_api

from engine import Collection
from engine.catalog.base import Filter, Query
from engine.catalog.stacapi import StacApiCatalog
from engine.catalog.stacquery import cql2, query_ext
from engine.errors import CatalogError, NotFound, UnknownCollection

S2 = "sentinel-2-l2a"


@pytest.fixture(scope="module")
def full_url(synthetic, tmp_path_factory):
    """A server declaring Filter (CQL2) and Sort."""
    items, collections = synthetic
    with serve_stac_api(items, collections, tmp_path_factory.mktemp("full")) as url:
        yield url


@pytest.fixture(scope="module")
def basic_url(synthetic, tmp_path_factory):
    """A server with core + item search only: no Filter, no Sort, no Query."""
    items, collections = synthetic
    with serve_stac_api(items, collections, tmp_path_factory.mktemp("basic"), extensions=()) as url:
        yield url


@pytest.fixture(scope="module")
def full(full_url):
    with StacApiCatalog(full_url) as cat:
        yield cat


@pytest.fixture(scope="module")
def basic(basic_url):
    with StacApiCatalog(basic_url) as cat:
        yield cat


def _props(item, prop):
    if prop == "id":
        return item.id
    if prop == "datetime":
        return item.datetime
    return item.properties.get(prop)


def brute(items, *, geom=None, start=None, end=None, filters=()):
    out = []
    for item in items:
        if geom is not None and not shape(item.geometry).intersects(geom):
            continue
        if start is not None and item.datetime < start:
            continue
        if end is not None and item.datetime > end:
            continue
        if all(_test(_props(item, prop), op, value) for prop, op, value in filters):
            out.append(item)
    return out


OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
       ">": operator.gt, ">=": operator.ge, "in": lambda v, values: v in values}


def _test(value, op, ref):
    return value is not None and OPS[op](value, ref)


def ordered(items, prop, ascending):
    """Missing values last in both directions, ties by id (the embedded backend's order)."""
    have = [i for i in items if _props(i, prop) is not None]
    lack = [i for i in items if _props(i, prop) is None]
    have.sort(key=lambda i: i.id)
    have.sort(key=lambda i: _props(i, prop), reverse=not ascending)
    return [i.id for i in have] + sorted(i.id for i in lack)


# -- conformance ------------------------------------------------------------------------


def test_conformance_is_read_from_the_api(full, basic, full_url):
    assert (full.supports_search, full.supports_filter, full.supports_sort) == (True, True, True)
    assert full.supports_query is False  # rustac's DuckDB search does not implement it
    assert not (basic.supports_filter or basic.supports_sort or basic.supports_query)
    assert basic.supports_search
    assert full.kind == basic.kind == "stac-api"
    assert full.location == full_url


FILTER_CASES = [
    [("eo:cloud_cover", "<=", 20)],
    [("eo:cloud_cover", "!=", 50.0)],
    [("platform", "!=", "sentinel-2b")],
    [("sat:relative_orbit", "in", (22, 79))],
    [("view:sun_elevation", ">", 40.0), ("sat:orbit_state", "=", "descending")],
    [("datetime", "<", datetime(2017, 8, 15, tzinfo=UTC))],
]


@pytest.mark.parametrize("filters", FILTER_CASES, ids=[str(f) for f in FILTER_CASES])
def test_client_side_filters_give_the_server_answer(full, basic, synthetic_items, filters):
    expected = sorted(i.id for i in brute(synthetic_items[S2], filters=filters))
    assert expected  # not a trivial case
    query = Query(S2, filters=tuple(Filter(*f) for f in filters))
    assert sorted(i.id for i in basic.search(query)) == expected
    assert sorted(i.id for i in full.search(query)) == expected
    assert basic.count(query) == full.count(query) == len(expected)


def test_client_side_filters_with_space_and_time(basic, synthetic_items):
    geom = box(10, 47, 13, 49)
    start, end = datetime(2018, 1, 1, tzinfo=UTC), datetime(2019, 12, 31, tzinfo=UTC)
    expected = brute(synthetic_items[S2], geom=geom, start=start, end=end,
                     filters=[("eo:cloud_cover", "<", 60)])
    query = Query(S2, bbox=(10, 47, 13, 49), start=start, end=end,
                  filters=(Filter("eo:cloud_cover", "<", 60),))
    assert sorted(i.id for i in basic.search(query)) == sorted(i.id for i in expected)
    assert len(expected) > 3


@pytest.mark.parametrize("prop", ["eo:cloud_cover", "id"])
@pytest.mark.parametrize("ascending", [True, False])
def test_sort_and_limit_same_on_both_servers(full, basic, synthetic_items, prop, ascending):
    # eo:cloud_cover is missing on ~15% of the items: they come last in both directions
    expected = ordered(synthetic_items[S2], prop, ascending)
    query = Query(S2, sortby=((prop, ascending),))
    for cat in (full, basic):
        assert [i.id for i in cat.search(query)] == expected
        assert [i.id for i in cat.search(query.with_(limit=7))] == expected[:7]
    # a limit that reaches into the items lacking the property
    have = sum(1 for i in synthetic_items[S2] if _props(i, prop) is not None)
    deep = query.with_(limit=min(have + 3, len(expected)))
    assert [i.id for i in full.search(deep)] == expected[: deep.limit]
    assert [i.id for i in basic.search(deep)] == expected[: deep.limit]


def test_default_order_is_newest_first(full, basic, synthetic_items):
    expected = [i.id for i in sorted(synthetic_items[S2], key=lambda i: i.datetime, reverse=True)]
    assert [i.id for i in full.search(Query(S2, limit=9))] == expected[:9]
    assert [i.id for i in basic.search(Query(S2, limit=9))] == expected[:9]


def test_intersects_and_bbox_together(full, basic, synthetic_items):
    # a STAC API takes one of them: the bbox is then checked client-side
    line = shapely.LineString([(9.0, 47.0), (13.0, 49.5)])
    query = Query(S2, bbox=(10.0, 47.0, 11.2, 49.0), intersects=shapely.geometry.mapping(line))
    expected = sorted(
        i.id for i in synthetic_items[S2]
        if shape(i.geometry).intersects(line)
        and shape(i.geometry).intersects(box(10.0, 47.0, 11.2, 49.0))
    )
    assert expected
    assert sorted(i.id for i in full.search(query)) == expected
    assert sorted(i.id for i in basic.search(query)) == expected


def test_ids_and_get_item(basic, synthetic_items):
    wanted = [synthetic_items[S2][3].id, synthetic_items[S2][99].id]
    got = basic.search(Query(S2, ids=(*wanted, "no-such-id")))
    assert sorted(i.id for i in got) == sorted(wanted)
    item = basic.get_item(S2, wanted[0])
    assert item.id == wanted[0] and item.collection_id == S2
    assert set(item.assets) == set(synthetic_items[S2][3].assets)
    with pytest.raises(NotFound, match="no-such-id"):
        basic.get_item(S2, "no-such-id")


def test_collection_facade_on_the_basic_server(basic, synthetic_items):
    coll = (
        Collection(S2, catalog=basic)
        .filter_bbox((10, 47.5, 12.5, 49))
        .filter("eo:cloud_cover", "<", 70)
        .sort("eo:cloud_cover")
        .limit(4)
    )
    pool = brute(
        synthetic_items[S2], geom=box(10, 47.5, 12.5, 49), filters=[("eo:cloud_cover", "<", 70)]
    )
    assert [i.id for i in coll.items()] == ordered(pool, "eo:cloud_cover", True)[:4]


def test_client_side_work_is_logged_once(basic_url, caplog):
    cat = StacApiCatalog(basic_url)
    with caplog.at_level(logging.INFO, logger="engine.catalog.stacapi"):
        for _ in range(3):
            cat.search(Query(S2, filters=(Filter("platform", "=", "sentinel-2a"),),
                             sortby=(("eo:cloud_cover", True),), limit=2))
    messages = [r.getMessage() for r in caplog.records]
    assert sum("client-side" in m and "Filter" in m for m in messages) == 1
    assert sum("Sort extension" in m for m in messages) == 1
    assert basic_url in messages[0]


def test_queryables_from_a_sample_of_items(full, basic, synthetic_items):
    # this server's /queryables lists no properties: names come from the items
    expected = {k for i in synthetic_items[S2] for k in i.properties} | {"datetime"}
    assert full.queryables(S2) == expected
    assert basic.queryables(S2) == expected
    assert "eo:cloud_cover" in expected and "s2:nodata_pixel_percentage" in expected


def test_collections(full):
    names = [c.id for c in full.collections()]
    assert names == sorted(["sentinel-2-l2a", "sentinel-2-l1c", "landsat-c2-l2"])
    coll = full.collection(S2)
    assert isinstance(coll, pystac.Collection)
    bands = [b["name"] for b in coll.summaries.get_list("eo:bands")]
    assert bands[:4] == ["B01", "B02", "B03", "B04"]


# -- conformance quirks: undeclared classes, no item search ------------------------------


def test_landing_page_without_conformance_reads_the_endpoint(full_url, monkeypatch):
    opened = Client.open.__func__

    def open_without_classes(cls, *args, **kwargs):
        client = opened(cls, *args, **kwargs)
        client.clear_conforms_to()
        return client

    monkeypatch.setattr(Client, "open", classmethod(open_without_classes))
    cat = StacApiCatalog(full_url)
    assert cat.supports_filter and cat.supports_sort and cat.supports_search
    assert len(cat.search(Query(S2, filters=(Filter("platform", "=", "sentinel-2a"),)))) > 0


def test_api_without_item_search_reads_collection_items(full_url, synthetic_items, monkeypatch):
    opened = Client.open.__func__

    def open_features_only(cls, *args, **kwargs):
        client = opened(cls, *args, **kwargs)
        client.set_conforms_to([
            "https://api.stacspec.org/v1.0.0/core",
            "https://api.stacspec.org/v1.0.0/collections",
            "https://api.stacspec.org/v1.0.0/ogcapi-features",
        ])
        return client

    monkeypatch.setattr(Client, "open", classmethod(open_features_only))
    cat = StacApiCatalog(full_url)
    assert not cat.supports_search
    start = datetime(2019, 1, 1, tzinfo=UTC)
    query = Query(S2, bbox=(10, 47, 13, 49), start=start,
                  filters=(Filter("eo:cloud_cover", "<", 50),), sortby=(("eo:cloud_cover", False),))
    pool = brute(synthetic_items[S2], geom=box(10, 47, 13, 49), start=start,
                 filters=[("eo:cloud_cover", "<", 50)])
    assert [i.id for i in cat.search(query)] == ordered(pool, "eo:cloud_cover", False)
    ids = (synthetic_items[S2][1].id, synthetic_items[S2][2].id)
    assert sorted(i.id for i in cat.search(Query(S2, ids=ids))) == sorted(ids)


# -- the Query extension (no offline server offers it): what would be sent ----------------


def test_query_extension_and_cql2_bodies():
    filters = (
        Filter("eo:cloud_cover", "<=", 20),
        Filter("eo:cloud_cover", ">", 1),
        Filter("platform", "in", ("sentinel-2a", "sentinel-2b")),
        Filter("datetime", ">=", "2018-01-01T00:00:00+01:00"),
    )
    assert query_ext(filters) == {
        "eo:cloud_cover": {"lte": 20, "gt": 1},
        "platform": {"in": ["sentinel-2a", "sentinel-2b"]},
        "datetime": {"gte": "2017-12-31T23:00:00Z"},
    }
    assert cql2(filters[2:]) == {
        "op": "and",
        "args": [
            {"op": "in", "args": [{"property": "platform"}, ["sentinel-2a", "sentinel-2b"]]},
            {"op": ">=", "args": [{"property": "datetime"}, {"timestamp": "2017-12-31T23:00:00Z"}]},
        ],
    }
    not_x = {"op": "<>", "args": [{"property": "platform"}, "x"]}
    assert cql2([Filter("platform", "!=", "x")]) == not_x


# -- errors -------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_api_is_a_catalog_error():
    url = f"http://127.0.0.1:{_closed_port()}/stac"
    with pytest.raises(CatalogError) as err:
        StacApiCatalog(url, timeout=5)
    assert url in str(err.value)
    assert "unreachable" in str(err.value)


def test_http_error_names_url_and_status(full_url):
    url = f"{full_url}/no/such/api"
    with pytest.raises(CatalogError) as err:
        StacApiCatalog(url)
    assert url in str(err.value)
    assert "HTTP 404" in str(err.value)


def test_not_a_stac_api(full_url):
    with pytest.raises(CatalogError, match="STAC API"):
        StacApiCatalog(f"{full_url}/api")  # the OpenAPI document, JSON but not STAC


def test_unknown_collection_lists_choices(full):
    with pytest.raises(UnknownCollection) as err:
        full.search(Query("sentinel-3"))
    assert set(err.value.choices) == {"sentinel-2-l2a", "sentinel-2-l1c", "landsat-c2-l2"}
    with pytest.raises(UnknownCollection):
        full.collection("sentinel-3")
    with pytest.raises(UnknownCollection):
        full.queryables("sentinel-3")


def test_server_gone_after_opening_is_a_catalog_error(synthetic, tmp_path):
    items, collections = synthetic
    s2 = [c for c in collections if c.id == S2]
    cat = make_stacapi_catalog({S2: items[S2][:3]}, s2, tmp_path)
    assert len(cat.search(Query(S2))) == 3
    url = cat.location
    cat.close()  # stops its server
    with pytest.raises(CatalogError) as err:
        cat.search(Query(S2, ids=("x",)))
    assert url in str(err.value)


def test_read_only(full):
    with pytest.raises(NotImplementedError, match="read-only"):
        full.add_items([], collection=S2)
