"""The tile warmer: background order, replacement per group, errors never stop it."""

from __future__ import annotations

import threading

from app.warm import FIRST_PASS, TileWarmer
from engine.errors import DataUnavailable

TILES = [(10, i, 0) for i in range(FIRST_PASS + 3)]


def test_first_tiles_of_every_chain_first_then_the_rest():
    done = []
    gate = threading.Event()

    def render(c, z, x, y):
        gate.wait(5)
        done.append((c, x))
        return True

    w = TileWarmer(render)
    w.submit(["a", "b"], TILES, "s1")
    gate.set()
    assert w.wait_idle(10)
    firsts = [(c, x) for c in "ab" for x in range(FIRST_PASS)]
    assert done[:2 * FIRST_PASS] == firsts
    assert sorted(done) == sorted((c, x) for c in "ab" for x in range(len(TILES)))
    assert w.rendered == len(done)


def test_a_new_submission_replaces_the_groups_pending_tiles():
    started, gate, done = threading.Event(), threading.Event(), []

    def render(c, z, x, y):
        started.set()
        gate.wait(5)
        done.append(c)
        return True

    w = TileWarmer(render)
    w.submit(["old"], TILES, "session")
    assert started.wait(5)  # one "old" tile is being rendered
    w.submit(["new"], TILES[:2], "session")
    assert w.pending() == 2
    gate.set()
    assert w.wait_idle(10)
    assert done.count("old") == 1 and done.count("new") == 2


def test_engine_errors_are_skipped_and_cached_tiles_not_counted():
    def render(c, z, x, y):
        if x == 0:
            raise DataUnavailable("the file vanished")
        return x % 2 == 0  # odd ones were cached already

    w = TileWarmer(render)
    w.submit(["a"], TILES, "g")
    assert w.wait_idle(10)
    assert w.rendered == len([x for x in range(1, len(TILES)) if x % 2 == 0])


def test_the_first_views_base_map_is_drawn_before_the_first_page_asks(tmp_path):
    """A first page asks for ~30 base-map tiles with its scene tiles; drawn at start-up, they
    answer from memory instead of holding the browser's connections (0.6 s measured)."""
    import math
    import shutil
    from pathlib import Path

    from app.settings import Settings
    from app.state import resources, warm_process
    from engine import basemap
    from engine.catalog import SQLiteCatalog

    demo = Path(__file__).resolve().parents[2] / ".cache" / "demo" / "catalog.sqlite"
    if not demo.exists():
        import pytest

        pytest.skip(f"no demo catalog at {demo} (make test prepares it)")
    shutil.copy(demo, tmp_path / "c.sqlite")
    res = resources(Settings(catalog=str(tmp_path / "c.sqlite"), data_dir=tmp_path))
    basemap._render.cache_clear()
    tiles = warm_process(res)
    assert tiles and len({z for z, _, _ in tiles}) == 1
    # the newest scene's centre lies in one of them (computed here, not by the app)
    collection, item_id = res.backend.newest()
    with SQLiteCatalog(tmp_path / "c.sqlite") as cat:
        w, s, e, n = cat.get_item(collection, item_id).bbox
    lon, lat = (w + e) / 2, (s + n) / 2
    z = tiles[0][0]
    x = int((lon + 180) / 360 * 2**z)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**z)
    assert (z, x, y) in tiles
    before = basemap._render.cache_info()
    assert before.currsize == len(set(tiles))
    for t in tiles:
        basemap.render_tile(*t)
    after = basemap._render.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + len(tiles)
