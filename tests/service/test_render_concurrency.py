"""Render concurrency: at most ``render_concurrency`` tiles render at once, cache hits do not
wait for a render slot, the same tile requested concurrently renders once; and the wiring
sets the bound and GDAL's block cache from Settings."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Literal

import httpx
import morecantile
import pytest
import rasterio.env
from rasterio.warp import transform
from service_data import CRS_UTM, ORIGIN, RES, SIZE, build_catalog, make_app, true_colour

from engine.chain.raster import Raster
from engine.chain.steps import STEPS, Step
from engine.errors import ChainError

TMS = morecantile.tms.get("WebMercatorQuad")
DELAY = 0.25


class Probe:
    """Counts the renders running at once through the slow step (one per test)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.calls = 0


PROBE = Probe()


class SlowStep(Step):
    """Sleeps DELAY s (as a heavy step would compute), recording how many run at once."""

    name: Literal["test_slow"] = "test_slow"
    fail: bool = False
    seconds: float = DELAY

    def __call__(self, img: Raster) -> Raster:
        with PROBE.lock:
            PROBE.running += 1
            PROBE.calls += 1
            PROBE.peak = max(PROBE.peak, PROBE.running)
        try:
            time.sleep(self.seconds)
        finally:
            with PROBE.lock:
                PROBE.running -= 1
        if self.fail:
            raise ChainError("test_slow: failing as asked")
        return img


@pytest.fixture()
def slow_step():
    """Register the slow step for this test only."""
    global PROBE
    PROBE = Probe()
    STEPS.register(SlowStep)
    try:
        yield
    finally:
        STEPS._steps.pop("test_slow", None)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return build_catalog(tmp_path_factory.mktemp("concurrency"))


def tiles(z: int, n: int) -> list[morecantile.Tile]:
    """``n`` distinct tiles around the scene centre at zoom ``z``."""
    xs, ys = transform(CRS_UTM, "EPSG:4326", [ORIGIN[0] + SIZE * RES / 2],
                      [ORIGIN[1] - SIZE * RES / 2])
    c = TMS.tile(xs[0], ys[0], z)
    return [morecantile.Tile(c.x + dx, c.y + dy, z) for dy in (-1, 0, 1)
            for dx in (-1, 0, 1, 2)][:n]


def slow_chain(seconds: float = DELAY) -> dict:
    chain = true_colour()
    chain["steps"] = [*chain["steps"], {"name": "test_slow", "seconds": seconds}]
    return chain


async def _timed_get(client: httpx.AsyncClient, url: str) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    r = await client.get(url)
    return r.status_code, t0, time.perf_counter()


def run(app, coro_factory):
    """Run ``coro_factory(client)`` against the ASGI app in one event loop."""
    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test") as client:
            return await coro_factory(client)
    return asyncio.run(main())


def test_renders_are_bounded_by_render_concurrency(scene, slow_step):
    app = make_app(scene.db, render_concurrency=2)
    todo = tiles(17, 10)

    async def scenario(client):
        cid = (await client.post("/api/chains", json=slow_chain())).json()["id"]
        t0 = time.perf_counter()
        results = await asyncio.gather(*(
            _timed_get(client, f"/api/chains/{cid}/tiles/{t.z}/{t.x}/{t.y}.png") for t in todo))
        return results, time.perf_counter() - t0, (await client.get("/healthz")).json()

    results, elapsed, health = run(app, scenario)
    assert [s for s, _, _ in results] == [200] * len(todo)
    assert PROBE.calls == len(todo)
    assert PROBE.peak == 2  # never more than 2 at once, and the 2 did run side by side
    assert elapsed >= len(todo) / 2 * DELAY * 0.95
    assert health["render"]["max_rendering"] == 2 and health["render"]["concurrency"] == 2


def test_cache_hits_do_not_wait_for_a_render_slot(scene, slow_step):
    app = make_app(scene.db, render_concurrency=1)
    cached, *misses = tiles(17, 5)
    slow_s = 0.8  # the queued renders take 4 x 0.8 s; a hit must not wait for them

    async def scenario(client):
        cid = (await client.post("/api/chains", json=slow_chain(slow_s))).json()["id"]
        url = "/api/chains/{}/tiles/{}/{}/{}.png"
        assert (await client.get(url.format(cid, cached.z, cached.x, cached.y))
                ).status_code == 200
        slow = [asyncio.create_task(_timed_get(client, url.format(cid, t.z, t.x, t.y)))
                for t in misses]
        await asyncio.sleep(slow_s / 2)  # the renders are queued now
        hit = await _timed_get(client, url.format(cid, cached.z, cached.x, cached.y))
        return hit, await asyncio.gather(*slow)

    (status, start, end), slow = run(app, scenario)
    assert status == 200 and [s for s, _, _ in slow] == [200] * 4
    assert end - start < slow_s  # it did not queue behind the renders...
    assert end < max(e for _, _, e in slow) - 2 * slow_s  # ...which went on for long
    assert PROBE.peak == 1


def test_the_same_tile_requested_at_once_renders_once(scene, slow_step):
    app = make_app(scene.db, render_concurrency=3)
    t = tiles(17, 1)[0]

    async def scenario(client):
        cid = (await client.post("/api/chains", json=slow_chain())).json()["id"]
        url = f"/api/chains/{cid}/tiles/{t.z}/{t.x}/{t.y}.png"
        answers = await asyncio.gather(*(client.get(url) for _ in range(6)))
        return answers, (await client.get("/healthz")).json()["render"]

    answers, stats = run(app, scenario)
    assert {r.status_code for r in answers} == {200}
    assert len({r.content for r in answers}) == 1
    assert PROBE.calls == 1 and stats["renders"] == 1 and stats["shared"] == 5


def test_an_error_reaches_every_waiter_and_is_not_cached(scene, slow_step):
    """A shared render that fails fails each request that waited for it; the next
    request renders again."""
    app = make_app(scene.db, render_concurrency=2)
    t = tiles(17, 1)[0]
    chain = slow_chain()
    chain["steps"][-1]["fail"] = True

    async def scenario(client):
        cid = (await client.post("/api/chains", json=chain)).json()["id"]
        url = f"/api/chains/{cid}/tiles/{t.z}/{t.x}/{t.y}.png"
        first = await asyncio.gather(*(client.get(url) for _ in range(4)))
        return first, await client.get(url)

    first, again = run(app, scenario)
    assert [r.status_code for r in first] == [422] * 4 and again.status_code == 422
    assert all("failing as asked" in r.json()["detail"] for r in [*first, again])
    assert PROBE.calls == 2  # once for the 4 concurrent requests, once for the next


def test_settings_wire_render_concurrency_disk_cache_and_gdal_cache(scene, tmp_path):
    from starlette.testclient import TestClient

    from app.settings import Settings
    from app.wiring import build_service

    before = rasterio.env.get_gdal_config("GDAL_CACHEMAX")
    try:
        settings = Settings(catalog=str(scene.db), data_dir=tmp_path, render_concurrency=3,
                            tile_disk_cache_mb=5, gdal_cache_mb=64, functions_enabled=False)
        app = build_service(settings)
        assert rasterio.env.get_gdal_config("GDAL_CACHEMAX") == 64 * 2**20
        with TestClient(app, base_url="http://localhost") as c:
            health = c.get("/healthz").json()
            assert health["render"]["concurrency"] == 3
            assert health["disk_cache"]["max_bytes"] == 5 * 2**20
            assert health["disk_cache"]["root"] == ".../tile-cache"  # paths hidden
        off = build_service(Settings(catalog=str(scene.db), data_dir=tmp_path,
                                     tile_disk_cache_mb=0, functions_enabled=False))
        assert "disk_cache" not in off.state.health_sections
    finally:
        rasterio.env.set_gdal_config("GDAL_CACHEMAX", int(before))
