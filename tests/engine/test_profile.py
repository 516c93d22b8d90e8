"""Index profiles (engine.timeseries.profiles) against values computed here independently:
the Landsat demo series read whole with rasterio (Fmask clouds), and the real Sentinel-2
series of Flanders read from its netCDF with xarray (SCL clouds)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform
from shapely.geometry import Point, box, shape
from test_demo import demo  # noqa: F401 - the session demo catalog in .cache/demo-test

from engine.collection import Collection
from engine.errors import ChainError, InvalidInput, NotFound
from engine.timeseries import geotiff, profiles
from engine.timeseries.profiles import PROFILE_COLUMNS, PROFILE_POLYGON_COLUMNS, clear_count

FLANDERS = Path("/work/shared/data/worldcereal-flanders-2017-2018")
#: Inside the Landsat demo patch (61x61 px at 30 m, EPSG:32613).
LON, LAT = -106.914, 40.288


def _item(catalog, item_id):
    return catalog.search(Collection("landsat-sr", catalog=catalog).ids(item_id).query)[0]


def _landsat_expected(catalog, lon, lat):
    """Per item id: (datetime, ndvi, cloudy, fill, cloud cover) from whole-array reads."""
    coll = Collection("landsat-sr", catalog=catalog)
    out = {}
    for item in coll.filter_point(lon, lat).items():
        px = {}
        for band in ("red", "nir", "fmask"):
            with rasterio.open(item.assets[band].href) as ds:
                (x,), (y,) = warp_transform("EPSG:4326", ds.crs, [lon], [lat])
                row, col = ds.index(x, y)
                px[band] = (ds.read(1)[row, col], ds.nodata)
        red, nir, fm = (px[b][0] for b in ("red", "nir", "fmask"))
        fill = bool(red == px["red"][1] or nir == px["nir"][1] or fm == 255)
        cloudy = bool(fm in (2, 3, 4))
        ndvi = (float(nir) - float(red)) / (float(nir) + float(red))
        out[item.id] = (item.datetime, ndvi, cloudy, fill, item.properties.get("eo:cloud_cover"))
    return out


def test_point_profile_matches_rasterio(demo):  # noqa: F811
    catalog = demo[0]
    coll = Collection("landsat-sr", catalog=catalog)
    df = coll.profile(LON, LAT, "(nir-red)/(nir+red)")
    assert list(df.columns) == list(PROFILE_COLUMNS)
    expected = _landsat_expected(catalog, LON, LAT)
    assert len(df) == len(expected) == 105
    assert df["date"].is_monotonic_increasing
    n_cloud = n_fill = 0
    for row in df.itertuples():
        when, ndvi, cloudy, fill, cover = expected[row.id]
        assert row.date.to_pydatetime() == when
        assert row.cloud == (cloudy and not fill)
        assert row.scene_cloud == pytest.approx(cover)
        if fill or cloudy:
            assert math.isnan(row.value), row
        else:
            assert row.value == pytest.approx(ndvi, abs=1e-6)
        n_cloud += cloudy and not fill
        n_fill += fill
    assert n_cloud > 5 and n_fill > 5  # the series really exercises both
    assert clear_count(df) == 105 - n_cloud - n_fill

    raw = coll.profile(LON, LAT, "(nir-red)/(nir+red)", mask_clouds=False)
    cloudy_rows = raw[raw["cloud"]]
    assert len(cloudy_rows) == n_cloud
    for row in cloudy_rows.itertuples():  # values kept, still flagged
        assert row.value == pytest.approx(expected[row.id][1], abs=1e-6)


def test_point_profile_reads_pixels_without_gdal_once_checked(demo, monkeypatch):  # noqa: F811
    fast = profiles._shared()[2]
    fast.clear()
    coll = Collection("landsat-sr", catalog=demo[0])
    try:
        expected = coll.profile(LON, LAT)
        kinds = dict(fast._kinds)
        # int16 bands and the uint8 Fmask: each kind checked against GDAL, then read here
        assert len(kinds) == 2 and all(wkt and "UTM zone 13N" in wkt for wkt in kinds.values())
        # a kind whose pixels disagree with GDAL's is left to GDAL: same profile
        fast.clear()
        real = geotiff.read_pixel
        monkeypatch.setattr(geotiff, "read_pixel", lambda *a: real(*a) + 1)
        checked = coll.profile(LON, LAT)
        assert len(fast._kinds) == 2 and all(v is None for v in fast._kinds.values())
        assert checked.equals(expected)
    finally:
        fast.clear()


@pytest.mark.parametrize("fmt", [
    {"dtype": "int16", "compress": "deflate", "predictor": 2, "tiled": True},
    {"dtype": "uint8", "compress": "deflate", "predictor": 2, "tiled": False, "ENDIANNESS": "BIG"},
    {"dtype": "uint16", "compress": "deflate", "predictor": 1, "tiled": True, "BIGTIFF": "YES"},
    {"dtype": "int32", "compress": None, "tiled": False, "ENDIANNESS": "BIG"},
    {"dtype": "float32", "compress": "deflate", "predictor": 3, "tiled": True},
    {"dtype": "float64", "compress": "deflate", "predictor": 3, "tiled": False, "ENDIANNESS": "BIG"},
    {"dtype": "float32", "compress": "deflate", "predictor": 1, "tiled": True, "nodata": math.nan},
])
def test_geotiff_pixels_equal_rasterio(tmp_path, fmt):
    rng = np.random.default_rng(7)
    h, w = 70, 97  # not a multiple of the 32 px blocks: edge blocks are padded
    data = rng.normal(100, 1000, (h, w)).astype(fmt["dtype"])
    opts = {k: v for k, v in fmt.items() if v is not None}
    opts.update(blockxsize=32, blockysize=32) if fmt["tiled"] else opts.update(blockysize=9)
    path = tmp_path / "t.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, crs="EPSG:32631",
                       transform=rasterio.transform.from_origin(500000, 5600000, 10, 10),
                       **{"nodata": 0, **opts}) as ds:
        ds.write(data, 1)
    layout = geotiff.parse(str(path))
    assert layout is not None
    with rasterio.open(path) as ds:
        assert (layout.width, layout.height) == (w, h)
        assert ds.transform.almost_equals(rasterio.Affine(*layout.transform))
        assert layout.nodata == ds.nodata or math.isnan(layout.nodata) and math.isnan(ds.nodata)
        expected = ds.read(1)
    for row, col in [(0, 0), (h - 1, w - 1), (0, w - 1), (h - 1, 0), (33, 64),
                     *zip(rng.integers(0, h, 150), rng.integers(0, w, 150), strict=True)]:
        assert geotiff.read_pixel(str(path), layout, int(col), int(row)) == expected[row, col]


def test_geotiff_leaves_other_files_to_gdal(tmp_path):
    def write(name, **opts):
        path = tmp_path / name
        with rasterio.open(path, "w", driver="GTiff", width=64, height=64, dtype="uint16",
                           crs="EPSG:32631", **{"count": 1, **opts},
                           transform=rasterio.transform.from_origin(5e5, 5.6e6, 10, 10)) as ds:
            if opts.get("sparse_ok"):  # only the bottom-right block is written
                ds.write(np.ones((32, 32), "uint16"), 1, window=((32, 64), (32, 64)))
            else:
                ds.write(np.ones((ds.count, 64, 64), "uint16"))
        return str(path)

    assert geotiff.parse(write("lzw.tif", compress="lzw")) is None
    assert geotiff.parse(write("rgb.tif", count=3)) is None
    (tmp_path / "text.tif").write_text("not a TIFF")
    assert geotiff.parse(str(tmp_path / "text.tif")) is None
    sparse = write("sparse.tif", tiled=True, blockxsize=32, blockysize=32, sparse_ok=True,
                   nodata=0)
    layout = geotiff.parse(sparse)
    assert layout is not None and geotiff.read_pixel(sparse, layout, 40, 40) == 1
    with pytest.raises(geotiff.Unsupported, match="sparse"):  # the caller asks GDAL
        geotiff.read_pixel(sparse, layout, 1, 1)


def test_any_expression_and_dates(demo):  # noqa: F811
    catalog = demo[0]
    coll = Collection("landsat-sr", catalog=catalog).filter_date("2010-01-01", "2010-12-31")
    df = coll.profile(LON, LAT, "swir1 / 10000")
    assert 0 < len(df) < 105
    assert all(d.year == 2010 for d in df["date"])
    first = df.dropna(subset=["value"]).iloc[0]
    href = _item(catalog, first["id"]).assets["swir1"].href
    with rasterio.open(href) as ds:
        (x,), (y,) = warp_transform("EPSG:4326", ds.crs, [LON], [LAT])
        row, col = ds.index(x, y)
        assert first["value"] == pytest.approx(ds.read(1)[row, col] / 10000, rel=1e-6)


def test_polygon_profile_is_the_mean_of_clear_pixels(demo):  # noqa: F811
    catalog = demo[0]
    poly = box(-106.918, 40.285, -106.911, 40.291)
    coll = Collection("landsat-sr", catalog=catalog).filter_date("2009-05-01", "2009-10-31")
    df = coll.profile(geometry=poly, expression="(nir-red)/(nir+red)")
    assert list(df.columns) == list(PROFILE_POLYGON_COLUMNS)
    assert len(df) > 3
    for r in df.itertuples():
        item = _item(catalog, r.id)
        data = {}
        for band in ("red", "nir", "fmask"):
            with rasterio.open(item.assets[band].href) as ds:
                data[band] = ds.read(1).astype(float)
                data[band + "_fill"] = data[band] == ds.nodata
                transform, crs = ds.transform, ds.crs
        rows, cols = np.mgrid[0:data["red"].shape[0], 0:data["red"].shape[1]]
        xs, ys = rasterio.transform.xy(transform, rows.ravel(), cols.ravel())
        lons, lats = warp_transform(crs, "EPSG:4326", xs, ys)
        inside = np.array([poly.contains(Point(a, b)) for a, b in zip(lons, lats, strict=True)]
                          ).reshape(rows.shape)
        valid = inside & ~data["red_fill"] & ~data["nir_fill"] & ~data["fmask_fill"]
        cloudy = valid & np.isin(data["fmask"], (2, 3, 4))
        clear = valid & ~cloudy
        ndvi = (data["nir"] - data["red"]) / (data["nir"] + data["red"])
        assert r.count == clear.sum()
        if clear.any():
            assert r.value == pytest.approx(ndvi[clear].mean(), rel=1e-5)
        else:
            assert math.isnan(r.value)
        if valid.any():
            assert r.cloud_fraction == pytest.approx(cloudy.sum() / valid.sum())
            assert r.cloud == (cloudy.sum() == valid.sum())


def test_profile_errors(demo):  # noqa: F811
    catalog = demo[0]
    coll = Collection("landsat-sr", catalog=catalog)
    with pytest.raises(ChainError, match="'B08'") as err:
        coll.profile(LON, LAT, "(B08-B04)/(B08+B04)")
    assert "nir" in err.value.choices and "fmask" in err.value.choices
    with pytest.raises(NotFound, match="no scene of collection 'landsat-sr' covers the point"):
        coll.profile(10.0, 50.0)
    with pytest.raises(NotFound, match="widen the dates"):
        coll.filter_date("2020-01-01", "2020-12-31").profile(LON, LAT)
    with pytest.raises(ChainError, match="one expression"):
        coll.profile(LON, LAT, "nir; red")
    with pytest.raises(ChainError, match="malformed"):
        coll.profile(LON, LAT, "(nir-")
    with pytest.raises(InvalidInput, match="Polygon"):
        coll.profile(geometry={"type": "LineString", "coordinates": [[LON, LAT], [LON, 40.29]]})
    with pytest.raises(InvalidInput, match="no pixel centre"):
        coll.profile(geometry=Point(LON, LAT).buffer(1e-6))
    # L3A composites have no cloud-mask band: asking to mask clouds says what to do
    with pytest.raises(ChainError, match="mask_clouds=False"):
        Collection("sentinel-2-l3a", catalog=catalog).profile(1.23, 43.65)


def test_only_cloudy_scenes_are_flagged(demo):  # noqa: F811
    catalog = demo[0]
    expected = _landsat_expected(catalog, LON, LAT)
    day = next(w for w, _, cloudy, fill, _ in expected.values() if cloudy and not fill).date()
    df = Collection("landsat-sr", catalog=catalog).filter_date(day, day).profile(LON, LAT)
    assert len(df) >= 1 and df["cloud"].all() and df["value"].isna().all()
    assert clear_count(df) == 0


def test_a_warm_point_profile_opens_no_file(demo, monkeypatch):  # noqa: F811
    """A second profile over the same scenes reuses the open files and parsed headers (what
    makes it fast, ~0.05-0.2 s; timed in bench/, not here: CI's load made a < 2 s check
    fail)."""
    parsed = []
    parse = geotiff.parse
    monkeypatch.setattr(geotiff, "parse", lambda path: parsed.append(path) or parse(path))
    coll = Collection("landsat-sr", catalog=demo[0])
    profiles._shared()[2].clear()  # headers forgotten: the first profile parses them again
    coll.profile(LON, LAT)  # opens the files once (kept open, shared by the reader threads)
    assert len(parsed) >= 105
    parsed.clear()
    before = profiles.handle_pool().stats()
    df = coll.profile(LON + 0.001, LAT)
    assert len(df) == 105
    assert parsed == [] and profiles.handle_pool().stats()["opened"] == before["opened"]


# -- real Sentinel-2 (Flanders, 118 dates, SCL) -------------------------------------------

@pytest.fixture(scope="module")
def flanders(tmp_path_factory):
    if not FLANDERS.is_dir():
        pytest.skip(f"{FLANDERS} is absent (real sample data beside the project)")
    from engine.catalog import SQLiteCatalog
    from engine.ingest import ingest_paths

    root = tmp_path_factory.mktemp("flanders")
    catalog = SQLiteCatalog(root / "catalog.sqlite")
    report = ingest_paths(catalog, sorted(FLANDERS.glob("S2_L2A_*.nc")), collection="flanders",
                          data_dir=root)
    assert not report.failed
    yield catalog
    catalog.close()


def test_sentinel2_profile_matches_netcdf(flanders):
    import xarray as xr

    lon, lat = 3.0240, 50.8160  # inside the 640 m patch (EPSG:32631)
    df = Collection("flanders", catalog=flanders).profile(lon, lat, "(B08-B04)/(B08+B04)")
    (x,), (y,) = warp_transform("EPSG:4326", "EPSG:32631", [lon], [lat])
    name = "_00002806639B424A_32631_2017-08-01_2018-11-30.nc"
    with xr.open_dataset(FLANDERS / f"S2_L2A_10m{name}") as d10, \
            xr.open_dataset(FLANDERS / f"S2_L2A_20m{name}", mask_and_scale=False) as d20:
        p10 = d10.sel(x=x, y=y, method="nearest")
        p20 = d20.sel(x=x, y=y, method="nearest")
        b04, b08 = p10["B04"].values.astype(float), p10["B08"].values.astype(float)
        scl = p20["SCL"].values.astype(float)
        times = p10["timestamp"].values
    assert len(df) == len(times) == 118
    assert np.array_equal(df["date"].dt.tz_localize(None).values.astype("datetime64[s]"),
                          times.astype("datetime64[s]"))
    fill = (~np.isfinite(b04) | ~np.isfinite(b08) | (b04 == 0) | (b08 == 0)
            | ~np.isfinite(scl) | (np.nan_to_num(scl) == 0))
    cloudy = np.isin(np.nan_to_num(scl), (3, 8, 9, 10)) & ~fill
    clear = ~cloudy & ~fill
    assert cloudy.sum() > 10 and clear.sum() > 10  # a real, often cloudy series
    assert np.array_equal(df["cloud"].values, cloudy)
    with np.errstate(all="ignore"):
        ndvi = (b08 - b04) / (b08 + b04)
    assert np.allclose(df["value"].values[clear], ndvi[clear], atol=1e-4)
    assert df["value"].isna().values[~clear].all()
    # the crop cycle is there: a summer NDVI peak, bare soil/winter far lower
    values = df["value"]
    assert values[df["date"].dt.month.isin([6, 7, 8])].max() > 0.6 and values.min() < 0.4


def test_sentinel2_polygon_profile(flanders):
    poly = shape({"type": "Polygon", "coordinates": [[
        [3.0215, 50.8145], [3.0260, 50.8145], [3.0260, 50.8170], [3.0215, 50.8170],
        [3.0215, 50.8145]]]})
    df = Collection("flanders", catalog=flanders).filter_date("2018-06", "2018-08").profile(
        geometry=poly, expression="(B08-B04)/(B08+B04)")
    assert len(df) > 5
    assert (df["count"] > 0).any() and df["cloud_fraction"].dropna().between(0, 1).all()
    assert ((df["count"] == 0) | df["value"].notna()).all()
