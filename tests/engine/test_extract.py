"""Native-resolution extracts: pixels, transform and CRS checked against an independent
rasterio read of the source COGs; limits, bad polygons and atomic writes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import shapely
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin
from shapely.geometry import Point, mapping, shape

from engine import extract as ex
from engine.catalog import SQLiteCatalog
from engine.chain import Chain
from engine.errors import DataUnavailable, InvalidInput
from engine.ingest.items import BandAsset, build_collection, make_item

UTM = CRS.from_epsg(32633)
ORIGIN = (500_000.0, 5_550_000.0)
RES = 10.0
W, H = 300, 200
COLL = "s2-extract"
ITEM = "S2A_EXTRACT_20200601"


def _band(name: str) -> np.ndarray:
    rows, cols = np.mgrid[0:H, 0:W]
    arr = {"B02": 400 + 2 * rows + 3 * cols, "B03": 300 + 5 * rows,
           "B04": 200 + 7 * cols, "B08": 2000 + cols - rows}[name].astype(np.uint16)
    arr[:20, :20] = 0  # nodata corner
    return arr


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    assets = []
    for name, common in {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}.items():
        path = root / f"{ITEM}_{name}.tif"
        with rasterio.open(path, "w", driver="COG", dtype="uint16", count=1, width=W,
                           height=H, crs=UTM, transform=from_origin(*ORIGIN, RES, RES),
                           nodata=0, blocksize=256) as dst:
            dst.write(_band(name), 1)
        assets.append(BandAsset(key=name, href=path, eo_band={"name": name,
                                                              "common_name": common}))
    item = make_item(ITEM, datetime(2020, 6, 1, 10, tzinfo=UTC), assets,
                     properties={"eo:cloud_cover": 5.0}, collection=COLL)
    cat = SQLiteCatalog(root / "catalog.sqlite")
    cat.add_collection(build_collection(COLL, [item]))
    cat.add_items([item], collection=COLL)
    cat.folder = root
    return cat


def _chain(*steps: dict) -> Chain:
    return Chain.from_json({"source": {"collection": COLL, "ids": [ITEM]}, "steps": list(steps)})


def _utm_polygon(x0: float, y0: float, x1: float, y1: float, *, lonlat: bool = True) -> dict:
    """A quadrilateral with corners given in UTM, as GeoJSON in WGS84."""
    ring = [(x0, y0), (x1, y0), (x1 - 200, y1), (x0 + 100, y1), (x0, y0)]
    if lonlat:
        xs, ys = rasterio.warp.transform(UTM, "EPSG:4326", [p[0] for p in ring],
                                         [p[1] for p in ring])
        ring = list(zip(xs, ys, strict=True))
    return {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}


POLY = _utm_polygon(500_150.0, 5_548_400.0, 502_300.0, 5_549_700.0)


def _inside(path: Path, geometry: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output pixel: its centre's UTM x, y and whether it is inside ``geometry``
    (computed with shapely from the output file's own transform)."""
    with rasterio.open(path) as ds:
        rows, cols = np.mgrid[0:ds.height, 0:ds.width]
        xs, ys = rasterio.transform.xy(ds.transform, rows.ravel(), cols.ravel())
        shape2 = (ds.height, ds.width)
    # the polygon's edges are straight in lon/lat: follow them closely in UTM
    dense = shapely.segmentize(shape(geometry), 1e-5)
    poly = shape(rasterio.warp.transform_geom("EPSG:4326", UTM, mapping(dense)))
    inside = np.array([poly.contains(Point(x, y)) for x, y in zip(xs, ys, strict=True)])
    return np.reshape(xs, shape2), np.reshape(ys, shape2), inside.reshape(shape2)


def _source_values(name: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    with rasterio.open(next(p for p in _SOURCES if p.name.endswith(f"_{name}.tif"))) as ds:
        r, c = rasterio.transform.rowcol(ds.transform, xs.ravel(), ys.ravel())
        arr = ds.read(1)
    return arr[np.asarray(r), np.asarray(c)].reshape(xs.shape)


_SOURCES: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _sources(catalog):
    _SOURCES[:] = sorted(catalog.folder.glob("*.tif"))


def test_bands_extract_matches_source_pixels(catalog, tmp_path):
    chain = _chain({"name": "bands", "bands": ["B08", "B04"]},
                   {"name": "scale", "min": [0], "max": [3000]})
    out = chain.extract(POLY, tmp_path / "bands.tif", what="bands", catalog=catalog)
    assert out.what == "bands" and out.band_names == ("B08", "B04") and out.note is None
    with rasterio.open(out.path) as ds:
        assert ds.crs == UTM and ds.res == (RES, RES) and ds.nodata == 0
        assert ds.dtypes == ("uint16", "uint16") and ds.driver == "GTiff"
        assert ds.descriptions == ("B08", "B04")
        # grid snapped to the source pixels: the origin is a multiple of 10 m
        assert ds.transform.c % RES == 0 and ds.transform.f % RES == 0
        assert ds.overviews(1) == [] or ds.is_tiled  # a COG layout
        data = ds.read()
    xs, ys, inside = _inside(out.path, POLY)
    assert inside.sum() > 5000 and (~inside).sum() > 100
    for k, name in enumerate(("B08", "B04")):
        expected = _source_values(name, xs, ys)
        np.testing.assert_array_equal(data[k][inside], expected[inside])
        assert (data[k][~inside] == 0).all()


def test_rendered_cog_and_png_are_the_display_colours(catalog, tmp_path):
    chain = _chain({"name": "bands", "bands": ["B04", "B03", "B02"]},
                   {"name": "scale", "min": [0], "max": [3000]})
    cog = ex.extract(chain, POLY, tmp_path / "rgb.tif", catalog=catalog)
    png = ex.extract(chain, POLY, tmp_path / "rgb.png", catalog=catalog)
    assert png.fmt == "png" and cog.fmt == "cog"
    with rasterio.open(cog.path) as ds:
        assert ds.count == 4 and ds.dtypes[0] == "uint8" and ds.crs == UTM
        rgba = ds.read()
    xs, ys, inside = _inside(cog.path, POLY)
    for k, name in enumerate(("B04", "B03", "B02")):
        src = _source_values(name, xs, ys).astype(float)
        want = np.clip(src / 3000 * 255, 0, 255)
        got = rgba[k].astype(float)
        valid = inside & (src > 0)
        assert np.abs(got[valid] - want[valid]).max() <= 1.0
    assert (rgba[3][inside & (_source_values("B04", xs, ys) > 0)] == 255).all()
    assert (rgba[3][~inside] == 0).all()
    picture = np.asarray(Image.open(png.path))
    assert picture.shape == (cog.height, cog.width, 4)
    np.testing.assert_array_equal(np.moveaxis(picture, -1, 0), rgba)


def test_analytic_chain_gives_float_values_with_nan_nodata(catalog, tmp_path):
    chain = _chain({"name": "expression", "expression": "(B08 - B04) / (B08 + B04)"})
    out = ex.extract(chain, POLY, tmp_path / "ndvi.tif", catalog=catalog)
    with rasterio.open(out.path) as ds:
        assert ds.dtypes[0].startswith("float") and np.isnan(ds.nodata)
        data = ds.read(1)
    xs, ys, inside = _inside(out.path, POLY)
    b8 = _source_values("B08", xs, ys).astype(float)
    b4 = _source_values("B04", xs, ys).astype(float)
    valid = inside & (b8 > 0)
    np.testing.assert_allclose(data[valid], ((b8 - b4) / (b8 + b4))[valid], rtol=1e-5)
    assert np.isnan(data[~inside]).all()
    with pytest.raises(InvalidInput, match="PNG holds 8-bit colours"):
        ex.extract(chain, POLY, tmp_path / "ndvi.png", catalog=catalog)


def test_self_intersecting_polygon_is_repaired_and_said(catalog, tmp_path):
    ring = POLY["coordinates"][0]
    bowtie = {"type": "Polygon", "coordinates": [[ring[0], ring[2], ring[1], ring[3],
                                                  ring[0]]]}
    out = ex.extract(_chain({"name": "bands", "bands": ["B02"]}), bowtie,
                     tmp_path / "bow.tif", catalog=catalog)
    assert out.note and "repaired" in out.note and "Self-intersection" in out.note


@pytest.mark.parametrize("geometry, message", [
    ({"type": "Polygon", "coordinates": []}, "empty"),
    ({"type": "Point", "coordinates": [15.0, 50.1]}, "Polygon or MultiPolygon"),
    ({"type": "Polygon", "coordinates": [[[500000, 5e6], [500100, 5e6], [500100, 5.1e6],
                                          [500000, 5e6]]]}, "not in WGS84"),
    ({"type": "Blob"}, "invalid GeoJSON"),
])
def test_bad_geometries_are_refused_and_nothing_written(catalog, tmp_path, geometry, message):
    with pytest.raises(InvalidInput, match=message):
        ex.extract(_chain({"name": "bands", "bands": ["B02"]}), geometry,
                   tmp_path / "x.tif", catalog=catalog)
    assert list(tmp_path.iterdir()) == []


def test_too_large_extract_says_size_and_limit(catalog, tmp_path):
    with pytest.raises(InvalidInput, match=r"too large.*limit of 1,000"):
        ex.extract(_chain({"name": "bands", "bands": ["B02"]}), POLY, tmp_path / "big.tif",
                   catalog=catalog, max_pixels=1000)
    assert list(tmp_path.iterdir()) == []


def test_outside_every_scene_is_data_unavailable(catalog, tmp_path):
    far = {"type": "Polygon", "coordinates": [[[0, 0], [0.1, 0], [0.1, 0.1], [0, 0]]]}
    with pytest.raises(DataUnavailable):
        ex.extract(_chain({"name": "bands", "bands": ["B02"]}), far, tmp_path / "f.tif",
                   catalog=catalog)


def test_failure_mid_write_leaves_no_file(catalog, tmp_path, extract_fails_mid_run):
    job = ex.prepare(_chain({"name": "bands", "bands": ["B02"]}), POLY, catalog=catalog,
                     resolution=2.0)
    assert job.blocks > 1

    seen = []
    with pytest.raises(DataUnavailable):
        ex.run(job, tmp_path / "half.tif", progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, job.blocks)]
    assert list(tmp_path.iterdir()) == []


def test_progress_and_existing_file(catalog, tmp_path):
    job = ex.prepare(_chain({"name": "bands", "bands": ["B02"]}), POLY, catalog=catalog,
                     resolution=2.5)
    seen = []
    ex.run(job, tmp_path / "p.tif", progress=lambda d, t: seen.append((d, t)), threads=2)
    assert seen[-1] == (job.blocks, job.blocks) and len(seen) == job.blocks
    assert "EPSG:32633 at 2.5 metre" in job.describe()
    with pytest.raises(InvalidInput, match="exists"):
        ex.run(job, tmp_path / "p.tif")


def test_bad_format_and_content(catalog, tmp_path):
    with pytest.raises(InvalidInput) as err:
        ex.prepare(_chain({"name": "bands", "bands": ["B02"]}), POLY, fmt="jpeg",
                   catalog=catalog)
    assert err.value.choices == ["cog", "png"]
    with pytest.raises(InvalidInput, match="unknown extract content"):
        ex.prepare(_chain({"name": "bands", "bands": ["B02"]}), POLY, what="all",
                   catalog=catalog)
