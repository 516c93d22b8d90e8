"""Collections, search (engine.collection.Collection over HTTP), /healthz, OpenAPI, CORS."""

from __future__ import annotations

import pytest
from service_data import COLLECTION, ITEM_JULY, ITEM_JUNE


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "FeatureCollection"
    assert body["numberReturned"] == len(body["features"])
    return [f["id"] for f in body["features"]]


def test_collections(client):
    r = client.get("/api/collections")
    assert r.status_code == 200
    (coll,) = r.json()["collections"]
    assert coll["id"] == COLLECTION
    bands = {b["name"] for b in coll["summaries"]["eo:bands"]}
    assert bands == {"B02", "B03", "B04", "B08"}
    one = client.get(f"/api/collections/{COLLECTION}")
    assert one.status_code == 200 and one.json()["id"] == COLLECTION


def test_unknown_collection_is_404_with_choices(client):
    r = client.get("/api/collections/nope")
    assert r.status_code == 404
    assert r.json()["type"] == "UnknownCollection" and r.json()["choices"] == [COLLECTION]
    r = client.get("/api/search", params={"collection": "nope"})
    assert r.status_code == 404 and r.json()["choices"] == [COLLECTION]


def test_search_all_and_item_json(client):
    r = client.get("/api/search", params={"collection": COLLECTION})
    assert sorted(ids(r)) == [ITEM_JUNE, ITEM_JULY]
    feature = r.json()["features"][0]
    assert feature["type"] == "Feature" and feature["assets"]["B04"]["href"].endswith(".tif")
    assert r.json()["numberMatched"] == 2


@pytest.mark.parametrize("params, expected", [
    ({"filter": "eo:cloud_cover,<,50"}, [ITEM_JUNE]),
    ({"filter": ["eo:cloud_cover,>=,10", "platform,=,sentinel-2b"]}, [ITEM_JULY]),
    ({"filter": "platform,in,sentinel-2a|sentinel-2c"}, [ITEM_JUNE]),
    ({"datetime": "2020-06"}, [ITEM_JUNE]),
    ({"datetime": "2020-06-15/.."}, [ITEM_JULY]),
    ({"datetime": "../2020-07-01T10:00:00Z"}, [ITEM_JULY, ITEM_JUNE]),  # newest first
    ({"sortby": "-eo:cloud_cover"}, [ITEM_JULY, ITEM_JUNE]),
    ({"sortby": "eo:cloud_cover"}, [ITEM_JUNE, ITEM_JULY]),
    ({"sortby": "datetime", "limit": 1}, [ITEM_JUNE]),
    ({"bbox": "15.0,50.05,15.1,50.11", "sortby": "datetime"}, [ITEM_JUNE, ITEM_JULY]),
    ({"bbox": "10,40,11,41"}, []),
    ({"point": "15.03,50.08", "sortby": "datetime"}, [ITEM_JUNE, ITEM_JULY]),
    ({"point": "0,0"}, []),
])
def test_search_filters(client, params, expected):
    r = client.get("/api/search", params={"collection": COLLECTION, **params})
    assert ids(r) == expected


def test_search_limit_counts_all_matches(client):
    r = client.get("/api/search", params={"collection": COLLECTION, "limit": 1})
    assert r.json()["numberReturned"] == 1 and r.json()["numberMatched"] == 2


@pytest.mark.parametrize("params, status, fragment, choice", [
    ({"filter": "cloudiness,<,5"}, 400, "cloudiness", "eo:cloud_cover"),
    ({"filter": "eo:cloud_cover,~,5"}, 400, "operator", "<="),
    ({"filter": "eo:cloud_cover<5"}, 400, "property,operator,value", None),
    ({"bbox": "1,2,3"}, 400, "bbox", None),
    ({"point": "a,b"}, 400, "point", None),
    ({"bbox": "15,50,16,51", "point": "15,50"}, 400, "not both", None),
    ({"datetime": "yesterday"}, 400, "yesterday", None),
    ({"datetime": "2020-08/2020-06"}, 400, "inverted", None),
    ({"sortby": "-nothing"}, 400, "nothing", "datetime"),
    ({"sortby": "datetime,-eo:cloud_cover"}, 400, "one property", None),
    ({"limit": 0}, 422, "limit", None),
])
def test_search_errors(client, params, status, fragment, choice):
    r = client.get("/api/search", params={"collection": COLLECTION, **params})
    assert r.status_code == status, r.text
    body = r.json()
    assert fragment in body["detail"]
    if choice is not None:
        assert choice in body["choices"]


def test_search_needs_a_collection(client):
    r = client.get("/api/search")
    assert r.status_code == 422 and "collection" in r.json()["detail"]


def test_healthz(client, scene):
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    # the server path is shown by name only unless the operator sets EOX_EXPOSE_PATHS
    assert body["catalog"] == {"kind": "embedded", "location": f".../{scene.db.name}"}
    assert body["version"]
    assert set(body["cache"]) == {"entries", "bytes", "max_bytes", "hits", "misses", "evictions"}
    assert body["cache"]["max_bytes"] == 256 * 2**20


def test_healthz_sections_are_extensible(app, client):
    app.state.health_sections["sandbox"] = lambda: {"available": False}
    try:
        assert client.get("/healthz").json()["sandbox"] == {"available": False}
    finally:
        del app.state.health_sections["sandbox"]


def test_openapi_lists_the_wire_contract(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    paths = set(r.json()["paths"])
    assert {
        "/api/chains", "/api/chains/{chain_id}", "/api/chains/{chain_id}/tiles/{z}/{x}/{y}.{fmt}",
        "/api/chains/{chain_id}/tilejson.json", "/api/chains/{chain_id}/point",
        "/api/chains/{chain_id}/statistics", "/api/collections",
        "/api/collections/{collection_id}", "/api/search", "/healthz",
    } <= paths


def test_cors_allows_get_from_any_origin(client, chain_id):
    r = client.get("/healthz", headers={"Origin": "https://example.org"})
    assert r.headers["access-control-allow-origin"] == "*"
    pre = client.options(
        f"/api/chains/{chain_id}/tiles/1/1/1.png",
        headers={"Origin": "https://example.org", "Access-Control-Request-Method": "GET"},
    )
    assert pre.status_code == 200 and "GET" in pre.headers["access-control-allow-methods"]


def test_cors_origins_are_configurable(scene):
    from service_data import make_app
    from starlette.testclient import TestClient

    with TestClient(make_app(scene.db, cors_origins=("https://eo.example",))) as c:
        ok = c.get("/healthz", headers={"Origin": "https://eo.example"})
        assert ok.headers["access-control-allow-origin"] == "https://eo.example"
        other = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_root_path_prefixes_urls(scene):
    from service_data import make_app, true_colour
    from starlette.testclient import TestClient

    with TestClient(make_app(scene.db, root_path="/eo"), root_path="/eo") as c:
        r = c.post("/api/chains", json=true_colour())
        assert r.status_code == 201
        assert r.json()["tiles"].startswith("http://testserver/eo/api/chains/")
