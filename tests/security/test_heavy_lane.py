"""Issue #18 item 6: a client sending the costliest tiles the budget allows cannot take
every render slot: heavy tiles render in their own lane (half the slots), light tiles keep
the rest."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Literal

import httpx
import pytest
from service_data import make_app, true_colour

from engine.chain.raster import Raster
from engine.chain.steps import STEPS, Step

HOLD = 0.3
RUNNING: dict[str, int] = {}
PEAK: dict[str, int] = {}
LOCK = threading.Lock()


class Gate(Step):
    """Holds a render HOLD s, counting how many of its ``lane`` run at once."""

    name: Literal["test_gate"] = "test_gate"
    lane: str = "light"

    def __call__(self, img: Raster) -> Raster:
        with LOCK:
            RUNNING[self.lane] = RUNNING.get(self.lane, 0) + 1
            PEAK[self.lane] = max(PEAK.get(self.lane, 0), RUNNING[self.lane])
        try:
            time.sleep(HOLD)
        finally:
            with LOCK:
                RUNNING[self.lane] -= 1
        return img


@pytest.fixture
def gate():
    RUNNING.clear()
    PEAK.clear()
    STEPS.register(Gate)
    try:
        yield PEAK
    finally:
        STEPS._steps.pop("test_gate", None)


def chain(lane: str) -> dict:
    body = true_colour()
    steps = body["steps"]
    if lane == "heavy":  # ~75 syntax nodes a pixel: heavy at 512 px (19.7 M), light at 256
        terms = "+".join(["B04*1.0"] * 11)
        steps = [{"name": "expression", "expression": f"{terms};B03;B02"}, steps[1]]
    body["steps"] = [*steps, {"name": "test_gate", "lane": lane}]
    return body


TILES = [(14, 8874 + dx, 5549 + dy) for dx in range(3) for dy in range(3)]


def test_heavy_tiles_take_at_most_their_lane(scene, gate):
    app = make_app(scene.db, render_concurrency=3, cache_bytes=0)

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://localhost") as c:
            heavy = (await c.post("/api/chains", json=chain("heavy"))).json()["id"]
            light = (await c.post("/api/chains", json=chain("light"))).json()["id"]
            for cid in (heavy, light):  # fingerprints (and the work estimate) known
                await c.get(f"/api/chains/{cid}/tilejson.json")
                await c.get(f"/api/chains/{cid}/tiles/14/8875/5550.png?tilesize=256")

            async def get(url):
                t0 = time.perf_counter()
                r = await c.get(url)
                return r.status_code, time.perf_counter() - t0

            heavies = [asyncio.create_task(get(
                f"/api/chains/{heavy}/tiles/{z}/{x}/{y}.png?tilesize=512"))
                for z, x, y in TILES[:4]]
            await asyncio.sleep(0.05)
            lights = [asyncio.create_task(get(f"/api/chains/{light}/tiles/{z}/{x}/{y}.png"))
                      for z, x, y in TILES[4:8]]
            done_light = await asyncio.gather(*lights)
            done_heavy = await asyncio.gather(*heavies)
            health = (await c.get("/healthz")).json()["render"]
            return done_light, done_heavy, health

    light, heavy, health = asyncio.run(main())
    assert all(s == 200 for s, _ in light + heavy), (light, heavy)
    assert gate["heavy"] == 1  # 4 heavy tiles, one at a time
    assert gate["light"] == 2  # the other two slots stay for light tiles
    # light tiles waited for no heavy one (4 on 2 free slots), the heavy ones in a row
    assert max(t for _, t in light) < max(t for _, t in heavy), (light, heavy)
    assert max(t for _, t in heavy) >= 4 * HOLD
    assert health["heavy_lane"] == 1 and health["heavy_renders"] >= 4
