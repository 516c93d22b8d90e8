"""Extract PNG offers a world file (issue #14 item 9): the .pgw beside the PNG and in a zip
gives the extract's own transform, read back by rasterio (GDAL reads world files) and affine;
the .prj holds the extract's CRS. A GeoTIFF needs none and offers none."""

from __future__ import annotations

import zipfile

import affine
import pytest
import rasterio
from rasterio.crs import CRS
from test_extract_panel import _draw_box

from components.draw import DrawPanel
from components.extract import ExtractPanel


def _gis() -> rasterio.Env:
    """GDAL as a GIS program opens a file: looking at the files beside it (the service turns
    that off for remote COGs, a process-wide setting)."""
    return rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="NO")


@pytest.fixture
def panel(state):
    state.open_latest()
    draw, panel = DrawPanel(state=state), ExtractPanel(state=state)
    _draw_box(draw)
    return panel


def test_png_extract_comes_with_a_world_file(panel, tmp_path):
    panel.fmt, panel.what = "PNG", "What the map shows"
    result = panel.extract()
    assert result is not None and result.fmt == "png"
    expected = affine.Affine(*result.transform)
    pgw = result.path.with_suffix(".pgw")
    assert affine.loadsw(pgw.read_text()) == expected
    with _gis(), rasterio.open(result.path) as src:  # GDAL reads the .pgw beside the PNG
        assert src.transform.almost_equals(expected)
        assert (src.width, src.height) == (result.width, result.height)
    assert CRS.from_wkt(result.path.with_suffix(".prj").read_text()) == CRS.from_user_input(
        result.crs)
    # the second download: the PNG with its world file and .prj in one zip
    assert panel._world.visible and panel._world.filename.endswith(".zip")
    with zipfile.ZipFile(panel._world.file) as z:
        names = sorted(z.namelist())
        assert names == sorted(result.path.with_suffix(s).name for s in (".png", ".pgw", ".prj"))
        z.extractall(tmp_path)
    with _gis(), rasterio.open(tmp_path / result.path.name) as src:
        assert src.transform.almost_equals(expected)


def test_geotiff_extract_offers_no_world_file(panel):
    panel.fmt, panel.what = "GeoTIFF (COG)", "Original band values"
    result = panel.extract()
    assert result is not None
    assert not result.path.with_suffix(".pgw").exists() and not panel._world.visible
