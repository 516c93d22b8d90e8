"""Large raster layers: screen-resolution reads from the matching overview, colours, hover
values, path checks, and the Bokeh glyph on a map (no browser)."""

from __future__ import annotations

import dataclasses
import os

import matplotlib
import numpy as np
import pytest
import rasterio
import rasterio.warp
import xarray as xr
from bokeh.models import HoverTool
from rasterio.crs import CRS
from rasterio.transform import from_bounds, from_origin

from components.map import MapView
from components.rasterlayer import RasterLayers
from components.rasterrender import RasterSource, check_raster_path, render
from components.state import AppState
from components.tilemath import to_lonlat
from engine.errors import InvalidInput, NotFound

N = 1024
RES = 40.0
LEFT, TOP = 1_000_000.0, 6_000_000.0
EXTENT = (LEFT, TOP - N * RES, LEFT + N * RES, TOP)  # Mercator


def write_ramp(path, n=N, *, crs="EPSG:3857", transform=None, nodata_block=True):
    """A float32 COG whose value is row * n + col (each pixel unique), with overviews."""
    rows, cols = np.mgrid[0:n, 0:n]
    data = (rows * n + cols).astype(np.float32)
    if nodata_block:
        data[:64, :64] = np.nan
    with rasterio.open(path, "w", driver="COG", width=n, height=n, count=1, dtype="float32",
                       crs=crs, transform=transform or from_origin(LEFT, TOP, RES, RES),
                       nodata=np.nan, compress="DEFLATE", blocksize=256, overviews="AUTO",
                       overview_resampling="nearest") as dst:
        dst.write(data, 1)
    return path


def lonlat(extent):
    (w, e), (s, n) = to_lonlat(np.array([extent[0], extent[2]]),
                               np.array([extent[1], extent[3]]))
    return float(w), float(s), float(e), float(n)


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "rasters"


@pytest.fixture
def ramp(folder):
    folder.mkdir()
    return write_ramp(folder / "ramp.tif")


@pytest.fixture
def rstate(backend, folder):
    return AppState(backend=dataclasses.replace(backend, raster_dirs=(folder,)))


def test_layer_values_are_the_matching_overview_at_screen_size(rstate, ramp):
    rstate.param.update(viewport=lonlat(EXTENT), map_size=(256, 256))
    layers = RasterLayers(state=rstate)
    layer = layers.add("ramp.tif")  # relative: looked up in the raster folders
    assert layer is not None and layer.renders == 1
    with rasterio.open(ramp) as ds:
        assert ds.overviews(1) == [2, 4]
    with rasterio.open(ramp, overview_level=1) as ov:  # factor 4: 256 x 256
        expected = ov.read(1)
    got = layer.last.values[0]
    assert got.shape == (256, 256) and layer.last.read_shape == (256, 256)
    np.testing.assert_array_equal(got, expected)  # NaN block included
    assert layer.last.overview_factor == 4

    # a ratio of 3.41: GDAL takes the factor-4 overview (within its 1.2 oversampling
    # threshold) and resamples it to 300 px, nearest
    rstate.map_size = (300, 300)
    assert layer.renders == 2
    with rasterio.open(ramp, overview_level=1) as ov:
        coarse = ov.read(1)
    idx = np.floor((np.arange(300) + 0.5) * 256 / 300).astype(int)
    expected = coarse[idx][:, idx]
    got = layer.last.values[0]
    assert layer.last.read_shape == (300, 300)  # cost follows the screen, not the raster
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    assert same.mean() > 0.995, same.mean()


def test_zooming_in_rereads_finer_pixels(rstate, ramp):
    rstate.param.update(viewport=lonlat(EXTENT), map_size=(256, 256))
    layers = RasterLayers(state=rstate)
    layer = layers.add(str(ramp))
    coarse = layer.last.values[0]
    x_step = np.nanmedian(np.diff(coarse, axis=1))
    assert x_step == 4  # one screen pixel = 4 source pixels
    # the south-east quarter at the same screen size
    quarter = (EXTENT[0] + N * RES / 2, EXTENT[1], EXTENT[2], EXTENT[1] + N * RES / 2)
    rstate.viewport = lonlat(quarter)
    assert layer.renders == 2
    fine = layer.last.values[0]
    assert np.nanmedian(np.diff(fine, axis=1)) == 2  # twice the detail
    assert np.nanmedian(np.diff(fine, axis=0)) == 2 * N
    assert fine[0, 0] == (N // 2) * N + N // 2  # top-left pixel of the quarter
    # a view off the raster draws nothing and reads nothing
    rstate.viewport = lonlat((0.0, 0.0, 10_000.0, 10_000.0))
    assert layer.last is None and layers.layers["ramp.tif"].cds.data["image"] == []


def test_colours_follow_the_colormap_and_nodata_is_transparent(rstate, ramp):
    rstate.param.update(viewport=lonlat(EXTENT), map_size=(256, 256))
    layers = RasterLayers(state=rstate)
    layer = layers.add("ramp.tif", colormap="magma", vmin=0, vmax=N * N)
    rgba = layer.last.image[::-1].view(np.uint8).reshape(256, 256, 4)  # top row first
    values = layer.last.values[0]
    assert (rgba[:16, :16, 3] == 0).all()  # the NaN block
    cmap = matplotlib.colormaps["magma"]
    for r, c in [(20, 200), (128, 128), (255, 255), (100, 3)]:
        want = np.round(np.array(cmap(int(values[r, c] / (N * N) * 255))) * 255)
        assert np.abs(rgba[r, c].astype(int) - want.astype(int)).max() <= 1, (r, c)
    layers.restyle("ramp.tif", vmin=0, vmax=1)  # everything above the range: top colour
    rgba = layer.last.image[::-1].view(np.uint8).reshape(256, 256, 4)
    top = np.round(np.array(cmap(1.0)) * 255).astype(int)
    assert (np.abs(rgba[200, 200].astype(int) - top) <= 1).all()


def test_other_crs_is_warped_onto_the_screen_grid(rstate, folder):
    folder.mkdir()
    utm = write_ramp(folder / "utm.tif", 256, crs="EPSG:32633",
                     transform=from_origin(385_000, 5_825_000, 20, 20), nodata_block=False)
    src = RasterSource.open(utm)
    assert src.crs == CRS.from_epsg(32633)
    view, size = src.mercator_bounds(), (700, 700)  # more screen than data: full res
    out = render(src, view, size, band=1, colormap="viridis", vmin=0, vmax=65536)
    assert out.overview_factor == 1
    x0, y0, x1, y1 = out.bounds
    h, w = out.values.shape[1:]
    expected = np.full((h, w), np.nan, np.float32)
    with rasterio.open(utm) as ds:
        rasterio.warp.reproject(ds.read(1), expected, src_transform=ds.transform,
                                src_crs=ds.crs, dst_transform=from_bounds(x0, y0, x1, y1, w, h),
                                dst_crs="EPSG:3857", resampling=rasterio.warp.Resampling.nearest,
                                src_nodata=np.nan, dst_nodata=np.nan)
    same = (out.values[0] == expected) | (np.isnan(out.values[0]) & np.isnan(expected))
    assert same.mean() > 0.999
    assert np.isfinite(out.values[0]).mean() > 0.5


def test_paths_outside_the_raster_folders_are_refused(rstate, ramp, folder, tmp_path):
    layers = RasterLayers(state=rstate)
    outside = write_ramp(tmp_path / "outside.tif", 64, nodata_block=False)
    (folder / "notes.txt").write_text("not a raster")
    (folder / "sub").mkdir()
    os.symlink(outside, folder / "link.tif")
    cases = {
        "": "type the path",
        "../outside.tif": "'..' is not allowed",
        f"{folder}/../outside.tif": "'..' is not allowed",
        str(outside): "outside the folders",
        "/etc/passwd": "outside the folders",
        "link.tif": "outside the folders",  # a symlink out of the folder
        "missing.tif": "no raster missing.tif in the allowed folders",
        "notes.txt": "not a raster GDAL can read",
        "sub": "is a folder",
    }
    for text, why in cases.items():
        assert layers.add(text) is None, text
        assert rstate.notice.level == "error" and why in rstate.notice.text, (text,
                                                                              rstate.notice)
        assert why in layers._message.object and layers._message.visible
    assert layers.layers == {}
    with pytest.raises(NotFound):
        check_raster_path("missing.tif", allowed=[folder])
    with pytest.raises(InvalidInput):
        check_raster_path("ramp.tif", allowed=[])
    assert check_raster_path(str(ramp), allowed=[folder]) == ramp.resolve()


def test_layer_on_the_map_has_glyph_hover_and_layer_list_entry(rstate, ramp):
    rstate.param.update(viewport=lonlat(EXTENT), map_size=(256, 256))
    view = MapView(state=rstate)
    layers = RasterLayers(state=rstate, map=view)
    layer = layers.add("ramp.tif", zoom=False)
    fig = view.figure
    rend = fig.select_one({"name": "eox-raster-ramp.tif"})
    assert rend is layer.renderer and rend.level == "image"
    assert [s.name for s in view.layers][-1] == "ramp.tif"
    data = layer.cds.data
    np.testing.assert_array_equal(data["v0"][0], layer.last.values[0][::-1])  # hover values
    assert data["image"][0].shape == (256, 256) and data["dw"][0] == pytest.approx(N * RES)
    hover = [t for t in fig.tools if isinstance(t, HoverTool) and rend in t.renderers]
    assert hover and "@v0" in hover[0].tooltips[0][1]
    # the layer list hides it (no redraw while hidden) and sets its opacity
    view.layers = [dataclasses.replace(s, visible=False, opacity=0.4) if s.name == "ramp.tif"
                   else s for s in view.layers]
    assert rend.visible is False and rend.glyph.global_alpha == 0.4
    renders = layer.renders
    rstate.map_size = (200, 200)
    assert layer.renders == renders
    layers.remove("ramp.tif")
    assert fig.select_one({"name": "eox-raster-ramp.tif"}) is None
    assert "ramp.tif" not in [s.name for s in view.layers] and not layers.layers
    assert hover[0] not in fig.tools


def test_zarr_store_is_read_by_decimation(rstate, folder):
    folder.mkdir()
    n = 512
    rows, cols = np.mgrid[0:n, 0:n]
    data = (rows * n + cols).astype(np.float32)[None]
    t = from_origin(LEFT, TOP, RES, RES)
    ds = xr.Dataset({"result": (("band", "y", "x"), data)},
                    coords={"band": ["ndvi"], "spatial_ref": xr.DataArray(0, attrs={
                        "crs_wkt": CRS.from_epsg(3857).to_wkt()})})
    ds["result"].attrs = {"transform": list(t)[:6], "grid_mapping": "spatial_ref",
                          "kind": "analytic"}
    ds.to_zarr(folder / "r.zarr", mode="w")
    extent = (LEFT, TOP - n * RES, LEFT + n * RES, TOP)
    rstate.param.update(viewport=lonlat(extent), map_size=(128, 128))
    layer = RasterLayers(state=rstate).add("r.zarr")
    assert layer is not None and layer.source.kind == "zarr"
    np.testing.assert_array_equal(layer.last.values[0], data[0, ::4, ::4])
    assert layer.last.read_shape == (128, 128)


def test_style_widgets_follow_the_chosen_layer_without_restyling_it(rstate, ramp):
    """Choosing another layer fills the style widgets one by one from it: neither layer is
    restyled (redrawn) by that; a widget the user changes restyles the chosen one."""
    rstate.param.update(viewport=lonlat(EXTENT), map_size=(256, 256))
    layers = RasterLayers(state=rstate)
    a = layers.add("ramp.tif", name="a", colormap="magma", vmin=0, vmax=100)
    b = layers.add("ramp.tif", name="b", colormap="gray", vmin=5, vmax=50)
    renders = (a.renders, b.renders)
    layers._which.value = "a"
    assert (a.colormap, a.vmin, a.vmax) == ("magma", 0, 100)
    assert (b.colormap, b.vmin, b.vmax) == ("gray", 5, 50)
    assert (a.renders, b.renders) == renders
    assert (layers._colormap.value, layers._vmax.value) == ("magma", 100)
    layers._vmax.value = 200
    assert a.vmax == 200 and a.renders == renders[0] + 1 and a.colormap == "magma"
