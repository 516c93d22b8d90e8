"""Mosaics pasted scene by scene (engine/render/paste.py): a scene covering part of the
grid lands at the pixels an independent pyproj/numpy computation gives, a scene whose
part of the grid an earlier scene already fills is not read, and footprint windows."""

from __future__ import annotations

from datetime import UTC, datetime

import morecantile
import numpy as np
import pyproj
import pytest
from rasterio.crs import CRS
from rasterio.transform import from_origin
from render_fixtures import make_catalog, make_item, pattern

from engine.collection import Collection
from engine.render import TileRenderer
from engine.render.fastwarp import Grid
from engine.render.paste import footprint_windows, sub_grid

TMS = morecantile.tms.get("WebMercatorQuad")
TILE = TMS.tile(14.0, 50.0, 14)  # pixels of 9.55 Mercator m, ~6.1 m on the ground
TO_UTM = pyproj.Transformer.from_crs(4326, 32633, always_xy=True)


def _scene(tmp_path, sid, x0, y0, size, day, seed):
    transform = from_origin(x0, y0, 10, 10)
    band = pattern((size, size), seed)
    item = make_item(tmp_path / sid, sid, epsg=32633, transform=transform, bands={"B04": band},
                     date=datetime(2021, 6, day, tzinfo=UTC))
    return item, (band, transform)


@pytest.fixture
def corners(tmp_path):
    """Two 80 px (800 m) scenes over opposite corners of a z14 tile (~1.57 km a side):
    each covers part of the tile only; a third, older, lies inside the newest one."""
    w, s, e, n = TMS.bounds(TILE)
    xnw, ynw = (round(v) for v in TO_UTM.transform(w, n))
    xse, yse = (round(v) for v in TO_UTM.transform(e, s))
    specs = {"A": (xnw - 300, ynw + 300, 80, 3, 1), "B": (xse - 500, yse + 500, 80, 2, 2),
             "C": (xnw - 100, ynw + 100, 30, 1, 3)}
    items, arrays = [], {}
    for sid, (x0, y0, size, day, seed) in specs.items():
        item, arrays[sid] = _scene(tmp_path, sid, x0, y0, size, day, seed)
        items.append(item)
    cat = make_catalog(tmp_path / "cat.sqlite", {"s2": items})
    yield cat, arrays
    cat.close()


def _expected(arrays, order):
    """Every tile pixel centre projected exactly into each scene's grid (nearest: the
    pixel containing it), first scene in ``order`` wins; and where a centre lies within
    0.1 source px of a pixel edge of a scene (the renderer interpolates projected
    coordinates within 0.125 tile px, so the pick there may differ)."""
    left, _, right, top = TMS.xy_bounds(TILE)
    res = (right - left) / 256
    gx, gy = np.meshgrid(left + (np.arange(256) + 0.5) * res, top - (np.arange(256) + 0.5) * res)
    ux, uy = pyproj.Transformer.from_crs(3857, 32633, always_xy=True).transform(gx, gy)
    out = np.zeros((256, 256))
    filled = np.zeros((256, 256), bool)
    edge = np.zeros((256, 256), bool)
    for sid in order:
        band, t = arrays[sid]
        col, row = (ux - t.c) / 10.0, (t.f - uy) / 10.0
        inside = (col >= 0) & (col < band.shape[1]) & (row >= 0) & (row < band.shape[0])
        near = (col > -1) & (col < band.shape[1] + 1) & (row > -1) & (row < band.shape[0] + 1)
        edge |= near & ((np.abs(col - np.round(col)) < 0.1) | (np.abs(row - np.round(row)) < 0.1))
        new = inside & ~filled
        out[new] = band[row[new].astype(int), col[new].astype(int)]
        filled |= inside
    return out, filled, edge


def test_partial_cover_scenes_are_pasted_at_the_right_pixels(corners):
    cat, arrays = corners
    got = TileRenderer(cat).render_bbox(
        Collection("s2", catalog=cat).process().bands("B04"), TMS.xy_bounds(TILE), 256, 256,
        crs="EPSG:3857", bbox_crs="EPSG:3857", analytic=True)
    want, filled, edge = _expected(arrays, ["A", "B", "C"])  # latest first
    valid = ~np.ma.getmaskarray(got.array)[0]
    sure = ~edge
    assert 0.05 < filled.mean() < 0.6 and (sure & filled).sum() > 0.4 * filled.sum()  # partial cover, both corners
    assert filled[:20, :20].all() and filled[-20:, -20:].all() and not filled[120:136].any()
    assert np.array_equal(valid[sure], filled[sure])
    assert np.array_equal(got.array.data[0][valid & sure], want[valid & sure])


def test_a_scene_under_earlier_ones_is_not_read(corners):
    cat, _ = corners
    chain = Collection("s2", catalog=cat).process().bands("B04").scale(0, 4000)
    renderer = TileRenderer(cat)
    img = renderer.tile(chain, TILE.z, TILE.x, TILE.y)
    # C lies inside A (newer, drawn first): the tile is not full, but C adds no pixel
    assert sorted(s.id for s in img.assets) == ["A", "B"]
    assert renderer.handles.stats()["opened"] == 2


def test_footprint_windows():
    grid = Grid(CRS.from_epsg(3857), tuple(TMS.xy_bounds(TILE)), 256, 256)
    w, s, e, n = TMS.bounds(TILE)
    dx, dy = (e - w) / 4, (n - s) / 4
    wins = footprint_windows(grid, [
        (w, s, e, n),  # the tile: all of it
        (w + dx, s + dy, w + 2 * dx, s + 2 * dy),  # a quarter-size box, lower left
        (e + dx, s, e + 2 * dx, n),  # east of the tile: empty
        (w - 10, s - 10, e + 10, n + 10),  # larger than the tile: clipped
    ])
    assert wins[0].tolist() == [0, 256, 0, 256] and wins[3].tolist() == [0, 256, 0, 256]
    r0, r1, c0, c1 = wins[1].tolist()
    assert abs(c0 - 63) <= 1 and abs(c1 - 129) <= 1 and abs(r0 - 127) <= 1 and abs(r1 - 193) <= 1
    assert wins[2][3] <= wins[2][2]
    sub = sub_grid(grid, (r0, r1, c0, c1))
    assert (sub.width, sub.height) == (c1 - c0, r1 - r0)
    assert sub.transform.a == pytest.approx(grid.transform.a)
    assert sub.bounds[0] == pytest.approx(grid.bounds[0] + c0 * grid.transform.a)
