"""The one error table, the JSON error body, and what happens on unexpected exceptions."""

from __future__ import annotations

import inspect

import pytest
from service_data import ITEM_JUNE, true_colour
from starlette.testclient import TestClient

from engine import errors as eox
from engine.catalog import SQLiteCatalog
from engine.chain.store import ChainStore
from engine.render import HandleCache, PointValues, SceneSet
from service import create_service
from service.errors import STATUS_CODES, status_for


def engine_error_classes() -> list[type]:
    return [c for _, c in inspect.getmembers(eox, inspect.isclass)
            if issubclass(c, eox.EOXError) and c is not eox.EOXError]


@pytest.mark.parametrize("cls", engine_error_classes(), ids=lambda c: c.__name__)
def test_every_engine_error_has_an_explicit_non_500_status(cls):
    assert cls in STATUS_CODES, f"add {cls.__name__} to service.errors.STATUS_CODES"
    gateway = issubclass(cls, eox.StorageUnavailable)  # remote storage failed: 502 / 504
    assert 400 <= STATUS_CODES[cls] < 500 or STATUS_CODES[cls] == 503 or (
        gateway and STATUS_CODES[cls] in (502, 504))


def test_status_follows_the_mro():
    class NewKindOfMissing(eox.NotFound):
        pass

    assert status_for(NewKindOfMissing("x")) == 404
    assert status_for(eox.ChainError("x")) == 422
    assert status_for(eox.InvalidInput("x")) == 400
    assert status_for(eox.DataUnavailable("x")) == 424
    assert status_for(eox.StorageUnavailable("x")) == 502
    assert status_for(eox.StorageTimeout("x")) == 504
    assert status_for(KeyError("x")) == 500


class ExplodingRenderer:
    """A renderer failing in every way a buggy dependency could."""

    def __init__(self) -> None:
        self.calls = 0
        self.handles = HandleCache(size=0)

    def tile(self, chain, z, x, y, *, tilesize=256):
        self.calls += 1
        if z == 1:
            raise ZeroDivisionError("boom")
        if z == 2:
            raise eox.CatalogError("database is locked")
        if z == 3:
            raise eox.SandboxError("function refused: import os", choices=["abs", "min"])

    def point(self, chain, lon, lat):
        return PointValues(coordinates=(lon, lat), bands=["a", "b", "c"],
                           values=[float("nan"), float("inf"), 1.5], items=[])

    def encode(self, img, fmt):
        raise AssertionError("no tile has an image here")

    def fingerprint(self, chain):
        return "any"

    def scenes(self, chain):
        return SceneSet([], ())

    def invalidate(self):
        pass


@pytest.fixture()
def exploding(scene):
    renderer = ExplodingRenderer()
    app = create_service(SQLiteCatalog(scene.db), chain_store=ChainStore(scene.db),
                         renderer=renderer)
    with TestClient(app, raise_server_exceptions=True) as c:
        cid = c.post("/api/chains", json=true_colour(ids=(ITEM_JUNE,))).json()["id"]
        yield c, cid, renderer


def test_unexpected_exception_is_json_500_and_service_keeps_serving(exploding, caplog):
    c, cid, renderer = exploding
    with caplog.at_level("ERROR"):
        r = c.get(f"/api/chains/{cid}/tiles/1/0/0.png")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": "internal error: ZeroDivisionError: boom", "type": "InternalError"}
    assert "Traceback" not in r.text
    assert any("ZeroDivisionError" in (rec.exc_text or "") or rec.exc_info for rec in caplog.records)
    # Later requests are served.
    assert c.get(f"/api/chains/{cid}/tiles/5/0/0.png").status_code == 204
    assert c.get("/healthz").status_code == 200
    assert renderer.calls == 2


def test_engine_errors_map_through_the_table(exploding):
    c, cid, _ = exploding
    r = c.get(f"/api/chains/{cid}/tiles/2/0/0.png")
    assert r.status_code == 503 and r.json()["type"] == "CatalogError"
    r = c.get(f"/api/chains/{cid}/tiles/3/0/0.png")
    assert r.status_code == 422
    assert r.json() == {"detail": "function refused: import os. Valid choices: abs, min",
                        "type": "SandboxError", "choices": ["abs", "min"]}


def test_non_finite_values_become_null(exploding):
    c, cid, _ = exploding
    r = c.get(f"/api/chains/{cid}/point", params={"lon": 1, "lat": 2})
    assert r.status_code == 200 and r.json() == {
        "coordinates": [1.0, 2.0], "bands": ["a", "b", "c"], "values": [None, None, 1.5],
        "items": []}


def test_unknown_route_and_method_are_json(client):
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["type"] == "HTTPException"
    r = client.delete("/api/chains")
    assert r.status_code == 405 and r.json()["detail"] == "Method Not Allowed"
