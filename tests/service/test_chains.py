"""Registering chains: ids, URL templates, validation errors (422 naming the field and the
valid choices), body limit (413), and persistence across a restart."""

from __future__ import annotations

import json

import morecantile
from service_data import COLLECTION, ITEM_JULY, make_app, true_colour
from starlette.testclient import TestClient

from engine.chain import Chain


def test_post_chain_returns_id_and_absolute_urls(client):
    body = true_colour(vmax=2500)
    r = client.post("/api/chains", json=body)
    assert r.status_code == 201
    out = r.json()
    chain = Chain.from_json(body)
    assert out["id"] == chain.id
    assert out["tiles"] == f"http://testserver/api/chains/{chain.id}/tiles/{{z}}/{{x}}/{{y}}.png"
    assert out["tilejson"] == f"http://testserver/api/chains/{chain.id}/tilejson.json"
    # Idempotent: the same chain gets the same id.
    assert client.post("/api/chains", json=body).json()["id"] == chain.id


def test_get_chain_round_trips(client, chain_id):
    r = client.get(f"/api/chains/{chain_id}")
    assert r.status_code == 200
    assert Chain.from_json(r.json()).id == chain_id


def test_get_unknown_chain_is_404(client):
    r = client.get("/api/chains/doesnotexist")
    assert r.status_code == 404
    assert r.json() == {"detail": "no chain with id 'doesnotexist'", "type": "NotFound"}


def test_unknown_step_is_422_with_choices(client):
    body = true_colour()
    body["steps"].append({"name": "sharpen"})
    r = client.post("/api/chains", json=body)
    assert r.status_code == 422
    err = r.json()
    assert err["type"] == "ChainError"
    assert "sharpen" in err["detail"]
    assert {"bands", "scale", "colormap"} <= set(err["choices"])


def test_unknown_band_is_422_with_choices(client):
    body = true_colour()
    body["steps"][0]["bands"] = ["B04", "B99", "B02"]
    r = client.post("/api/chains", json=body)
    assert r.status_code == 422
    err = r.json()
    assert "B99" in err["detail"]
    assert {"B02", "B03", "B04", "B08", "red", "nir"} <= set(err["choices"])


def test_unknown_collection_is_422_naming_the_field(client):
    body = true_colour()
    body["source"]["collection"] = "landsat-9"
    r = client.post("/api/chains", json=body)
    assert r.status_code == 422
    err = r.json()
    assert err["detail"].startswith("source.collection: unknown collection 'landsat-9'")
    assert err["choices"] == [COLLECTION]


def test_malformed_chains_are_422(client):
    for body in ([1, 2], {"steps": []}, {"source": {"collection": COLLECTION}, "steps": "x"},
                 {"source": {"collection": COLLECTION, "mosaic": "best"}, "steps": []}):
        r = client.post("/api/chains", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"]
    r = client.post("/api/chains", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/api/chains", json={"source": {"collection": COLLECTION, "mosaic": "best"},
                                         "steps": []})
    assert "first" in r.json()["choices"]


def test_chain_reading_no_band_is_422(client):
    r = client.post("/api/chains", json={"source": {"collection": COLLECTION}, "steps": []})
    assert r.status_code == 422
    assert "reads no bands" in r.json()["detail"]


def test_body_over_limit_is_413(scene):
    with TestClient(make_app(scene.db, max_body_bytes=2000)) as c:
        big = true_colour()
        big["source"]["ids"] = [f"item-{i:05d}" for i in range(500)]
        r = c.post("/api/chains", json=big)
        assert r.status_code == 413
        assert r.json()["type"] == "BodyTooLarge" and "2000" in r.json()["detail"]
        # Without a Content-Length (chunked upload) the limit holds too.
        data = json.dumps(big).encode()
        r = c.post("/api/chains", content=iter([data[:1500], data[1500:]]),
                   headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/api/chains", json=true_colour()).status_code == 201


def test_chains_survive_a_restart(scene):
    body = true_colour(ids=(ITEM_JULY,), vmax=3500)
    tile = morecantile.tms.get("WebMercatorQuad").tile(15.035, 50.08, 14)
    path = f"/tiles/{tile.z}/{tile.x}/{tile.y}.png"
    with TestClient(make_app(scene.db)) as first:
        created = first.post("/api/chains", json=body).json()
        before = first.get(f"/api/chains/{created['id']}{path}")
        assert before.status_code == 200
    # A new app over new catalog/store objects on the same file: the URL still works.
    with TestClient(make_app(scene.db)) as second:
        after = second.get(f"/api/chains/{created['id']}{path}")
        assert after.status_code == 200
        assert after.content == before.content
        assert after.headers["etag"] == before.headers["etag"]
        assert Chain.from_json(second.get(f"/api/chains/{created['id']}").json()).id \
            == created["id"]
