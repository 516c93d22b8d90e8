"""Previews kept decoded in memory (engine/render/previewcache.py): the raw copy written
beside each preview holds the same pixels and grid as the GeoTIFF, a damaged copy falls
back to the GeoTIFF, a rewritten preview is read again, the cache keeps its byte bound,
and a second zoomed-out tile opens no file at all."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.transform import from_origin
from render_fixtures import pattern, write_cog

from engine.errors import DataUnavailable
from engine.render.previewcache import PreviewCache, load, sidecar_path
from engine.render.previews import write_preview
from engine.security.gdal_paths import open_raster


@pytest.fixture
def preview(tmp_path):
    src = tmp_path / "band.tif"
    write_cog(src, pattern((600, 520), 7), crs=CRS.from_epsg(32633),
              transform=from_origin(400_000, 5_500_000, 10, 10))
    dest = tmp_path / "previews" / "p.tif"
    assert write_preview(str(src), dest, size=128, nodata=0)
    return dest


def test_raw_copy_equals_the_geotiff(preview):
    raw = sidecar_path(preview)
    assert raw.is_file()
    got = load(str(preview))
    with open_raster(str(preview)) as ds:
        assert np.array_equal(got.array, ds.read(1)) and got.array.dtype == ds.dtypes[0]
        assert got.transform == ds.transform and got.crs == ds.crs and got.nodata == ds.nodata
        assert (got.width, got.height) == (ds.width, ds.height) == (104, 120)
    raw.write_bytes(raw.read_bytes()[:-10])  # cut short: the GeoTIFF is read instead
    again = load(str(preview))
    assert np.array_equal(again.array, got.array) and again.transform == got.transform
    raw.write_bytes(b"not json\n" + b"\0" * 10)
    assert np.array_equal(load(str(preview)).array, got.array)


def test_cache_hits_reloads_a_rewritten_preview_and_keeps_its_bound(preview, tmp_path):
    cache = PreviewCache(10 * 2**20)
    a = cache.get(str(preview))
    assert cache.get(str(preview)) is a and cache.stats()["hits"] == 1
    write_cog(tmp_path / "other.tif", pattern((600, 520), 8), crs=CRS.from_epsg(32633),
              transform=from_origin(400_000, 5_500_000, 10, 10))
    preview.unlink()
    write_preview(str(tmp_path / "other.tif"), preview, size=128, nodata=0)
    b = cache.get(str(preview))  # a new file: read again
    assert b is not a and not np.array_equal(a.array, b.array)
    preview.unlink()
    with pytest.raises(DataUnavailable, match="missing"):
        cache.get(str(preview))
    small = PreviewCache(b.nbytes + 100)  # room for one
    paths = []
    for i in range(3):
        p = tmp_path / f"p{i}.tif"
        write_preview(str(tmp_path / "other.tif"), p, size=128, nodata=0)
        small.get(str(p))
        paths.append(p)
    s = small.stats()
    assert s["entries"] == 1 and s["bytes"] <= small.max_bytes and s["misses"] == 3
    small.get(str(paths[-1]))
    assert small.stats()["hits"] == 1
