"""Issue #18 item 7: band math with a function called with the wrong number of arguments
(``B04+nanmax()``) is a 4xx naming the function, on every route that evaluates it, never a
500 ("need at least one array to stack"); also for a chain stored before the check."""

from __future__ import annotations

import json
import sqlite3

import pytest
from service_data import COLLECTION, true_colour
from starlette.testclient import TestClient

from app.wiring import build_service

BAD = ["B04+nanmax()", "nanmean()", "where(B04)", "clip(B04, 1)", "abs(B04, B03)"]


@pytest.fixture
def client(settings_for):
    app = build_service(settings_for())
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        yield c


def names_the_call(r, expression: str) -> None:
    assert 400 <= r.status_code < 500, (expression, r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert expression.split("(")[0].split("+")[-1] + "()" in detail, detail
    assert "argument" in detail


def stored_anyway(scene, expression: str) -> str:
    """The id of a chain with ``expression`` written straight into the chain table (as a
    chain stored by an older version would be)."""
    chain = {"source": {"collection": COLLECTION},
             "steps": [{"name": "expression", "expression": expression},
                       {"name": "scale", "min": 0, "max": 1}]}
    cid = "f" * 64
    with sqlite3.connect(scene.db) as con:
        con.execute("INSERT OR REPLACE INTO chains (id, json, created) VALUES (?, ?, ?)",
                    (cid, json.dumps(chain), "2026-01-01"))
    return cid


@pytest.mark.parametrize("expression", BAD)
def test_registering_is_refused(client, expression):
    chain = true_colour()
    chain["steps"] = [{"name": "expression", "expression": expression},
                      {"name": "scale", "min": 0, "max": 1}]
    names_the_call(client.post("/api/chains", json=chain), expression)


@pytest.mark.parametrize("expression", ["B04+nanmax()", "where(B04)"])
def test_tile_point_statistics_of_a_stored_chain(client, scene, expression):
    cid = stored_anyway(scene, expression)
    names_the_call(client.get(f"/api/chains/{cid}/tiles/14/8875/5550.png"), expression)
    names_the_call(client.get(f"/api/chains/{cid}/point?lon=15.02&lat=50.09"), expression)
    polygon = {"type": "Polygon", "coordinates": [[[15.0, 50.08], [15.03, 50.08],
                                                   [15.03, 50.09], [15.0, 50.08]]]}
    names_the_call(client.post(f"/api/chains/{cid}/statistics", json=polygon), expression)


@pytest.mark.parametrize("expression", BAD)
def test_profile_get_and_post(client, expression):
    r = client.get("/api/profile", params={"collection": COLLECTION, "lon": 15.02,
                                           "lat": 50.09, "expression": expression})
    names_the_call(r, expression)
    r = client.post("/api/profile", json={"collection": COLLECTION, "expression": expression,
                                          "geometry": {"type": "Point",
                                                       "coordinates": [15.02, 50.09]}})
    names_the_call(r, expression)
