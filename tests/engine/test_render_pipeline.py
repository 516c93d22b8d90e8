"""The public render pipeline: Grid, select scenes -> read(chain, scenes, grid) -> to_image,
and the one dataset-handle pool; each compared with what a tile (or numpy) gives."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import morecantile
import numpy as np
import pyproj
import pytest
import rasterio
from rasterio.transform import from_origin
from render_fixtures import make_catalog, make_item, pattern

from engine import render
from engine.collection import Collection
from engine.errors import InvalidInput
from engine.render import Grid, TileRenderer, read, to_image
from engine.render.grid import WGS84
from engine.timeseries import profile
from engine.timeseries.profiles import handle_pool

ROOT = Path(__file__).resolve().parents[2]
TMS = morecantile.tms.get("WebMercatorQuad")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    x0, y0 = pyproj.Transformer.from_crs(4326, 32632, always_xy=True).transform(11.5, 48.0)
    x0, y0 = round(x0, -1), round(y0, -1)
    items = [make_item(tmp / f"S{k}", f"S{k}", epsg=32632,
                       transform=from_origin(x0 + k * 1500, y0, 10, 10),
                       bands={n: pattern((256, 256), 10 * k + i)
                              for i, n in enumerate(["B04", "B03", "B02", "B08"])},
                       date=datetime(2020, 5, k + 1, 10, tzinfo=UTC))
             for k in range(2)]
    cat = make_catalog(tmp / "catalog.sqlite", {"s2": items})
    return {"cat": cat, "items": items}


def _chain(world):
    return Collection("s2", catalog=world["cat"]).process().bands("B04", "B03", "B02").scale(
        0, 3000)


def test_grid_of_a_tile_is_the_tile_matrix_bounds():
    g = Grid.tile(10, 544, 355)
    assert g.bounds == pytest.approx(tuple(TMS.xy_bounds(morecantile.Tile(544, 355, 10))))
    assert g.shape == (256, 256) and g.crs == TMS.rasterio_crs
    assert g.transform.a == pytest.approx((g.bounds[2] - g.bounds[0]) / 256)
    with pytest.raises(InvalidInput, match="outside the grid: x and y must be in 0..1023"):
        Grid.tile(10, 1024, 0)
    with pytest.raises(InvalidInput, match="tilesize 8 is outside 16..1024"):
        Grid.tile(1, 0, 0, tilesize=8)


def test_grid_snapped_windows_and_coords():
    g = Grid.snapped((11.0, 47.0, 11.1, 47.05), bbox_crs=WGS84,
                     crs=rasterio.crs.CRS.from_epsg(32632), resolution=20)
    left, _, right, top = g.bounds
    assert left % 20 == 0 and top % 20 == 0 and g.resolution == pytest.approx(20)
    assert (right - left) / g.width == pytest.approx(20)
    block = g.window(10, 30, 5, 25)  # rows 10..30, cols 5..25
    assert block.shape == (20, 20)
    assert block.bounds == pytest.approx((left + 100, top - 600, left + 500, top - 200))
    y, x = g.coords()
    assert x[0] == pytest.approx(left + 10) and y[0] == pytest.approx(top - 10)
    w, s, e, n = g.wgs84()
    assert w <= 11.0 and s <= 47.0 and e >= 11.1 and n >= 47.05
    with pytest.raises(InvalidInput, match="resolution must be a positive number"):
        Grid.snapped((0, 0, 1, 1), bbox_crs=WGS84, crs=WGS84, resolution=0)


def test_grid_covering_snaps_an_extent_to_whole_screen_pixels():
    screen = Grid(rasterio.crs.CRS.from_epsg(3857), (0.0, 0.0, 1000.0, 500.0), 100, 50)
    part = screen.covering((105.0, 95.0, 333.0, 1e6))  # reaches above the screen
    assert part.bounds == pytest.approx((100.0, 90.0, 340.0, 500.0))
    assert (part.width, part.height) == (24, 41) and part.crs == screen.crs
    assert screen.covering((2000.0, 0.0, 3000.0, 10.0)) is None


def test_read_then_to_image_equals_the_tile(world):
    r = TileRenderer(world["cat"])
    chain = _chain(world)
    bb = world["items"][0].bbox
    t = TMS.tile((bb[0] + bb[2]) / 2, (bb[1] + bb[3]) / 2, 13)
    grid = Grid.tile(t.z, t.x, t.y)
    scenes = r.select(chain, TMS.bounds(t))
    assert {s.id for s in scenes} <= {"S0", "S1"} and scenes
    raster = read(chain, scenes, grid, handles=r.handles)
    assert raster.array.shape == (3, 256, 256) and list(raster.band_names) == [
        "B04", "B03", "B02"]
    img = to_image(chain, raster, grid)
    tile = r.tile(chain, t.z, t.x, t.y)
    assert np.array_equal(img.array.data, tile.array.data)
    assert np.array_equal(np.ma.getmaskarray(img.array), np.ma.getmaskarray(tile.array))
    assert img.bounds == pytest.approx(tile.bounds)


def test_read_values_match_the_band_file(world):
    """A read on the scene's own grid gives the stored values, pixel for pixel."""
    r = TileRenderer(world["cat"])
    chain = Collection("s2", catalog=world["cat"]).ids("S0").process().bands("B04")
    with rasterio.open(world["items"][0].assets["B04"].href) as ds:
        stored, bounds, crs = ds.read(1), ds.bounds, ds.crs
    grid = Grid(crs, tuple(bounds), 256, 256)
    raster = r.read(chain, r.select(chain, grid.wgs84()), grid)
    assert np.array_equal(raster.array.data[0], stored)


def test_typed_results(world):
    r = TileRenderer(world["cat"])
    chain = Collection("s2", catalog=world["cat"]).ids("S0").process().bands("B04", "B08")
    bb = world["items"][0].bbox
    lon, lat = (bb[0] + bb[2]) / 2, (bb[1] + bb[3]) / 2
    pv = r.point(chain, lon, lat)
    assert isinstance(pv, render.PointValues) and pv.bands == ["B04", "B08"]
    assert pv.items == ["S0"] and pv.dates is None and all(isinstance(v, float) for v in pv.values)
    box = {"type": "Polygon", "coordinates": [[(lon - 0.001, lat - 0.001),
                                               (lon + 0.001, lat - 0.001),
                                               (lon + 0.001, lat + 0.001),
                                               (lon - 0.001, lat + 0.001),
                                               (lon - 0.001, lat - 0.001)]]}
    stats = r.statistics(chain, box, bins=4, percentiles=(50,))
    assert isinstance(stats, render.Statistics)
    b04 = stats.root["B04"]
    assert b04.count > 0 and len(b04.histogram.counts) == 4 and set(b04.percentiles) == {"50"}
    assert stats.as_dict()["B04"]["count"] == b04.count
    info = r.info(chain)
    assert isinstance(info, render.ChainInfo) and info.band_names == ["B04", "B08"]
    assert info.scenes == 1 and info.bounds == pytest.approx(list(bb))


def test_profiles_borrow_from_one_handle_pool(world):
    coll = Collection("s2", catalog=world["cat"])
    bb = world["items"][0].bbox
    lon, lat = (bb[0] + bb[2]) / 2, (bb[1] + bb[3]) / 2
    pool = handle_pool()
    assert isinstance(pool, render.HandleCache)
    d = 0.002
    box = {"type": "Polygon", "coordinates": [[(lon - d, lat - d), (lon + d, lat - d),
                                               (lon + d, lat + d), (lon - d, lat + d),
                                               (lon - d, lat - d)]]}
    profile(coll, geometry=box, expression="B08-B04", mask_clouds=False)
    before = pool.stats()
    again = profile(coll, geometry=box, expression="B08-B04", mask_clouds=False)
    after = pool.stats()
    assert len(again) >= 1
    assert after["opened"] == before["opened"] and after["reused"] > before["reused"]


def _own_private_names(tree: ast.Module) -> set[str]:
    """Private names a module defines: its functions, classes, and attributes it assigns."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            own.add(node.target.id)
    return {n for n in own if n.startswith("_")}


def test_no_private_calls_across_engine_and_service_modules():
    """``obj._name`` only for names the module itself defines (its own classes'
    attributes): a seam another module needs is public (issue #16: batch called the
    renderer's ``_limit``/``_window_reader``/``_assemble``/``_image``)."""
    offenders = []
    for folder in ("engine", "service"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            own = _own_private_names(tree)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                        and not node.attr.startswith("__") and node.attr not in own
                        and not (isinstance(node.value, ast.Name)
                                 and node.value.id in ("self", "cls"))):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    # pystac-client keeps the StacApiIO of a client private (no public accessor)
    allowed = {"._stac_io", "._exit"}  # and os._exit
    assert [o for o in offenders if o.split(" ")[1] not in allowed] == []


def test_tile_producer_and_protocols_import_without_fastapi():
    code = ("import sys, service.tiles, service.protocols\n"
            "assert 'fastapi' not in sys.modules, 'fastapi imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_class_names_are_unique_in_engine_and_service():
    names: dict[str, list[str]] = {}
    for folder in ("engine", "service"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.ClassDef):
                    names.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    assert {n: p for n, p in names.items() if len(p) > 1} == {}


def test_engine_and_service_files_stay_small():
    big = {str(p.relative_to(ROOT)): n for folder in ("engine", "service")
           for p in (ROOT / folder).rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > 460}
    assert big == {}
