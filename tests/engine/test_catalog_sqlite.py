"""The embedded SQLite catalog: transactions, persistence, concurrency, upserts, edge items."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pystac
import pytest
from shapely.geometry import box, shape

from engine.catalog import Query, SQLiteCatalog, open_catalog
from engine.errors import CatalogError, IngestError, NotFound, UnknownCollection

S2 = "sentinel-2-l2a"


@pytest.fixture
def catalog(tmp_path, synthetic):
    """A fresh catalog with the S2 collection and its first 100 items."""
    items, collections = synthetic
    cat = SQLiteCatalog(tmp_path / "cat.sqlite")
    for coll in collections:
        cat.add_collection(coll)
    cat.add_items(items[S2][:100], collection=S2)
    yield cat
    cat.close()


def snapshot(cat: SQLiteCatalog) -> tuple:
    """Everything a query can see, to compare before and after a failed write."""
    conn = cat.sql_connection()
    try:
        rows = conn.execute("SELECT collection, id, json FROM items ORDER BY collection, id").fetchall()
        rtree = conn.execute("SELECT * FROM items_rtree ORDER BY id").fetchall()
        props = conn.execute("SELECT * FROM queryables ORDER BY 1, 2").fetchall()
        colls = conn.execute("SELECT * FROM collections ORDER BY id").fetchall()
    finally:
        conn.close()
    return rows, rtree, props, colls


def _moved(item: pystac.Item, dx: float) -> pystac.Item:
    new = item.clone()
    ring = [[x + dx, y] for x, y in new.geometry["coordinates"][0]]
    new.geometry = {"type": "Polygon", "coordinates": [ring]}
    new.bbox = [new.bbox[0] + dx, new.bbox[1], new.bbox[2] + dx, new.bbox[3]]
    new.properties["brand_new_prop"] = 1
    return new


def test_keyboard_interrupt_in_iterable_leaves_catalog_unchanged(catalog, synthetic):
    items = synthetic[0][S2]
    before = snapshot(catalog)

    def interrupted():
        yield from items[100:120]  # new items
        yield _moved(items[3], 50.0)  # an update of an existing item
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        catalog.add_items(interrupted(), collection=S2)
    assert snapshot(catalog) == before
    assert not catalog.has_item(S2, items[105].id)
    assert "brand_new_prop" not in catalog.queryables(S2)
    assert catalog.count(Query(S2)) == 100
    # the catalog is still writable afterwards (no transaction left open)
    assert catalog.add_items(items[100:102], collection=S2) == [items[100].id, items[101].id]
    assert catalog.count(Query(S2)) == 102


@pytest.mark.parametrize(
    "bad,needle",
    [
        ({"id": "x", "type": "Feature", "properties": {}, "geometry": None}, "neither datetime"),
        ({"id": "x", "properties": {"datetime": "not a date"}, "geometry": None}, "unreadable datetime"),
        ({"properties": {"datetime": "2020-01-01T00:00:00Z"}}, "no id"),
        ({"id": "x", "properties": {"datetime": "2020-01-01T00:00:00Z"}, "geometry": {"type": "Polygon", "coordinates": "oops"}}, "invalid geometry"),
        ("not an item", "expected a pystac.Item"),
    ],
)
def test_bad_item_half_way_rolls_back(catalog, synthetic, bad, needle):
    items = synthetic[0][S2]
    before = snapshot(catalog)
    with pytest.raises(IngestError) as err:
        catalog.add_items([*items[100:110], bad, *items[110:115]], collection=S2)
    assert needle in str(err.value)
    assert snapshot(catalog) == before


def test_add_items_to_unknown_collection(catalog, synthetic):
    with pytest.raises(UnknownCollection) as err:
        catalog.add_items(synthetic[0][S2][:1], collection="nope")
    assert S2 in err.value.choices


def test_reopen_after_close_persists(tmp_path, synthetic):
    items, collections = synthetic
    path = tmp_path / "sub" / "persist.sqlite"
    cat = open_catalog(path)  # creates the folder
    assert isinstance(cat, SQLiteCatalog) and cat.kind == "embedded"
    cat.add_collection(collections[0])
    cat.add_items(items[S2][:30], collection=S2)
    expected = sorted(i.id for i in items[S2][:30])
    cat.close()
    with pytest.raises(CatalogError, match="closed"):
        cat.count(Query(S2))
    with SQLiteCatalog(path) as again:
        assert [c.id for c in again.collections()] == [S2]
        assert sorted(i.id for i in again.search(Query(S2))) == expected
        assert again.get_item(S2, items[S2][4].id).properties == items[S2][4].properties
        assert "eo:cloud_cover" in again.queryables(S2)


def test_upsert_replaces_item_and_its_index_entry(catalog, synthetic):
    item = synthetic[0][S2][3]
    w, s, e, n = item.bbox
    at_old = Query(S2, bbox=(w, s, e, n), ids=(item.id,))
    assert catalog.count(at_old) == 1
    assert catalog.add_items([_moved(item, 30.0)], collection=S2) == [item.id]
    assert catalog.count(Query(S2)) == 100
    assert catalog.count(at_old) == 0
    assert catalog.count(Query(S2, bbox=(w + 30, s, e + 30, n), ids=(item.id,))) == 1
    assert "brand_new_prop" in catalog.queryables(S2)


def test_add_collection_upserts_and_keeps_items(catalog, synthetic):
    coll = synthetic[1][0].clone()
    coll.description = "updated description"
    catalog.add_collection(coll)
    assert catalog.collection(S2).description == "updated description"
    assert catalog.count(Query(S2)) == 100
    assert [c.id for c in catalog.collections()] == sorted(c.id for c in synthetic[1])


def test_not_found_errors(catalog):
    with pytest.raises(NotFound, match="no item 'nope'"):
        catalog.get_item(S2, "nope")
    with pytest.raises(UnknownCollection):
        catalog.get_item("nope", "x")
    with pytest.raises(UnknownCollection):
        catalog.search(Query("nope"))
    with pytest.raises(UnknownCollection):
        catalog.queryables("nope")
    assert not catalog.has_item(S2, "nope")


def test_queryables_are_the_union_of_item_properties(catalog, synthetic):
    expected = set().union(*(i.properties for i in synthetic[0][S2][:100]))
    assert catalog.queryables(S2) == expected
    assert catalog.queryables("landsat-c2-l2") == set()


def test_items_without_geometry_and_with_time_ranges(tmp_path, synthetic):
    with SQLiteCatalog(tmp_path / "c.sqlite") as cat:
        cat.add_collection(synthetic[1][0])
        cat.add_items(
            [
                {"type": "Feature", "stac_version": "1.0.0", "id": "nogeom", "geometry": None,
                 "properties": {"datetime": "2020-05-05T00:00:00Z"}, "links": [], "assets": {}},
                {"type": "Feature", "stac_version": "1.0.0", "id": "range",
                 "geometry": {"type": "Point", "coordinates": [5.0, 45.0]}, "bbox": [5, 45, 5, 45],
                 "properties": {"datetime": None, "start_datetime": "2020-01-01T00:00:00Z",
                                "end_datetime": "2020-12-31T00:00:00Z"}, "links": [], "assets": {}},
            ],
            collection=S2,
        )
        def ids(**kw):
            return sorted(i.id for i in cat.search(Query(S2, **kw)))
        utc = UTC
        assert ids() == ["nogeom", "range"]
        assert ids(bbox=(-180, -90, 180, 90)) == ["range"]
        # a range item matches any overlapping date range
        assert ids(start=datetime(2020, 6, 1, tzinfo=utc), end=datetime(2020, 6, 2, tzinfo=utc)) == ["range"]
        assert ids(start=datetime(2020, 12, 31, tzinfo=utc)) == ["range"]
        assert ids(end=datetime(2019, 12, 31, tzinfo=utc)) == []
        assert ids(start=datetime(2020, 5, 1, tzinfo=utc), end=datetime(2020, 5, 31, tzinfo=utc)) == ["nogeom", "range"]


def test_default_order_newest_first_and_missing_values_last(catalog, synthetic):
    items = synthetic[0][S2][:100]
    got = catalog.search(Query(S2))
    assert [i.id for i in got] == [i.id for i in sorted(items, key=lambda i: i.datetime, reverse=True)]
    missing = {i.id for i in items if "eo:cloud_cover" not in i.properties}
    assert missing
    for ascending in (True, False):
        ordered = catalog.search(Query(S2, sortby=(("eo:cloud_cover", ascending),)))
        assert {i.id for i in ordered[-len(missing):]} == missing
        values = [i.properties["eo:cloud_cover"] for i in ordered[: -len(missing)]]
        assert values == sorted(values, reverse=not ascending)


def test_query_plans_start_from_the_right_index(catalog):
    utc = UTC
    year = {"start": datetime(2018, 1, 1, tzinfo=utc), "end": datetime(2018, 12, 31, tzinfo=utc)}
    point = catalog.explain(Query(S2, intersects={"type": "Point", "coordinates": [10.5, 48.5]}, **year))
    assert point[0].startswith("SCAN r VIRTUAL TABLE INDEX 2:")  # the R*Tree drives
    world = catalog.explain(Query(S2, bbox=(-180, -90, 180, 90), **year))
    assert world[0].startswith("SEARCH i USING INDEX items_coll_dt")
    dates = catalog.explain(Query(S2, **year))
    assert dates[0].startswith("SEARCH i USING INDEX items_coll_dt")


def test_concurrent_readers_and_a_writer(tmp_path, synthetic):
    items = synthetic[0][S2]
    path = tmp_path / "conc.sqlite"
    with SQLiteCatalog(path) as cat:
        cat.add_collection(synthetic[1][0])
        cat.add_items(items[:50], collection=S2)
        query = Query(S2, bbox=(10, 47, 13, 49))
        before = cat.count(query)
        after = sum(1 for i in items if shape(i.geometry).intersects(box(10, 47, 13, 49)))
        assert 0 < before < after
        errors: list[BaseException] = []
        stop = threading.Event()

        def read(_: int) -> set[int]:
            seen = set()
            while not stop.is_set() or not seen:
                n = len(cat.search(query))
                seen.add(n)
                assert cat.count(query) in (before, after)
            return seen

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(read, k) for k in range(5)]
            try:
                cat.add_items(items[50:], collection=S2)  # one transaction: readers see all or none
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            stop.set()
            seen = set().union(*(f.result() for f in futures))
        assert not errors
        assert seen <= {before, after}
        assert cat.count(query) == after
        assert len(cat._conns) >= 2  # one connection per thread


def test_another_process_reads_while_this_one_holds_a_connection(catalog, tmp_path):
    code = (
        "import sys; from engine.catalog import SQLiteCatalog, Query\n"
        "c = SQLiteCatalog(sys.argv[1]); print(c.count(Query('sentinel-2-l2a')))"
    )
    conn = catalog.sql_connection()
    conn.execute("BEGIN IMMEDIATE")  # a writer holds the write lock; WAL readers go on
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, str(catalog.path)], capture_output=True, text=True,
            timeout=60, check=True,
        )
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert out.stdout.strip() == "100"


def test_sql_connection_shares_the_file(catalog):
    conn = catalog.sql_connection()
    try:
        conn.execute("CREATE TABLE chains (hash TEXT PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO chains VALUES ('abc', '{}')")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    reopened = SQLiteCatalog(catalog.path)
    try:
        assert reopened.count(Query(S2)) == 100
        other = reopened.sql_connection()
        assert other.execute("SELECT body FROM chains WHERE hash = 'abc'").fetchone() == ("{}",)
        other.close()
    finally:
        reopened.close()


def test_not_a_database(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CatalogError, match="cannot open"):
        SQLiteCatalog(bad)


def test_remove_collection_deletes_its_items_only(catalog, synthetic):
    catalog.add_items(synthetic[0]["landsat-c2-l2"], collection="landsat-c2-l2")
    catalog.remove_collection(S2)
    assert S2 not in [c.id for c in catalog.collections()]
    with pytest.raises(UnknownCollection):
        catalog.count(Query(S2))
    assert catalog.count(Query("landsat-c2-l2", bbox=(-180, -90, 180, 90))) == 60
    conn = catalog.sql_connection()
    try:
        assert conn.execute("SELECT count(*) FROM items_rtree").fetchone() == (60,)
        assert conn.execute("SELECT count(*) FROM queryables WHERE collection = ?", (S2,)).fetchone() == (0,)
    finally:
        conn.close()
    with pytest.raises(UnknownCollection):
        catalog.remove_collection(S2)
