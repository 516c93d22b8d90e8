"""Ingest of the REAL samples beside the project (../shared/data), checked against independent
reads of the source files (rasterio, numpy), and one rendered tile of a real scene compared
with the source band reprojected here with rasterio.

Skips per dataset when /work/shared/data (or the dataset's folder) is absent. The 29RKH
Earth Search item is covered in test_ingest.py and the Flanders netCDF series in
test_profile.py; this file covers the other samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import morecantile
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.warp import Resampling, reproject, transform_bounds

from engine.catalog import SQLiteCatalog
from engine.collection import Collection
from engine.ingest import ingest_paths
from engine.render import TileRenderer

pytestmark = pytest.mark.realdata

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
BOLZANO = SHARED / "s2-l2a-bolzano-20220612"
MODIS = SHARED / "modis-ndvi-sinop-2013-2014"
DEM = SHARED / "copernicus-dem-N00E006"
EOPATCH = SHARED / "eolearn-ljubljana-2015-2017"
TMS = morecantile.tms.get("WebMercatorQuad")


def need(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"real-data sample {folder} is absent (../shared/data beside the project)")


@pytest.fixture
def catalog(tmp_path):
    cat = SQLiteCatalog(tmp_path / "catalog.sqlite")
    yield cat
    cat.close()


def _ingest(catalog, paths, tmp_path, collection, **kw):
    report = ingest_paths(catalog, paths, collection=collection, data_dir=tmp_path / "data", **kw)
    assert not report.failed, report.failed
    return report


@pytest.fixture(scope="module")
def bolzano(tmp_path_factory):
    """The Bolzano scene ingested once for the tests that read it: (catalog, report)."""
    need(BOLZANO)
    root = tmp_path_factory.mktemp("bolzano")
    cat = SQLiteCatalog(root / "catalog.sqlite")
    yield cat, _ingest(cat, [BOLZANO], root, "bolzano")
    cat.close()


def _bbox_wgs84(path: Path) -> tuple[float, ...]:
    with rasterio.open(path) as src:
        return transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)


def test_bolzano_band_names_cloud_cover_and_pixels(bolzano):
    """The openEO GeoTIFF names its bands in per-band DESCRIPTION tags: the item gets
    B04/B03/B02/B08/SCL (so the true-colour and NDVI presets apply) and a cloud cover from
    its SCL band."""
    catalog, report = bolzano
    src_path = BOLZANO / "S2_L2A_sample.tif"
    item = catalog.get_item("bolzano", report.added[0])
    with rasterio.open(src_path) as src:
        names = [src.tags(i)["DESCRIPTION"] for i in range(1, src.count + 1)]
        bands = {name: src.read(i + 1) for i, name in enumerate(names)}
        epsg, shape = src.crs.to_epsg(), [src.height, src.width]
    assert names == ["B04", "B03", "B02", "B08", "SCL"]
    assert sorted(item.assets) == sorted(names)
    assert item.assets["B04"].extra_fields["eo:bands"][0]["common_name"] == "red"
    assert item.datetime.isoformat() == "2022-06-12T00:00:00+00:00"
    assert item.properties["proj:code"] == f"EPSG:{epsg}"
    assert item.properties["processing:level"] == "L2A"
    for name in names:
        with rasterio.open(item.assets[name].href) as cog:
            assert [cog.height, cog.width] == shape
            assert np.array_equal(cog.read(1), bands[name])
    scl = bands["SCL"]
    valid = scl != 0
    expected = 100.0 * np.isin(scl, (8, 9, 10))[valid].sum() / valid.sum()
    assert item.properties["eo:cloud_cover"] == pytest.approx(expected, abs=0.01)
    assert np.allclose(item.bbox, _bbox_wgs84(src_path), atol=1e-4)


def test_bolzano_true_colour_tile_matches_rasterio(bolzano):
    """A rendered true-colour tile of the real scene equals the source bands reprojected
    here (rasterio, nearest) to the tile's Web-Mercator grid, scaled 0-3000 by hand."""
    catalog = bolzano[0]
    renderer = TileRenderer(catalog)
    lon, lat = 11.34, 46.49  # central Bolzano, inside the scene
    tile = TMS.tile(lon, lat, 14)
    chain = Collection("bolzano", catalog=catalog).process().bands("red", "green", "blue").scale(
        0, 3000)
    img = renderer.tile(chain, tile.z, tile.x, tile.y)
    assert img is not None and img.array.shape == (3, 256, 256)
    bounds = TMS.xy_bounds(tile)
    dst_transform = rasterio.transform.from_bounds(*bounds, 256, 256)
    with rasterio.open(BOLZANO / "S2_L2A_sample.tif") as src:
        for i, band in enumerate((1, 2, 3)):  # B04, B03, B02
            out = np.zeros((256, 256), "float64")
            reproject(rasterio.band(src, band), out, dst_transform=dst_transform,
                      dst_crs="EPSG:3857", resampling=Resampling.nearest, dst_nodata=0)
            exp = np.rint(np.clip(out / 3000, 0, 1) * 255)
            got = img.array[i].astype("float64")
            equal = np.abs(got - exp) <= 1
            assert equal.mean() >= 0.97, f"band {band}: only {equal.mean():.1%} equal"
    # real colour, not black/white/saturated: a town in June is mid-grey-green
    rgb = img.array.data.reshape(3, -1).mean(axis=1)
    assert 20 < rgb.min() and rgb.max() < 200, rgb


def test_modis_ndvi_dates_sinusoidal_crs_and_values(catalog, tmp_path):
    need(MODIS)
    files = sorted(MODIS.glob("*.jp2"))
    report = _ingest(catalog, [MODIS], tmp_path, "modis")
    assert len(report.added) == len(files) == 12
    items = {i.id: i for i in Collection("modis", catalog=catalog).items()}
    for path in files:
        item = items[path.stem]
        assert item.datetime.date().isoformat() == path.stem.rsplit("_", 1)[1]
        with rasterio.open(path) as src:
            data, crs, shape = src.read(1), src.crs, [src.height, src.width]
        assert "Sinusoidal" in item.properties["proj:wkt2"] or "sinu" in crs.to_proj4()
        with rasterio.open(item.assets["b1"].href) as cog:
            assert cog.crs == crs and [cog.height, cog.width] == shape
            assert np.array_equal(cog.read(1), data)
        stats = item.assets["b1"].extra_fields["raster:bands"][0]["statistics"]
        assert stats["valid_percent"] == 100.0  # no nodata: every pixel counts
        assert np.allclose(item.bbox, _bbox_wgs84(path), atol=1e-4)
    west, south, east, north = items[files[0].stem].bbox
    assert -56 < west < east < -55 and -12 < south < north < -11  # Sinop, Mato Grosso


def test_copernicus_dem_needs_a_date_and_keeps_its_values(catalog, tmp_path):
    need(DEM)
    path = next(DEM.glob("*.tif"))
    report = ingest_paths(catalog, [DEM], collection="dem", data_dir=tmp_path / "data")
    assert report.failed and "--band-dates" in report.failed[0][1]  # says how to give one
    report = _ingest(catalog, [DEM], tmp_path, "dem", band_dates=["2021-04-22"])
    item = catalog.get_item("dem", report.added[0])
    assert item.datetime.date().isoformat() == "2021-04-22"
    assert item.properties["proj:code"] == "EPSG:4326"
    with rasterio.open(path) as src, rasterio.open(item.assets["b1"].href) as cog:
        window = rasterio.windows.Window(1800, 1800, 200, 200)  # the island's interior
        assert np.array_equal(cog.read(1, window=window), src.read(1, window=window))
        assert cog.bounds == pytest.approx(src.bounds)
    assert np.allclose(item.bbox, [6.0, 0.0, 7.0, 1.0], atol=1e-3)


def test_eolearn_eopatch_one_item_per_timestamp(catalog, tmp_path):
    """The EOPatch folder (numpy arrays + bbox + timestamps) gives one item per timestamp;
    its NDVI and cloud mask equal the arrays, its cloud cover the patch's own scalar."""
    need(EOPATCH)
    patch = EOPATCH / "TestEOPatch"
    report = _ingest(catalog, [EOPATCH], tmp_path, "ljubljana")
    times = pd.to_datetime(json.loads((patch / "timestamps.json").read_text()), utc=True)
    assert len(report.added) == len(times) == 68
    assert any("timeless features ignored" in w for _, w in report.warnings)
    ndvi = np.load(patch / "data" / "NDVI.npy")
    clm = np.load(patch / "mask" / "CLM.npy")
    cover = np.load(patch / "scalar" / "CLOUD_COVERAGE.npy").astype("float64").ravel()
    geo = json.loads((patch / "bbox.geojson").read_text())
    ring = np.asarray(geo["coordinates"][0])
    items = sorted(Collection("ljubljana", catalog=catalog).items(), key=lambda i: i.datetime)
    assert [i.datetime for i in items] == list(times.to_pydatetime())
    for index in (0, 7, 67):
        item = items[index]
        with rasterio.open(item.assets["NDVI"].href) as cog:
            assert cog.crs.to_epsg() == 32633 and (cog.height, cog.width) == ndvi.shape[1:3]
            assert np.allclose(cog.read(1), ndvi[index, :, :, 0], equal_nan=True)
            assert cog.bounds == pytest.approx(
                (ring[:, 0].min(), ring[:, 1].min(), ring[:, 0].max(), ring[:, 1].max()))
        with rasterio.open(item.assets["CLM"].href) as cog:
            assert np.array_equal(cog.read(1), clm[index, :, :, 0])
        assert item.properties["eo:cloud_cover"] == pytest.approx(cover[index] * 100, abs=0.01)
    west, south, east, north = items[0].bbox
    assert 14.5 < west < east < 14.6 and 45.8 < south < north < 45.9  # near Ljubljana
