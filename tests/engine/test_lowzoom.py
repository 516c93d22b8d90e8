"""Zoomed-out mosaics in one vectorised pass over the tiny levels (engine.render.lowzoom,
issue #15): the same pixels as reading the scenes one by one - two UTM zones, nodata holes
that show the scene below, overlapping scenes in mosaic order, raster:bands scale/offset,
float levels with NaN - and the cases it does not cover are read scene by scene."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import morecantile
import numpy as np
import pyproj
import pytest
from rasterio.transform import from_origin
from render_fixtures import make_catalog, make_item, pattern

from engine.collection import Collection
from engine.render import TileRenderer, pipeline
from engine.render.lowzoom import NOT_HANDLED, Atlas, paste_tiny, tiny_name
from engine.render.previews import PREVIEW_FIELD, add_previews, tiny_path

TMS = morecantile.tms.get("WebMercatorQuad")
SIZE = 240  # px at 20 m: 4.8 km scenes, 4 km apart (they overlap)


def _scenes(tmp, *, dtype="uint16", scale=None, n_side=6):
    """n_side x n_side scenes on each side of the 32633/32634 zone line (lon 18 E), every
    third with a nodata hole; ``scale``: raster:bands (scale, offset) on every band."""
    items = []
    for zone, lon in ((32633, 17.75), (32634, 18.25)):
        x0, y0 = pyproj.Transformer.from_crs(4326, zone, always_xy=True).transform(lon, 50.0)
        for k in range(n_side * n_side):
            r, c = divmod(k, n_side)
            seed = zone * 100 + k
            bands = {}
            for name in ("B03", "B04", "B08"):
                arr = pattern((SIZE, SIZE), seed + 7 * ord(name[-1])).astype(dtype)
                if k % 3 == 0:  # a hole: the scene below shows through
                    arr[60:180, 40:120] = np.nan if dtype == "float32" else 0
                bands[name] = arr
            transform = from_origin(round(x0, -3) + c * 4000, round(y0, -3) - r * 4000, 20, 20)
            item = make_item(tmp / f"{zone}_{k}", f"S{zone}_{k}", epsg=zone, transform=transform,
                             bands=bands, nodata=float("nan") if dtype == "float32" else 0,
                             date=datetime(2021, 6, 1, tzinfo=UTC) + timedelta(hours=seed % 97))
            if scale:
                for name in bands:
                    item.assets[name].extra_fields["raster:bands"][0].update(
                        {"scale": scale[0], "offset": scale[1]})
            items.append(item)
    # previews 60 px (tiny 30... -> 32-px cap keeps factor 2: 30 px): small and fast
    assert add_previews(items, tmp / "previews", size=60, remote_only=False)[0] == 3 * len(items)
    return items


@pytest.fixture(scope="module")
def uint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lowzoom")
    items = _scenes(tmp)
    cat = make_catalog(tmp / "cat.sqlite", {"s2": items})
    yield cat, items
    cat.close()


def _tiles(items, z):
    b = np.array([i.bbox for i in items])
    return list(TMS.tiles(b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max(), [z]))


def _both(cat, chain, z, monkeypatch):
    """Every tile over the scenes at zoom ``z``, with the atlas and scene by scene:
    [(tile, vectorised image, per-scene image)], and how many scenes the vectorised run
    read one by one."""
    fast, slow = TileRenderer(cat), TileRenderer(cat)
    slow.atlas = None
    one_by_one = []
    real = pipeline.read_scene
    monkeypatch.setattr(pipeline, "read_scene", lambda s, *a, **k: (
        one_by_one.append(s.id), real(s, *a, **k))[1])
    out = []
    for t in _tiles(cat_items(cat), z):
        a = fast.tile(chain, t.z, t.x, t.y)
        n = len(one_by_one)
        b = slow.tile(chain, t.z, t.x, t.y)
        del one_by_one[n:]  # the per-scene renderer's reads are not counted
        out.append((t, a, b))
    return out, one_by_one


def cat_items(cat):
    return list(cat.search(Collection("s2", catalog=cat).process().source.to_query()))


def _same(a, b):
    assert (a is None) == (b is None)
    if a is None:
        return
    assert a.array.dtype == b.array.dtype
    assert np.array_equal(np.ma.getmaskarray(a.array), np.ma.getmaskarray(b.array))
    assert np.array_equal(a.array.filled(0), b.array.filled(0))


@pytest.mark.parametrize("z", [8, 9])
def test_vectorised_mosaic_equals_the_scene_by_scene_read(uint, monkeypatch, z):
    cat, _ = uint
    chain = Collection("s2", catalog=cat).process().bands("B04", "B08", "B03").scale(0, 4000)
    tiles, one_by_one = _both(cat, chain, z, monkeypatch)
    shown = [a for _, a, _ in tiles if a is not None]
    assert shown and sum(int((~np.ma.getmaskarray(a.array)).sum()) for a in shown) > 500
    for _, a, b in tiles:
        _same(a, b)
    assert one_by_one == []  # every tile in one pass


def test_raw_values_overlaps_and_holes(uint, monkeypatch):
    """Values before any step: the latest scene's value where scenes overlap, the scene
    below inside a hole (checked against the tiny levels read directly)."""
    cat, items = uint
    chain = Collection("s2", catalog=cat).process().bands("B04", "B08")
    fast, slow = TileRenderer(cat), TileRenderer(cat)
    slow.atlas = None
    t = _tiles(items, 9)[0]
    from engine.render.grid import Grid
    grid = Grid.tile(t.z, t.x, t.y)
    scenes = fast.select(chain, TMS.bounds(t))
    a, b = fast.read(chain, scenes, grid), slow.read(chain, scenes, grid)
    _same(a, b)
    assert a.array.dtype == np.uint16 and len(a.assets) >= 2
    # each value is the first scene's (mosaic order) that has one there
    from engine.render.previewcache import load
    coords = pipeline.SourceCoords(grid)
    data, mask = a.array.data, np.ma.getmaskarray(a.array)
    checked = 0
    for r, c in zip(*np.nonzero(~mask[0]), strict=True):
        if (r * 7 + c) % 37:
            continue
        for s in scenes:
            lvl = load(tiny_name(s.previews[0]))
            x, y = coords.get(lvl.crs)
            col, row = ~lvl.transform * (x[r, c], y[r, c])
            if 0 <= col < lvl.width and 0 <= row < lvl.height and \
                    lvl.array[int(row), int(col)] != 0:
                assert data[0, r, c] == lvl.array[int(row), int(col)]
                checked += 1
                break
    assert checked > 20


def test_scale_and_offset_and_float_levels(tmp_path, monkeypatch):
    items = _scenes(tmp_path, dtype="float32", scale=(0.0001, -0.1), n_side=3)
    cat = make_catalog(tmp_path / "cat.sqlite", {"s2": items})
    chain = Collection("s2", catalog=cat).process().bands("B04", "B08", "B03").scale(0, 3000)
    tiles, one_by_one = _both(cat, chain, 9, monkeypatch)
    assert any(a is not None for _, a, _ in tiles)
    for _, a, b in tiles:
        _same(a, b)
    assert one_by_one == []
    t = tiles[0][0]
    from engine.render.grid import Grid
    grid = Grid.tile(t.z, t.x, t.y)
    r = TileRenderer(cat)
    raw = r.read(chain, r.select(chain, TMS.bounds(t)), grid)
    # the engine's reflectance unit is 1e-4: offset -0.1 -> -1000 on values of 100..4000
    assert raw.array.dtype == np.float32
    assert float(raw.array.min()) < 0 and float(raw.array.max()) <= 3000
    cat.close()


def test_what_it_does_not_cover_is_read_scene_by_scene(uint, monkeypatch):
    cat, items = uint
    chain = Collection("s2", catalog=cat).process().bands("B04").scale(0, 4000)
    # zoomed in: tiny levels are not coarse enough -> previews/band files, one by one
    t = TMS.tile(*np.array(items[0].bbox).reshape(2, 2).mean(0), 14)
    from engine.render.grid import Grid
    r = TileRenderer(cat)
    scenes = r.scenes(chain).scenes
    grid = Grid.tile(t.z, t.x, t.y)
    assert paste_tiny(scenes, ["B04"], grid, pipeline.SourceCoords(grid), r.atlas) is NOT_HANDLED
    # a scene without a tiny level (ingested before they existed): the group is not taken
    z9 = _tiles(items, 9)[0]
    grid = Grid.tile(z9.z, z9.x, z9.y)
    group = r.select(chain, TMS.bounds(z9))
    missing = tiny_path(items[0].assets["B04"].extra_fields[PREVIEW_FIELD])
    hidden = missing.with_suffix(".hidden")
    missing.rename(hidden)
    try:
        atlas = Atlas()
        if any(s.id == items[0].id for s in group):
            assert paste_tiny(group, ["B04"], grid, pipeline.SourceCoords(grid),
                              atlas) is NOT_HANDLED
    finally:
        hidden.rename(missing)
    # few scenes: not worth it
    assert paste_tiny(group[:3], ["B04"], grid, pipeline.SourceCoords(grid),
                      Atlas()) is NOT_HANDLED


def test_invalidate_forgets_the_atlas(uint):
    cat, items = uint
    chain = Collection("s2", catalog=cat).process().bands("B04").scale(0, 4000)
    r = TileRenderer(cat)
    t = _tiles(items, 8)[0]
    r.tile(chain, t.z, t.x, t.y)
    assert r.atlas.nbytes > 0
    r.invalidate()
    assert r.atlas.nbytes == 0


def test_tiny_name_is_tiny_path():
    for p in ("/a/b/c.tif", "/a.b/c.tif", "/a/b/c", "rel/x.y.tif"):
        assert tiny_name(p) == str(tiny_path(p))


def test_a_source_is_queried_once_when_its_first_tiles_arrive_together(uint, monkeypatch):
    """A viewport's first tiles arrive together: one catalog query, shared (it was one per
    thread: 4 threads built 2,000 scene records each)."""
    import threading
    import time

    from engine.render import renderer as renderer_mod

    cat, _ = uint
    chain = Collection("s2", catalog=cat).process().bands("B04").scale(0, 4000)
    r = TileRenderer(cat)
    built = []
    real = renderer_mod.build_scenes

    def slow_build(*a, **k):
        built.append(1)
        time.sleep(0.2)  # a long query: the other threads arrive meanwhile
        return real(*a, **k)

    monkeypatch.setattr(renderer_mod, "build_scenes", slow_build)
    start = threading.Barrier(6)
    got = []

    def ask():
        start.wait()
        got.append(r.scenes(chain))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and len(got) == 6 and all(g is got[0] for g in got)


def test_a_full_atlas_starts_over_and_threads_keep_their_pixels(uint, monkeypatch):
    """An atlas with room for about one tile's levels: tiles rendered by 6 threads at once
    keep resetting it, and every tile still equals the scene-by-scene read (a lookup's
    rows are valid in the snapshot handed out with them)."""
    from concurrent.futures import ThreadPoolExecutor

    cat, items = uint
    chain = Collection("s2", catalog=cat).process().bands("B04", "B08", "B03").scale(0, 4000)
    slow = TileRenderer(cat)
    slow.atlas = None
    tiles = _tiles(items, 9) + _tiles(items, 8)
    want = {(t.z, t.x, t.y): slow.tile(chain, t.z, t.x, t.y) for t in tiles}
    level = 30 * 30 * 2  # bytes of one 30 px uint16 tiny level
    fast = TileRenderer(cat)
    fast.atlas = Atlas(max_bytes=level * 3 * 40)  # 40 scenes' 3 bands: less than 2 tiles
    resets = []
    real = Atlas._reset

    def counted(self):
        resets.append(1)
        real(self)

    monkeypatch.setattr(Atlas, "_reset", counted)
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda t: ((t.z, t.x, t.y), fast.tile(chain, t.z, t.x, t.y)),
                            tiles * 3))
    for key, img in got:
        _same(img, want[key])
    assert len(resets) > 1  # it did start over (the first _reset is the constructor's)


def test_a_group_bigger_than_the_atlas_is_read_scene_by_scene(uint, monkeypatch):
    cat, items = uint
    chain = Collection("s2", catalog=cat).process().bands("B04", "B08", "B03").scale(0, 4000)
    r = TileRenderer(cat)
    r.atlas = Atlas(max_bytes=30 * 30 * 2 * 5)  # 5 levels
    slow = TileRenderer(cat)
    slow.atlas = None
    t = _tiles(items, 9)[0]
    _same(r.tile(chain, t.z, t.x, t.y), slow.tile(chain, t.z, t.x, t.y))
    assert r.atlas.nbytes == 0


def test_tiles_in_one_pass_show_every_scene_and_say_nothing(uint):
    """The per-tile cap (here 10 scenes) is for scene-by-scene reads: a tile mosaicked in
    one pass shows all its scenes, without a notice, and the dashboard's view check agrees
    (no pixel read); a median mosaic (read scene by scene) is still capped, and says so."""
    from engine.render.cap import view_cap

    cat, items = uint
    chain = Collection("s2", catalog=cat).process().bands("B04", "B08", "B03").scale(0, 4000)
    capped = TileRenderer(cat, max_preview_items=10)
    full = TileRenderer(cat, max_preview_items=1000)
    full.atlas = None  # every scene, one by one: the reference
    tiles = [(t.z, t.x, t.y) for t in _tiles(items, 8)]
    over = [t for t in tiles if len(capped.scenes(chain).intersecting(TMS.bounds(*t[1:], t[0])
                                                                       )) > 10]
    assert over  # the cap would cut these
    for z, x, y in over:
        img = capped.tile(chain, z, x, y)
        assert "scenes" not in (img.metadata or {})
        _same(img, full.tile(chain, z, x, y))
    assert view_cap(capped, chain, tiles) is None
    median = Collection("s2", catalog=cat).process(mosaic="median").bands(
        "B04", "B08", "B03").scale(0, 4000)
    z, x, y = over[0]
    img = capped.tile(median, z, x, y)
    assert img.metadata["scenes"]["shown"] == 10
    cap = view_cap(capped, median, tiles)
    assert cap is not None and cap.shown == 10
