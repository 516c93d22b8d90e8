"""First-open speed: catalog answers cached per process, preset chains prefetched for the
visible tiles, and the tile arithmetic that predicts what the browser asks for."""

from __future__ import annotations

import math

import morecantile
import pytest
from component_data import NEW, S2

from components.backend import Backend
from components.state import AppState
from components.tilemath import WORLD, fit, lonlat_box, tile_level, to_lonlat, visible_tiles

TMS = morecantile.tms.get("WebMercatorQuad")


@pytest.mark.parametrize("size", [(1000, 720), (640, 480)])
@pytest.mark.parametrize("view", [(13.30, 52.50, 13.40, 52.56), (-5.0, 40.0, 10.0, 50.0)])
def test_visible_tiles_are_the_covering_tiles_at_bokehs_level(view, size):
    x0, y0, x1, y1 = fit(view, size)
    res = max((x1 - x0) / size[0], (y1 - y0) / size[1])
    # Bokeh keeps the deepest level whose resolution is still coarser than the view's
    z = max(i for i in range(31) if WORLD / 256 / 2**i >= res)
    assert tile_level((x0, y0, x1, y1), size) == z
    box = lonlat_box((x0, y0, x1, y1))
    expected = {(t.z, t.x, t.y) for t in TMS.tiles(*box, [z])}
    got = visible_tiles(box, size, border=0, limit=10_000)
    assert set(got) == expected
    lon, lat = to_lonlat((x0 + x1) / 2, (y0 + y1) / 2)
    centre = TMS.tile(float(lon), float(lat), z)
    assert got[0] == (centre.z, centre.x, centre.y)  # nearest the centre first


def test_visible_tiles_within_a_scene_only():
    view = (13.0, 52.0, 14.0, 53.0)
    scene = (13.40, 52.50, 13.45, 52.55)
    tiles = visible_tiles(view, (1000, 720), within=[scene], border=1, limit=1000)
    assert tiles
    for z, x, y in tiles:
        b = TMS.bounds(morecantile.Tile(x, y, z))
        assert b.left < scene[2] and b.right > scene[0]
        assert b.bottom < scene[3] and b.top > scene[1]


def test_a_links_view_is_shown_at_exactly_its_width():
    w, s, e, n = fit((13.0, 52.5, 13.1, 52.5), (1000, 500))  # zero height: a link's view
    assert (e - w) == pytest.approx(2 * math.pi * 6378137 * 0.1 / 360, rel=1e-9)
    assert (n - s) == pytest.approx((e - w) / 2)


def test_newest_scene_and_searches_are_cached_until_the_catalog_changes(data, backend):
    calls = []
    catalog = backend.catalog
    real = catalog.search

    def counting(query):
        calls.append(query)
        return real(query)

    fresh = Backend(catalog=catalog, chain_store=backend.chain_store,
                    renderer=backend.renderer)
    catalog.search = counting
    try:
        assert fresh.newest() == (S2, NEW)
        first = len(calls)
        assert fresh.newest() == (S2, NEW) and len(calls) == first
        a, b = AppState(backend=fresh), AppState(backend=fresh)
        assert a.open_latest() and b.open_latest()
        assert len(calls) == first + 1  # one search for both sessions
        assert a.selected == b.selected == [NEW]
        assert a.results is not b.results  # sessions never share a mutable table
        fresh.invalidate()
        fresh.newest()
        assert len(calls) > first + 1
    finally:
        del catalog.search


def test_preset_chains_are_registered_and_their_visible_tiles_prefetched(backend):
    asked = []
    b = Backend(catalog=backend.catalog, chain_store=backend.chain_store,
                renderer=backend.renderer,
                prefetch=lambda chains, tiles, group: asked.append((list(chains), tiles, group)))
    s = AppState(backend=b)
    s.open_latest()
    s.viewport = (13.30, 52.50, 13.40, 52.56)
    chains, tiles, group = asked[-1]
    assert s.chain_id not in chains and len(chains) == len(s.presets) - 1
    assert tiles == visible_tiles(s.viewport, s.map_size, within=[s.bounds[NEW]])
    # a click on a preset shows exactly a prefetched chain
    s.choose_preset("false-colour")
    assert s.chain_id in chains and backend.chain_store.get(s.chain_id) == s.chain
    # the same session replaces its pending prefetch (same group)
    assert asked[-1][2] == group
