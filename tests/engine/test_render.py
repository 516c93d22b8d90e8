"""Rendering compared with an INDEPENDENT computation: each band file reprojected with
rasterio.warp.reproject to the tile's Web-Mercator grid (nearest), then scaled by hand."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import matplotlib
import morecantile
import numpy as np
import pyproj
import pytest
import rasterio
from PIL import Image
from rasterio.features import geometry_mask
from rasterio.transform import from_origin
from rasterio.warp import transform_geom
from render_fixtures import expected_tile, make_catalog, make_item, pattern
from rio_tiler.io import Reader

from engine.chain import set_executor
from engine.collection import Collection
from engine.errors import ChainError, DataUnavailable, InvalidInput, UnknownCollection
from engine.render import TileRenderer

TMS = morecantile.tms.get("WebMercatorQuad")
SIZE = 384  # scene side in pixels (10 m)
MIN_EQUAL = 0.985  # nearest-neighbour rounding at pixel borders may pick the neighbour


def utm_origin(epsg: int, lon: float, lat: float) -> tuple[float, float]:
    x, y = pyproj.Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    return round(x, -1), round(y, -1)


def day(d: int) -> datetime:
    return datetime(2020, 5, d, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Scenes: A and B overlapping neighbours (EPSG:32632); D (32632) and E (33633) either
    side of 12°E; three dates of one footprint; a cloudy + a clear scene."""
    tmp = tmp_path_factory.mktemp("render")
    x0, y0 = utm_origin(32632, 11.5, 48.0)
    names = ["B02", "B03", "B04", "B08"]
    a = make_item(tmp / "A", "A", epsg=32632, transform=from_origin(x0, y0, 10, 10),
                  bands={n: pattern((SIZE, SIZE), i) for i, n in enumerate(names)}, date=day(1))
    bx = x0 + (SIZE - 60) * 10  # overlaps A by 60 columns
    b = make_item(tmp / "B", "B", epsg=32632, transform=from_origin(bx, y0, 10, 10),
                  bands={n: pattern((SIZE, SIZE), 10 + i) for i, n in enumerate(names)},
                  date=day(2))
    dx, dy = utm_origin(32632, 11.985, 48.0)
    d = make_item(tmp / "D", "D", epsg=32632, transform=from_origin(dx, dy, 10, 10),
                  bands={"B04": pattern((256, 256), 20)}, date=day(3))
    ex, ey = utm_origin(32633, 11.999, 48.0)
    e = make_item(tmp / "E", "E", epsg=32633, transform=from_origin(ex, ey, 10, 10),
                  bands={"B04": pattern((256, 256), 21)}, date=day(4))
    tx, ty = utm_origin(32632, 10.5, 47.0)
    stack = [make_item(tmp / f"T{k}", f"T{k}", epsg=32632, transform=from_origin(tx, ty, 10, 10),
                       bands={"B04": pattern((256, 256), 30 + k)}, date=day(k + 1))
             for k in range(3)]
    cx, cy = utm_origin(32632, 9.5, 46.0)
    scl = np.full((256, 256), 4, np.uint16)
    scl[50:120, 60:200] = 9  # cloud
    scl[150:170, :] = 3  # shadow
    scl[200:210, :] = 7  # unclassified: stays
    cloudy = make_item(tmp / "C1", "C1", epsg=32632, transform=from_origin(cx, cy, 10, 10),
                       bands={"B04": pattern((256, 256), 40), "SCL": scl}, date=day(9),
                       cloud_cover=30)
    clear = make_item(tmp / "C2", "C2", epsg=32632, transform=from_origin(cx, cy, 10, 10),
                      bands={"B04": pattern((256, 256), 41), "SCL": np.full((256, 256), 4,
                                                                            np.uint16)},
                      date=day(5), cloud_cover=1)
    cat = make_catalog(tmp / "catalog.sqlite", {"s2": [a, b], "xcrs": [d, e], "stack": stack,
                                                "cloudy": [cloudy, clear]})
    return {"cat": cat, "renderer": TileRenderer(cat), "items": {
        i.id: i for i in [a, b, d, e, *stack, cloudy, clear]}}


def href(world, item: str, band: str) -> str:
    return world["items"][item].assets[band].href


def tile_at(lon: float, lat: float, z: int) -> morecantile.Tile:
    return TMS.tile(lon, lat, z)


def scaled(a: np.ma.MaskedArray, lo: float, hi: float) -> np.ma.MaskedArray:
    return np.ma.MaskedArray(np.rint(np.clip((a.filled(0) - lo) / (hi - lo), 0, 1) * 255),
                             mask=np.ma.getmaskarray(a))


def assert_close(got: np.ma.MaskedArray, exp: np.ma.MaskedArray, *, tol: int = 0,
                 min_equal: float = MIN_EQUAL) -> None:
    gm, em = np.ma.getmaskarray(got), np.ma.getmaskarray(exp)
    assert (gm == em).mean() >= 0.995, f"masks differ on {(gm != em).mean():.2%}"
    both = ~gm & ~em
    assert both.any()
    diff = np.abs(got.data.astype(float)[both] - np.asarray(exp.data, float)[both])
    assert (diff <= tol).mean() >= min_equal, f"only {(diff <= tol).mean():.2%} equal"


def inner_tile(world, item: str, z: int = 14) -> morecantile.Tile:
    bb = world["items"][item].bbox
    return tile_at((bb[0] + bb[2]) / 2, (bb[1] + bb[3]) / 2, z)


# -- tiles ------------------------------------------------------------------------------------
def test_true_colour_tile(world):
    r = world["renderer"]
    t = inner_tile(world, "A")
    chain = Collection("s2", catalog=world["cat"]).process().bands("B04", "B03", "B02").scale(
        0, 3000)
    img = r.tile(chain, t.z, t.x, t.y)
    assert img.array.shape == (3, 256, 256) and img.array.dtype == np.uint8
    bounds = tuple(TMS.xy_bounds(t))
    for i, band in enumerate(["B04", "B03", "B02"]):
        exp = scaled(expected_tile(href(world, "A", band), bounds), 0, 3000)
        assert_close(img.array[i], exp)
    # common names resolve to the same assets
    alias = Collection("s2", catalog=world["cat"]).process().bands("red", "green", "blue").scale(
        0, 3000)
    np.testing.assert_array_equal(r.tile(alias, t.z, t.x, t.y).array, img.array)
    png = Image.open(io.BytesIO(r.encode(img, "png")))
    assert png.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(png), np.moveaxis(img.array.data, 0, -1))
    for fmt, magic in (("webp", b"RIFF"), ("jpg", b"\xff\xd8")):
        assert r.encode(img, fmt).startswith(magic)
    with pytest.raises(InvalidInput, match="unknown image format"):
        r.encode(img, "gif")


def test_zoomed_out_tile_uses_overviews_like_rio_tiler(world):
    r = world["renderer"]
    t = inner_tile(world, "A", z=11)
    chain = Collection("s2", catalog=world["cat"]).process(mosaic="first").bands("B04").scale(
        0, 3000)
    one = Collection("s2", catalog=world["cat"]).ids("A").process().bands("B04").scale(0, 3000)
    img = r.tile(one, t.z, t.x, t.y)
    with Reader(href(world, "A", "B04")) as src:
        ref = src.tile(t.x, t.y, t.z).array[0]
    # same overview level as GDAL's warper: ~91% identical pixels (sub-pixel sampling
    # differs on the 96 px overview); a wrong level agrees on only ~20%
    assert_close(img.array[0], scaled(ref, 0, 3000), min_equal=0.85)
    assert r.tile(chain, t.z, t.x, t.y) is not None


def test_ndvi_expression_tile(world):
    r = world["renderer"]
    t = inner_tile(world, "A")
    chain = Collection("s2", catalog=world["cat"]).ids("A").process().expression(
        "(B08-B04)/(B08+B04)").scale(-1, 1)
    img = r.tile(chain, t.z, t.x, t.y)
    bounds = tuple(TMS.xy_bounds(t))
    nir, red = (expected_tile(href(world, "A", b), bounds) for b in ("B08", "B04"))
    ndvi = (nir - red) / (nir + red)
    assert img.array.shape == (1, 256, 256)
    assert_close(img.array[0], scaled(ndvi, -1, 1), tol=1)


def test_colormap_and_color_custom(world):
    r = world["renderer"]
    t = inner_tile(world, "A")
    coll = Collection("s2", catalog=world["cat"]).ids("A")
    bounds = tuple(TMS.xy_bounds(t))
    nir, red = (expected_tile(href(world, "A", b), bounds) for b in ("B08", "B04"))
    idx = scaled((nir - red) / (nir + red), -1, 1)
    img = r.tile(coll.process().expression("(B08-B04)/(B08+B04)").scale(-1, 1).colormap(
        "RdYlGn"), t.z, t.x, t.y)
    lut = (np.asarray(matplotlib.colormaps["RdYlGn"](np.linspace(0, 1, 256))) * 255).round()
    assert img.band_names == ["red", "green", "blue", "alpha"]
    for c in range(3):
        exp = np.ma.MaskedArray(lut[idx.filled(0).astype(int), c], mask=idx.mask)
        assert_close(img.array[c], exp, tol=0)
    lime = r.tile(coll.process().expression("B04 > 2000").scale(0, 1).color_custom(["Lime"]),
                  t.z, t.x, t.y)
    hot = expected_tile(href(world, "A", "B04"), bounds).filled(0) > 2000
    rgba = lime.array.data
    agree = (rgba[3] == 255) == hot
    assert agree.mean() >= MIN_EQUAL
    assert (rgba[:3, rgba[3] == 255].T == [0, 255, 0]).all()
    png = Image.open(io.BytesIO(r.encode(lime, "png")))
    assert png.mode == "RGBA" and np.array_equal(np.asarray(png)[..., 3], rgba[3])


def test_mosaic_two_scenes_with_edge_and_order(world):
    r = world["renderer"]
    a_bb = world["items"]["A"].bbox
    b_bb = world["items"]["B"].bbox
    t = tile_at((a_bb[2] + b_bb[0]) / 2, (a_bb[1] + a_bb[3]) / 2, 15)  # in the overlap
    bounds = tuple(TMS.xy_bounds(t))
    ea, eb = (expected_tile(href(world, s, "B04"), bounds) for s in ("A", "B"))
    assert (~ea.mask).any() and (~eb.mask).any() and (ea.mask != eb.mask).any()
    coll = Collection("s2", catalog=world["cat"])
    for chain, first, second in [
        (coll.process(mosaic="latest"), eb, ea),
        (coll.sort("datetime", ascending=True).process(mosaic="first"), ea, eb),
    ]:
        img = r.tile(chain.bands("B04").scale(0, 3000), t.z, t.x, t.y)
        exp = np.ma.where(~first.mask, first, second)
        exp.mask = first.mask & second.mask
        assert_close(img.array[0], scaled(exp, 0, 3000))


def test_mosaic_across_utm_zones(world):
    r = world["renderer"]
    t = tile_at(12.0, world["items"]["D"].bbox[1] + 0.01, 15)
    bounds = tuple(TMS.xy_bounds(t))
    ed, ee = (expected_tile(href(world, s, "B04"), bounds) for s in ("D", "E"))
    assert (~ee.mask).any() and (ee.mask & ~ed.mask).any()  # E in front, D fills the rest
    chain = Collection("xcrs", catalog=world["cat"]).process(mosaic="latest").bands(
        "B04").scale(0, 3000)
    img = r.tile(chain, t.z, t.x, t.y)
    exp = np.ma.where(~ee.mask, ee, ed)  # E is newer
    exp.mask = ed.mask & ee.mask
    assert_close(img.array[0], scaled(exp, 0, 3000))
    png = Image.open(io.BytesIO(r.encode(img, "png")))
    if exp.mask.any():
        assert png.mode == "LA" and (np.asarray(png)[..., 1] == 0).sum() == img.array.mask.sum()


def test_time_stack_max_over_three_dates(world):
    r = world["renderer"]
    t = inner_tile(world, "T0")
    bounds = tuple(TMS.xy_bounds(t))
    layers = [expected_tile(href(world, f"T{k}", "B04"), bounds) for k in range(3)]
    exp = scaled(np.ma.max(np.ma.stack(layers), axis=0), 0, 3000)
    coll = Collection("stack", catalog=world["cat"])
    chain = coll.process_multi(["B04"], times=True).reduce("max").scale(0, 3000)
    assert_close(r.tile(chain, t.z, t.x, t.y).array[0], exp)
    # the same through an execute step and an executor (the sandbox's hook)
    src = "def tmax(stack):\n    return stack.max(axis=0)\n"
    ex = coll.process_multi(["B04"], times=True).execute("tmax", source=src).scale(0, 3000)
    seen = {}

    def executor(step, array, *, band_names, dates):
        seen["shape"], seen["dates"] = array.shape, dates
        return np.ma.max(array, axis=0)

    previous = set_executor(executor)
    try:
        img = r.tile(ex, t.z, t.x, t.y)
    finally:
        set_executor(previous)
    assert seen["shape"] == (3, 1, 256, 256) and [d.day for d in seen["dates"]] == [1, 2, 3]
    assert_close(img.array[0], exp)
    with pytest.raises(ChainError, match="time stack"):
        r.tile(coll.process_multi(["B04"], times=True).scale(0, 3000), t.z, t.x, t.y)


def test_cloud_mask_per_scene_before_mosaic(world):
    r = world["renderer"]
    t = inner_tile(world, "C1", z=15)
    bounds = tuple(TMS.xy_bounds(t))
    c1, c2 = (expected_tile(href(world, s, "B04"), bounds) for s in ("C1", "C2"))
    scl = expected_tile(href(world, "C1", "SCL"), bounds).filled(0)
    cloudy = np.isin(scl, [3, 8, 9, 10])
    assert cloudy.any() and (~cloudy).any()
    coll = Collection("cloudy", catalog=world["cat"])
    only = r.tile(coll.ids("C1").process().bands("B04").mask(cloud=True).scale(0, 3000),
                  t.z, t.x, t.y)
    exp = scaled(np.ma.MaskedArray(c1.data, mask=c1.mask | cloudy), 0, 3000)
    assert_close(only.array[0], exp)
    filled = r.tile(coll.process(mosaic="latest").bands("B04").mask(cloud=True).scale(0, 3000),
                    t.z, t.x, t.y)
    exp = np.ma.where(cloudy, c2, c1)
    assert_close(filled.array[0], scaled(exp, 0, 3000))
    least = r.tile(coll.process(mosaic="least_cloudy").bands("B04").scale(0, 3000),
                   t.z, t.x, t.y)
    assert_close(least.array[0], scaled(c2, 0, 3000))


def test_no_data_and_errors(world):
    r = world["renderer"]
    coll = Collection("s2", catalog=world["cat"])
    chain = coll.process().bands("B04").scale(0, 3000)
    assert r.tile(chain, 14, 0, 0) is None  # far from every scene
    with pytest.raises(InvalidInput, match="outside the grid"):
        r.tile(chain, 3, 8, 0)
    with pytest.raises(InvalidInput, match="zoom"):
        r.tile(chain, -1, 0, 0)
    t = inner_tile(world, "A")
    with pytest.raises(ChainError, match="scale"):
        r.tile(coll.process().bands("B04"), t.z, t.x, t.y)  # uint16 cannot be shown
    with pytest.raises(ChainError, match="2 bands"):
        r.tile(coll.process().bands("B04", "B03").scale(0, 1), t.z, t.x, t.y)
    bad = chain.model_copy(update={"source": chain.source.model_copy(
        update={"collection": "nope"})})
    with pytest.raises(UnknownCollection):
        r.tile(bad, t.z, t.x, t.y)


def test_vanished_file_is_data_unavailable(world, tmp_path):
    import shutil

    item = world["items"]["T0"].clone()
    for asset in item.assets.values():
        dst = tmp_path / asset.href.rsplit("/", 1)[1]
        shutil.copy(asset.href, dst)
        asset.href = str(dst)
    item.id = "gone"
    cat = make_catalog(tmp_path / "cat.sqlite", {"gone": [item]})
    r = TileRenderer(cat)
    chain = Collection("gone", catalog=cat).process().bands("B04").scale(0, 3000)
    t = inner_tile(world, "T0")
    assert r.tile(chain, t.z, t.x, t.y) is not None
    (tmp_path / item.assets["B04"].href.rsplit("/", 1)[1]).unlink()
    with pytest.raises(DataUnavailable, match="missing"):
        r.tile(chain, t.z, t.x, t.y)


# -- point, statistics, info ------------------------------------------------------------------
def test_point_values(world):
    r = world["renderer"]
    bb = world["items"]["A"].bbox
    lon, lat = bb[0] + 0.3 * (bb[2] - bb[0]), bb[1] + 0.6 * (bb[3] - bb[1])
    coll = Collection("s2", catalog=world["cat"]).ids("A")
    vals = {}
    for band in ("B04", "B08"):
        with rasterio.open(href(world, "A", band)) as ds:
            x, y = pyproj.Transformer.from_crs(4326, ds.crs, always_xy=True).transform(lon, lat)
            row, col = ds.index(x, y)
            vals[band] = float(ds.read(1)[row, col])
    out = r.point(coll.process().bands("B04", "B08").scale(0, 3000), lon, lat)
    assert out.bands == ["B04", "B08"] and out.values == [vals["B04"], vals["B08"]]
    nd = r.point(coll.process().expression("(B08-B04)/(B08+B04)"), lon, lat)
    assert nd.values[0] == pytest.approx(
        (vals["B08"] - vals["B04"]) / (vals["B08"] + vals["B04"]), rel=1e-6)
    tb = world["items"]["T0"].bbox
    ts = r.point(Collection("stack", catalog=world["cat"]).process_multi(["B04"], times=True),
                 (tb[0] + tb[2]) / 2, (tb[1] + tb[3]) / 2)
    assert len(ts.dates) == 3 and len(ts.values) == 3 and ts.bands == ["B04"]
    far = r.point(coll.process().bands("B04"), 0.0, 0.0)
    assert far.values == [None]


def test_statistics_match_numpy(world):
    r = world["renderer"]
    with rasterio.open(href(world, "A", "B04")) as ds:
        data, transform, crs = ds.read(1), ds.transform, ds.crs
    # a pixel-aligned rectangle of 100 x 60 pixels, sent as WGS84 GeoJSON
    c0, r0, c1, r1 = 40, 70, 140, 130
    x0, y0 = transform * (c0, r0)
    x1, y1 = transform * (c1, r1)
    rect = {"type": "Polygon", "coordinates": [[(x0, y0), (x1, y0), (x1, y1), (x0, y1),
                                                (x0, y0)]]}
    geom = transform_geom(crs, "EPSG:4326", rect, precision=-1)
    stats = r.statistics(Collection("s2", catalog=world["cat"]).ids("A").process().bands("B04"),
                         geom).root["B04"]
    back = transform_geom("EPSG:4326", crs, geom, precision=-1)
    inside = ~geometry_mask([back], out_shape=data.shape, transform=transform)
    vals = data[inside].astype(float)
    assert abs(stats.count - vals.size) <= 0.01 * vals.size
    assert stats.min == vals.min() and stats.max == vals.max()
    assert stats.mean == pytest.approx(vals.mean(), rel=2e-3)
    assert stats.std == pytest.approx(vals.std(), rel=1e-2)
    assert stats.percentiles["50"] == pytest.approx(np.percentile(vals, 50), rel=1e-2)
    assert sum(stats.histogram.counts) == stats.count
    with pytest.raises(InvalidInput):
        r.statistics(Collection("s2", catalog=world["cat"]).process().bands("B04"),
                     {"type": "Point", "coordinates": [0, 0]})


def test_info(world):
    r = world["renderer"]
    chain = Collection("s2", catalog=world["cat"]).process().expression(
        "(B08-B04)/(B08+B04)").scale(-1, 1).colormap("viridis")
    info = r.info(chain)
    a, b = world["items"]["A"].bbox, world["items"]["B"].bbox
    assert info.bounds == pytest.approx([min(a[0], b[0]), min(a[1], b[1]),
                                            max(a[2], b[2]), max(a[3], b[3])])
    assert info.band_names == ["red", "green", "blue", "alpha"]
    assert 0 <= info.minzoom <= info.maxzoom and info.maxzoom in (13, 14, 15)
    assert "colormap" in info.description
