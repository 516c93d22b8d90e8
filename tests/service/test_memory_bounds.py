"""Issue #10, no memory growth over a soak: what the tile service keeps per request is
bounded. Open datasets are a pool shared by the render threads (not one cache per thread,
kept after the thread ended), and freed malloc memory goes back to the OS."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import morecantile
import rasterio
from service_data import ITEM_JULY, ITEM_JUNE, make_app, true_colour
from starlette.testclient import TestClient

from service.app import tune_malloc

TMS = morecantile.tms.get("WebMercatorQuad")


def test_open_datasets_stay_bounded_over_many_tiles_and_threads(scene):
    files = sorted(scene.folder.glob("*.tif"))
    keys = 0  # every (file, overview level) a tile can read
    for f in files:
        with rasterio.open(f) as ds:
            keys += 1 + len(ds.overviews(1))
    ndvi = {"source": {"collection": "s2-test", "ids": [ITEM_JUNE, ITEM_JULY]},
            "steps": [{"name": "expression", "expression": "(B08 - B04) / (B08 + B04)"},
                      {"name": "scale", "min": [-1], "max": [1]}]}
    urls = []
    with TestClient(make_app(scene.db, cache_bytes=0)) as client:
        ids = [client.post("/api/chains", json=c).json()["id"]
               for c in (true_colour(ids=(ITEM_JUNE,)), true_colour(ids=(ITEM_JULY,)), ndvi)]
        for z in range(12, 17):
            for t in list(TMS.tiles(15.0, 50.05, 15.07, 50.11, [z]))[:12]:
                urls += [f"/api/chains/{cid}/tiles/{t.z}/{t.x}/{t.y}.png" for cid in ids]

        def fetch(url: str) -> int:
            return client.get(url).status_code

        for _ in range(2):  # 8 request threads at a time, the server's pool underneath
            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(fetch, urls)) <= {200, 204}
        handles = client.get("/healthz").json()["handles"]
    assert len(urls) >= 100
    assert handles["lent"] == 0
    assert handles["idle"] <= handles["max_idle"]
    # a dataset is opened again only while all open ones of its file are lent out: with
    # render_concurrency (CPU + 1) renders at once, far fewer than one per thread
    assert handles["opened"] <= keys * 3, (handles, keys)
    assert handles["reused"] > 5 * handles["opened"], handles


def test_one_memory_trimmer_per_process(scene):
    make_app(scene.db)
    make_app(scene.db)
    if tune_malloc(trim_s=3600):  # glibc: one daemon thread however many services a process builds
        trimmers = [t for t in threading.enumerate() if t.name == "eox-malloc-trim"]
        assert len(trimmers) == 1 and trimmers[0].daemon
