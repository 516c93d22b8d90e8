"""The process-wide GDAL settings (``engine.storage.configure_gdal``) keep LOCAL files'
sidecars: external overviews (``.ovr``), masks (``.msk``) and world files (``.pgw``) are
found, while remote reads still ask for no sidecar (tests/engine/test_remote_cogs.py)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from engine.security.gdal_paths import open_raster
from engine.storage import configure_gdal


@pytest.fixture(autouse=True)
def _configured():
    configure_gdal()  # what the renderer and the served app do on start


def _plain_tiff(path, size=256):
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="uint16", crs="EPSG:32633", tiled=True,
                       transform=from_origin(500_000, 5_560_000, 10, 10)) as dst:
        dst.write(np.arange(size * size, dtype="uint16").reshape(1, size, size))


def test_local_external_overviews_and_mask_are_found(tmp_path):
    path = tmp_path / "scene.tif"
    _plain_tiff(path)
    with rasterio.Env(TIFF_USE_OVR=True), rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4], rasterio.enums.Resampling.average)  # external: .ovr
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK="NO"), rasterio.open(path, "r+") as dst:
        mask = np.zeros((256, 256), dtype="uint8")
        mask[:, :128] = 255
        dst.write_mask(mask)  # external: scene.tif.msk
    assert (tmp_path / "scene.tif.ovr").exists() and (tmp_path / "scene.tif.msk").exists()
    with open_raster(str(path)) as ds:
        assert ds.overviews(1) == [2, 4]
        got = ds.read_masks(1)
    assert got[:, :128].min() == 255 and got[:, 128:].max() == 0


def test_local_world_file_georeferences_a_png(tmp_path):
    png = tmp_path / "area.png"
    with rasterio.open(png, "w", driver="PNG", width=8, height=4, count=1,
                       dtype="uint8") as dst:
        dst.write(np.full((1, 4, 8), 7, dtype="uint8"))
    (tmp_path / "area.pgw").write_text("30\n0\n0\n-30\n600015\n5000015\n")
    with open_raster(str(png)) as ds:
        assert ds.transform == from_origin(600_000, 5_000_030, 30, 30)

