"""Public STAC conventions: band aliases across Earth Search v0/v1, the Planetary Computer,
CDSE and USGS layouts (fixtures in tests/engine/fixtures/stac), and ``raster:bands``
scale/offset honoured by every reader (tiles/points, profiles, extract, batch), checked
against independent rasterio/numpy computations. Real-data tests (the Earth Search v1 item
in ../shared/data) skip when that folder is absent.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyproj
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin
from render_fixtures import make_item, pattern

from engine.catalog import SQLiteCatalog
from engine.chain.bands import (
    band_transform,
    check_bands,
    collection_band_names,
    resolve_asset,
)
from engine.collection import Collection
from engine.errors import ChainError, IngestError
from engine.extract import extract
from engine.ingest import ingest_paths
from engine.ingest.items import build_collection
from engine.render import TileRenderer
from engine.timeseries.profiles import profile

FIXTURES = Path(__file__).parent / "fixtures" / "stac"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
RKH = SHARED / "s2-l2a-29RKH-20200219"

S2_FIXTURES = ["earth-search-v0-sentinel-s2-l2a-cogs.json",
               "earth-search-v1-sentinel-2-l2a-pb0400.json",
               "planetary-computer-sentinel-2-l2a.json", "cdse-sentinel-2-l2a.json"]
#: Sentinel-2 band id -> the common name (red edges numbered) users also type.
S2_NAMES = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
            "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08",
            "B09": "nir09", "B11": "swir16", "B12": "swir22"}


def load(name: str) -> pystac.Item:
    return pystac.Item.from_dict(json.loads((FIXTURES / name).read_text()))


def filename(item: pystac.Item, key: str) -> str:
    return Path(urlparse(item.assets[key].href).path).name


# -- aliases ----------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", S2_FIXTURES)
def test_sentinel2_band_ids_and_common_names_name_the_same_file(fixture):
    """B04, b04, red (and B8A/nir08, B05/rededge1...) resolve to the one asset whose file
    is that band, whatever the catalog calls its assets; SCL too."""
    item = load(fixture)
    for band, common in S2_NAMES.items():
        key = resolve_asset(item, band)
        assert resolve_asset(item, common) == key, (band, common)
        assert resolve_asset(item, band.lower()) == key
        name = filename(item, key)
        assert f"{band}." in name or f"_{band}_" in name, (band, name)
        assert not name.endswith(".jp2") or fixture.startswith("cdse"), name  # COG preferred
    assert "SCL" in filename(item, resolve_asset(item, "scl"))
    assert "SCL" in filename(item, resolve_asset(item, "SCL"))


def test_cdse_picks_the_finest_resolution_of_a_band():
    item = load("cdse-sentinel-2-l2a.json")
    assert [resolve_asset(item, b) for b in ("B04", "red", "B8A", "B01", "SCL")] == [
        "B04_10m", "B04_10m", "B8A_20m", "B01_20m", "SCL_20m"]


def test_landsat_collection2_names_follow_the_platform():
    """SR_B4 is red on Landsat 8/9 but near infrared on Landsat 4-7; 'nir' is nir08."""
    l8 = load("planetary-computer-landsat-c2-l2-lc08.json")
    assert [resolve_asset(l8, n) for n in ("red", "SR_B4", "nir", "nir08", "SR_B5", "swir1")
            ] == ["red", "red", "nir08", "nir08", "nir08", "swir16"]
    assert filename(l8, resolve_asset(l8, "SR_B4")).endswith("_SR_B4.TIF")
    l7 = load("usgs-landsat-c2-l2-le07.json")
    assert [resolve_asset(l7, n) for n in ("red", "nir", "nir08", "swir16", "SR_B4")] == [
        "SR_B3", "SR_B4", "SR_B4", "SR_B5", "SR_B4"]
    with pytest.raises(ChainError, match="unknown band 'coastal'.*Valid choices: .*SR_B3"):
        resolve_asset(l7, "coastal")  # TM/ETM+ has no coastal band


def test_sentinel1_and_dem_names():
    s1 = load("planetary-computer-sentinel-1-rtc.json")
    assert [resolve_asset(s1, n) for n in ("VV", "vh", "VH_10m")] == ["vv", "vh", "vh"]
    dem = load("planetary-computer-cop-dem-glo-30.json")
    assert {resolve_asset(dem, n) for n in ("dem", "elevation", "DATA")} == {"data"}
    with pytest.raises(ChainError, match="unknown band 'red'.*Valid choices: data"):
        resolve_asset(dem, "red")


def test_collection_choices_accept_aliases_and_list_them():
    """The issue's refusal: an Earth Search v1 collection must take bands("B04", "B03",
    "B02"); an unknown band lists both spellings."""
    item = load("earth-search-v1-sentinel-2-l2a-pb0400.json")
    coll = build_collection("es-v1", [item])
    known = collection_band_names(coll)
    check_bands(["B04", "B03", "B02", "B8A", "SCL", "red"], known, collection="es-v1")
    with pytest.raises(ChainError, match=r"unknown band 'B13'.*B04.*red"):
        check_bands(["B13"], known, collection="es-v1")


# -- scale / offset ---------------------------------------------------------------------
def test_value_transforms_from_raster_bands():
    """Reflectance in the engine's unit (x 10 000): baseline 04.00 subtracts 1000, Landsat
    C2 maps DN to 0.275 DN - 2000; other bands to physical units; nothing when the
    provider says the offset is applied or there is no scale."""
    es = load("earth-search-v1-sentinel-2-l2a-pb0400.json")
    assert band_transform(es, resolve_asset(es, "B04")) == pytest.approx((1.0, -1000.0))
    assert band_transform(es, "aot") == pytest.approx((0.001, 0.0))
    assert band_transform(es, "scl") is None
    applied = load("earth-search-v1-sentinel-2-l2a-offset-applied.json")
    assert band_transform(applied, "red") is None
    cdse = load("cdse-sentinel-2-l2a.json")  # STAC 1.1 raster:scale/raster:offset
    assert band_transform(cdse, "B04_10m") == pytest.approx((1.0, -1000.0))
    l8 = load("planetary-computer-landsat-c2-l2-lc08.json")
    assert band_transform(l8, "red") == pytest.approx((0.275, -2000.0))
    assert band_transform(l8, "lwir11") == pytest.approx((0.00341802, 149.0))  # kelvin
    assert band_transform(load("planetary-computer-sentinel-1-rtc.json"), "vv") is None
    assert band_transform(load("earth-search-v0-sentinel-s2-l2a-cogs.json"), "B04") is None


def _geom(bbox):
    w, s, e, n = bbox
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


@pytest.fixture(scope="module")
def offset_world(tmp_path_factory):
    """Two Earth-Search-v1-like scenes of one footprint (keys red/nir/scl): P from
    processing baseline 04.00 (offset -0.1), Q from 02.14 (no offset)."""
    tmp = tmp_path_factory.mktemp("offset")
    x0, y0 = pyproj.Transformer.from_crs(4326, 32633, always_xy=True).transform(12.0, 47.0)
    transform = from_origin(round(x0, -1), round(y0, -1), 10, 10)
    items = []
    for k, (iid, baseline, offset) in enumerate((("P", "04.00", -0.1), ("Q", "02.14", 0.0))):
        red = pattern((256, 256), 50 + k, lo=1100, hi=3000)
        nir = pattern((256, 256), 60 + k, lo=1500, hi=5000)
        item = make_item(tmp / iid, iid, epsg=32633, transform=transform,
                         bands={"red": red, "nir": nir}, date=datetime(2022, 7, 4 + k,
                                                                      tzinfo=UTC))
        item.properties["s2:processing_baseline"] = baseline
        for key in ("red", "nir"):
            item.assets[key].extra_fields["raster:bands"] = [
                {"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": offset}]
        items.append(item)
    cat = SQLiteCatalog(tmp / "catalog.sqlite")
    cat.add_collection(build_collection("es", items))
    cat.add_items(items, collection="es")
    yield {"cat": cat, "items": {i.id: i for i in items}, "tmp": tmp}
    cat.close()


def _reflectance(item: pystac.Item, key: str) -> tuple[np.ndarray, rasterio.Affine]:
    """Independent: the band as physical reflectance (DN * scale + offset), NaN at nodata."""
    rb = item.assets[key].extra_fields["raster:bands"][0]
    with rasterio.open(item.assets[key].href) as ds:
        dn = ds.read(1).astype(np.float64)
        tr = ds.transform
    out = dn * rb["scale"] + rb["offset"]
    out[dn == 0] = np.nan
    return out, tr


def _ndvi(item: pystac.Item) -> tuple[np.ndarray, rasterio.Affine]:
    red, tr = _reflectance(item, "red")
    nir, _ = _reflectance(item, "nir")
    return (nir - red) / (nir + red), tr


def _lonlat(item: pystac.Item, row: int, col: int) -> tuple[float, float]:
    with rasterio.open(item.assets["red"].href) as ds:
        x, y = ds.xy(row, col)
    return pyproj.Transformer.from_crs(32633, 4326, always_xy=True).transform(x, y)


def test_ndvi_point_and_bands_honour_the_offset(offset_world):
    cat, p = offset_world["cat"], offset_world["items"]["P"]
    r = TileRenderer(cat)
    ndvi, _ = _ndvi(p)
    with rasterio.open(p.assets["red"].href) as ds:
        raw_red = ds.read(1).astype(float)
    with rasterio.open(p.assets["nir"].href) as ds:
        raw_nir = ds.read(1).astype(float)
    coll = Collection("es", catalog=cat).ids("P")
    for row, col in ((10, 20), (128, 77), (200, 240)):
        lon, lat = _lonlat(p, row, col)
        got = r.point(coll.process().expression("(B08-B04)/(B08+B04)"), lon, lat).values[0]
        assert got == pytest.approx(ndvi[row, col], abs=1e-5)
        raw = (raw_nir[row, col] - raw_red[row, col]) / (raw_nir[row, col] + raw_red[row, col])
        assert abs(raw - ndvi[row, col]) > 0.01  # the offset matters here
        bands = r.point(coll.process().bands("B04", "nir"), lon, lat).values
        assert bands == pytest.approx([raw_red[row, col] - 1000, raw_nir[row, col] - 1000])


def test_profile_honours_each_scenes_offset(offset_world):
    cat, items = offset_world["cat"], offset_world["items"]
    row, col = 100, 150
    lon, lat = _lonlat(items["P"], row, col)
    df = profile(Collection("es", catalog=cat), lon, lat, "(nir-red)/(nir+red)",
                 mask_clouds=False)
    got = dict(zip(df["id"], df["value"], strict=True))
    assert got == pytest.approx({i: _ndvi(items[i])[0][row, col] for i in ("P", "Q")},
                                abs=1e-5)
    poly = profile(Collection("es", catalog=cat).ids("P"), geometry=_geom(
        (lon - 0.001, lat - 0.001, lon + 0.001, lat + 0.001)), expression="(B08-B04)/(B08+B04)",
        mask_clouds=False)
    assert -1 < poly["value"][0] < 1
    raw = profile(Collection("es", catalog=cat).ids("P"), lon, lat, "red", mask_clouds=False)
    with rasterio.open(items["P"].assets["red"].href) as ds:
        assert raw["value"][0] == pytest.approx(ds.read(1)[row, col] - 1000.0)


def _sample(path: Path, item: pystac.Item, expected: np.ndarray, src_tr) -> None:
    """Every valid output pixel equals ``expected`` at the source pixel under its centre."""
    with rasterio.open(path) as out:
        data = out.read(1, masked=True)
        rows, cols = np.nonzero(~np.ma.getmaskarray(data))
        xs, ys = rasterio.transform.xy(out.transform, rows, cols)
    sr, sc = rasterio.transform.rowcol(src_tr, xs, ys)
    sr, sc = np.asarray(sr), np.asarray(sc)
    inside = (sr >= 0) & (sr < expected.shape[0]) & (sc >= 0) & (sc < expected.shape[1])
    assert inside.sum() > 1000
    want = expected[sr[inside], sc[inside]]
    got = np.asarray(data[rows[inside], cols[inside]], float)
    ok = np.isfinite(want)
    assert (np.abs(got[ok] - want[ok]) < 1e-4).mean() > 0.99


def test_extract_and_batch_honour_the_offset(offset_world, tmp_path):
    cat, p = offset_world["cat"], offset_world["items"]["P"]
    chain = Collection("es", catalog=cat).ids("P").process().expression("(nir-red)/(nir+red)")
    ndvi, tr = _ndvi(p)
    lon0, lat0 = _lonlat(p, 40, 40)
    lon1, lat1 = _lonlat(p, 200, 200)
    geom = _geom((lon0, lat1, lon1, lat0))
    extract(chain, geom, tmp_path / "ndvi.tif", catalog=cat)
    _sample(tmp_path / "ndvi.tif", p, ndvi, tr)
    chain.to_cog(tmp_path / "batch.tif", bbox=(lon0, lat1, lon1, lat0), catalog=cat,
                 analytic=True)
    _sample(tmp_path / "batch.tif", p, ndvi, tr)


def test_tile_reflectance_stretch_uses_offset_values(offset_world):
    """A 0..3000 stretch of B04 on a baseline-04.00 scene shows DN - 1000, like the same
    stretch on an older scene shows DN."""
    cat, p = offset_world["cat"], offset_world["items"]["P"]
    r = TileRenderer(cat)
    lon, lat = _lonlat(p, 128, 128)
    chain = Collection("es", catalog=cat).ids("P").process().bands("B04").scale(0, 3000)
    out = r.point(chain, lon, lat)  # analytic values skip the stretch: DN - 1000
    with rasterio.open(p.assets["red"].href) as ds:
        assert out.values[0] == pytest.approx(ds.read(1)[128, 128] - 1000.0)


# -- mixed collections ------------------------------------------------------------------
def _item_json(folder: Path, item: pystac.Item) -> Path:
    for asset in item.assets.values():
        asset.href = Path(asset.href).name
    path = folder / f"{item.id}.json"
    path.write_text(json.dumps(item.to_dict(include_self_link=False)))
    return path


def test_ingest_refuses_a_second_sensor_family(tmp_path):
    """Landsat items into a Sentinel-2 collection: refused, naming both, nothing written."""
    tr = from_origin(500000, 5200000, 10, 10)
    s2 = make_item(tmp_path / "s2", "S2X", epsg=32633, transform=tr,
                   bands={"B04": pattern((64, 64), 1)}, date=datetime(2022, 1, 1, tzinfo=UTC))
    ls = make_item(tmp_path / "ls", "LSX", epsg=32633, transform=tr,
                   bands={"red": pattern((64, 64), 2)}, date=datetime(2022, 1, 2, tzinfo=UTC),
                   constellation="landsat")
    with SQLiteCatalog(tmp_path / "c.sqlite") as cat:
        ok = ingest_paths(cat, [_item_json(tmp_path / "s2", s2)], collection="mix",
                          data_dir=tmp_path / "data")
        assert ok.added == ["S2X"], ok.failed
        with pytest.raises(IngestError, match=r"landsat.*sentinel-2|sentinel-2.*landsat"):
            ingest_paths(cat, [_item_json(tmp_path / "ls", ls)], collection="mix",
                         data_dir=tmp_path / "data")
        assert [i.id for i in Collection("mix", catalog=cat).items()] == ["S2X"]


# -- the real Earth Search v1 item ------------------------------------------------------
@pytest.mark.realdata
def test_real_earth_search_item_takes_band_ids_and_its_scale(tmp_path):
    if not RKH.is_dir():
        pytest.skip(f"real-data sample {RKH} is absent (../shared/data beside the project)")
    with SQLiteCatalog(tmp_path / "c.sqlite") as cat:
        report = ingest_paths(cat, [RKH / "S2A_29RKH_20200219_0_L2A.json"],
                              collection="es-real", data_dir=tmp_path / "data")
        assert report.added == ["S2A_29RKH_20200219_0_L2A"], report.failed
        coll = Collection("es-real", catalog=cat)
        chain = coll.process().bands("B04", "B03", "B02").scale(0, 3000)  # the refusal
        item = coll.items()[0]
        assert Path(item.assets[resolve_asset(item, "B04")].href).name == "B04.tif"
        lon, lat = -11.4, 24.8
        r = TileRenderer(cat)
        got = r.point(chain, lon, lat).values
        nd = r.point(coll.process().expression("(B08-B04)/(B08+B04)"), lon, lat).values[0]
        vals = {}
        for band in ("B04", "B03", "B02", "B08"):
            with rasterio.open(RKH / f"{band}.tif") as ds:
                x, y = pyproj.Transformer.from_crs(4326, ds.crs, always_xy=True).transform(
                    lon, lat)
                row, col = ds.index(x, y)
                vals[band] = float(ds.read(1)[row, col])
        # baseline 02.14: scale 0.0001, offset 0 -> the stored numbers are the engine's unit
        assert got == [vals["B04"], vals["B03"], vals["B02"]]
        assert nd == pytest.approx((vals["B08"] - vals["B04"]) / (vals["B08"] + vals["B04"]),
                                   rel=1e-5)
