"""Fixtures of the service tests: the data of ``service_data`` in a session catalog, and the
real ASGI app over it through starlette's TestClient."""

from __future__ import annotations

import pytest
from service_data import Scene, build_catalog, make_app, true_colour
from starlette.testclient import TestClient


@pytest.fixture(scope="session")
def scene(tmp_path_factory) -> Scene:
    return build_catalog(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="session")
def app(scene):
    return make_app(scene.db)


@pytest.fixture(scope="session")
def client(app):
    with TestClient(app, raise_server_exceptions=True) as c:
        yield c


@pytest.fixture(scope="session")
def chain_id(client) -> str:
    r = client.post("/api/chains", json=true_colour())
    assert r.status_code == 201, r.text
    return r.json()["id"]
