"""Issue #18 item 6: the cost of a chain is bounded before it runs, with a 4xx naming the
limit; the chain cache is bounded in memory."""

from __future__ import annotations

import json
import resource
import time

import pytest
from service_data import COLLECTION, ITEM_JULY, ITEM_JUNE, true_colour
from starlette.testclient import TestClient

from app.wiring import build_service
from engine.chain import Chain
from engine.chain.budget import ChainBudget, ChainTooCostly, set_budget
from engine.chain.store import ChainStore

TILE = "/api/chains/{}/tiles/14/8875/5550.png"  # inside the scene


@pytest.fixture
def client(settings_for):
    with TestClient(build_service(settings_for()), base_url="http://localhost") as c:
        yield c


def refused(r, setting: str) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    body = r.json()
    assert setting in body["detail"] and "limit" in body["detail"], body


def test_two_thousand_expression_parts_are_refused_fast_and_without_memory(client):
    chain = {"source": {"collection": COLLECTION},
             "steps": [{"name": "expression", "expression": ";".join(["B04*2+B03"] * 2000)},
                       {"name": "band", "index": 0}, {"name": "scale", "min": 0, "max": 1}]}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    r = client.post("/api/chains", json=chain)
    assert time.perf_counter() - start < 2.0
    refused(r, "EOX_CHAIN_MAX_EXPRESSION_PARTS")
    assert "2,000" in r.json()["detail"]
    # before the budget: 3.2 GB for one tile; now nothing was parsed or read
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


def test_thirty_thousand_steps_are_refused_before_they_are_parsed(client):
    steps = [{"name": "bands", "bands": ["B04"]}] + [{"name": "band", "index": 0}] * 30_000
    body = json.dumps({"source": {"collection": COLLECTION}, "steps": steps})
    assert len(body) < 1_000_000  # under the body limit: only the budget stops it
    start = time.perf_counter()
    r = client.post("/api/chains", content=body, headers={"Content-Type": "application/json"})
    assert time.perf_counter() - start < 2.0
    refused(r, "EOX_CHAIN_MAX_STEPS")


def test_expression_terms_are_bounded_across_parts(client):
    part = "+".join(["B04"] * 100)  # 200 terms
    chain = {"source": {"collection": COLLECTION},
             "steps": [{"name": "expression", "expression": ";".join([part] * 20)}]}
    refused(client.post("/api/chains", json=chain), "EOX_CHAIN_MAX_EXPRESSION_TERMS")


def test_bands_times_dates_of_a_time_stack_are_refused_on_the_tile(client):
    set_budget(ChainBudget(max_bands_x_dates=5))  # 3 bands x 2 dates = 6 > 5
    chain = {"source": {"collection": COLLECTION, "ids": [ITEM_JUNE, ITEM_JULY],
                        "bands": ["B04", "B03", "B02"], "times": True},
             "steps": [{"name": "reduce", "method": "max"},
                       {"name": "scale", "min": 0, "max": 3000}]}
    r = client.post("/api/chains", json=chain)
    assert r.status_code == 201, r.text
    tile = client.get(TILE.format(r.json()["id"]))
    refused(tile, "EOX_CHAIN_MAX_BANDS_X_DATES")
    assert "3 x 2" in tile.json()["detail"]
    set_budget(ChainBudget(max_bands_x_dates=6))
    assert client.get(TILE.format(r.json()["id"])).status_code == 200


def test_estimated_tile_memory_is_refused_for_large_tiles_only(client):
    set_budget(ChainBudget(max_tile_mb=8))  # 3 bands x 24 B: 256 px = 4.5 MiB, 512 px = 18
    cid = client.post("/api/chains", json=true_colour()).json()["id"]
    assert client.get(TILE.format(cid)).status_code == 200
    refused(client.get(TILE.format(cid) + "?tilesize=512"), "EOX_TILE_MAX_MB")
    stats = client.post(f"/api/chains/{cid}/statistics", json={
        "type": "Polygon", "coordinates": [[[14.95, 50.0], [15.1, 50.0], [15.1, 50.15],
                                            [14.95, 50.15], [14.95, 50.0]]]})
    refused(stats, "EOX_TILE_MAX_MB")  # statistics read up to 1024 x 1024 px


def test_fluent_chains_get_the_budget_too():
    set_budget(ChainBudget(max_steps=3))
    chain = Chain.from_json(true_colour())  # 2 steps
    chain = chain.opacity(0.5)  # 3
    with pytest.raises(ChainTooCostly, match="EOX_CHAIN_MAX_STEPS"):
        chain.opacity(0.4)


def test_settings_set_the_budget(settings_for):
    with TestClient(build_service(settings_for(chain_max_steps=1)),
                    base_url="http://localhost") as c:
        refused(c.post("/api/chains", json=true_colour()), "EOX_CHAIN_MAX_STEPS")


def test_the_chain_cache_is_bounded_in_bytes(tmp_path):
    store = ChainStore(tmp_path / "chains.sqlite", cache_bytes=2 * 2**20)
    ring = [[15 + i * 1e-5, 50 + (i % 5) * 1e-5] for i in range(3000)]
    ring.append(ring[0])
    ids = []
    for n in range(15):  # 15 chains of ~70 kB: ~8 MB parsed, more than the bound
        chain = Chain.from_json({
            "source": {"collection": COLLECTION, "limit": n + 1,
                       "intersects": {"type": "Polygon", "coordinates": [ring]}},
            "steps": true_colour()["steps"]})
        ids.append(store.put(chain))
    stats = store.cache_stats()
    assert stats["bytes"] <= stats["max_bytes"] == 2 * 2**20
    assert 0 < stats["chains"] < 15
    assert all(store.get(i).id == i for i in ids)  # evicted ones come back from the table
    assert store.cache_stats()["bytes"] <= 2 * 2**20


def test_batch_blocks_are_checked_before_any_work(scene):
    from engine.batch.compute import plan
    from engine.catalog import SQLiteCatalog

    chain = Chain.from_json(true_colour())
    bbox = (14.95, 50.0, 15.2, 50.2)  # ~1,800 x 2,200 px at 10 m
    set_budget(ChainBudget(max_tile_mb=8))  # 3 bands x 24 B: a 256 px block is 4.5 MiB
    with SQLiteCatalog(scene.db) as catalog:
        assert plan(chain, bbox=bbox, resolution=10, chunks=256, catalog=catalog).chain == chain
        with pytest.raises(ChainTooCostly, match="EOX_TILE_MAX_MB"):
            plan(chain, bbox=bbox, resolution=10, chunks=1024, catalog=catalog)
