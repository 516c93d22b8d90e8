"""Ingest: every input kind from tiny files written here, cloud cover, bad input, rollback."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import xarray as xr
from rasterio.crs import CRS
from rasterio.transform import Affine
from rio_cogeo.cogeo import cog_validate

from engine.catalog import Query, SQLiteCatalog
from engine.errors import IngestError
from engine.ingest import ingest_paths
from engine.ingest import items as items_module
from engine.ingest.naming import band_key, parse_scene, split_band

UTM33 = CRS.from_epsg(32633)
ORIGIN = (330000.0, 5822040.0)
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
RKH = SHARED / "s2-l2a-29RKH-20200219"


# -- helpers writing tiny inputs ---------------------------------------------------------


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    res: float = 10.0,
    crs: CRS | None = UTM33,
    nodata: float | None = None,
    driver: str = "GTiff",
    **extra,
) -> Path:
    """A (bands, rows, cols) or (rows, cols) array as a plain (non-COG) raster."""
    data = data if data.ndim == 3 else data[None]
    profile = {
        "driver": driver,
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype.name,
        "nodata": nodata,
        "transform": Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1]),
        **extra,
    }
    if crs is not None:
        profile["crs"] = crs
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def rand(shape, *, seed: int, low: int = 1, high: int = 5000, dtype="uint16") -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, size=shape).astype(dtype)


def scl_array(shape=(16, 16), seed=3) -> np.ndarray:
    """SCL classes 0..11 with fill (0) and clouds (8, 9, 10) in known amounts."""
    return np.random.default_rng(seed).integers(0, 12, size=shape).astype("uint8")


def expected_cloud(mask: np.ndarray, clouds, fill) -> float:
    """Independent cloud %: cloud pixels / valid pixels."""
    valid = mask != fill
    cloudy = np.zeros_like(valid)
    for c in clouds:
        cloudy |= mask == c
    return 100.0 * (cloudy & valid).sum() / valid.sum()


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def read(path: str | Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.fixture
def catalog(tmp_path):
    cat = SQLiteCatalog(tmp_path / "catalog.sqlite")
    yield cat
    cat.close()


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


def ingest(catalog, paths, data_dir, **kw):
    return ingest_paths(
        catalog, paths, collection=kw.pop("collection", "test"), data_dir=data_dir, **kw
    )


def snapshot(catalog: SQLiteCatalog) -> list:
    """The whole catalog content, to compare before/after."""
    out = []
    for coll in catalog.collections():
        items = catalog.search(Query(collection=coll.id))
        out.append((coll.to_dict(), sorted(json.dumps(i.to_dict(), sort_keys=True) for i in items)))
    return out


# -- names ------------------------------------------------------------------------------


def test_names_tell_platform_tile_level_date_and_band():
    s = parse_scene("S2B_MSIL2A_20190704T103031_N0212_R108_T32TQM_20190704T134536")
    assert s.properties["platform"] == "sentinel-2b"
    assert s.properties["grid:code"] == "MGRS-32TQM"
    assert s.properties["processing:level"] == "L2A"
    assert s.properties["sat:relative_orbit"] == 108
    assert s.datetime == datetime(2019, 7, 4, 10, 30, 31, tzinfo=UTC)
    s = parse_scene("LT50350322009151EDC00")  # Landsat 5, path 35 row 32, day 151 of 2009
    assert s.properties["platform"] == "landsat-5"
    assert s.properties["grid:code"] == "WRS2-035032"
    assert s.datetime == datetime(2009, 5, 31, tzinfo=UTC)
    s = parse_scene("LC08_L2SP_034032_20200101_20200110_02_T1")
    assert (s.properties["platform"], s.properties["processing:level"]) == ("landsat-8", "L2SP")
    assert band_key("SR_B4", s) == "red"  # OLI band 4 is red; TM band 4 is nir
    assert band_key("b4", parse_scene("LE70350322008118EDC00")) == "nir"
    assert split_band("T33UUU_20170216T102101_B8A_20m") == ("T33UUU_20170216T102101", "B8A")
    assert band_key("B2", parse_scene("T33UUU_20170216T102101")) == "B02"


# -- single rasters ---------------------------------------------------------------------


def test_single_geotiff_becomes_one_item_with_a_cog(catalog, data_dir, tmp_path):
    data = rand((40, 50), seed=1)
    data[:3] = 0
    src = write_raster(tmp_path / "in" / "field_2021-06-15.tif", data, nodata=0)
    report = ingest(catalog, [src], data_dir)
    assert report.added == ["field_2021-06-15"] and report.ok
    item = catalog.get_item("test", "field_2021-06-15")
    assert item.datetime == datetime(2021, 6, 15, tzinfo=UTC)
    assert item.properties["proj:epsg"] == 32633 and item.properties["proj:code"] == "EPSG:32633"
    ((key, asset),) = item.assets.items()
    href = Path(asset.href)
    assert href == data_dir / "cogs" / "test" / "field_2021-06-15" / f"{key}.tif"
    assert cog_validate(str(href), quiet=True)[0]
    assert np.array_equal(read(href), data)
    assert asset.extra_fields["raster:bands"][0]["nodata"] == 0
    assert asset.extra_fields["file:size"] == href.stat().st_size
    assert asset.extra_fields["proj:shape"] == [40, 50]
    assert asset.extra_fields["proj:transform"] == [10.0, 0.0, ORIGIN[0], 0.0, -10.0, ORIGIN[1]]
    assert asset.roles == ["data"] and "cloud-optimized" in asset.media_type
    # the footprint is the raster's bounds in lon/lat
    with rasterio.open(href) as ds:
        from rasterio.warp import transform_bounds

        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    assert item.bbox == pytest.approx([w, s, e, n], abs=1e-4)
    coll = catalog.collection("test")
    assert coll.extent.spatial.bboxes[0] == pytest.approx(item.bbox)


def test_a_cog_input_is_referenced_in_place(catalog, data_dir, tmp_path):
    plain = write_raster(tmp_path / "plain_20200101_B04.tif", rand((30, 30), seed=2), nodata=0)
    cog = tmp_path / "scene_20200101_B04.tif"
    with rasterio.open(plain) as src:
        rasterio.shutil.copy(src, cog, driver="COG")
    report = ingest(catalog, [cog], data_dir)
    item = catalog.get_item("test", report.added[0])
    assert item.id == "scene_20200101"
    assert item.assets["B04"].href == str(cog.resolve())
    assert files_under(data_dir) == set()


def test_jp2_band_folder_makes_one_sentinel2_item_with_cloud_cover(catalog, data_dir, tmp_path):
    folder = tmp_path / "T33UUU_L2A"
    bands10 = {b: rand((32, 32), seed=i) for i, b in enumerate(["B02", "B04", "B08"])}
    for band, arr in bands10.items():
        write_raster(
            folder / f"T33UUU_20190704T103031_{band}_10m.jp2",
            arr,
            driver="JP2OpenJPEG",
            QUALITY=100,
            REVERSIBLE="YES",
        )
    # a coarser copy of B02 must not replace the 10 m one
    write_raster(
        folder / "T33UUU_20190704T103031_B02_20m.jp2",
        rand((16, 16), seed=9),
        res=20,
        driver="JP2OpenJPEG",
        QUALITY=100,
        REVERSIBLE="YES",
    )
    scl = scl_array()
    write_raster(
        folder / "T33UUU_20190704T103031_SCL_20m.jp2",
        scl,
        res=20,
        driver="JP2OpenJPEG",
        QUALITY=100,
        REVERSIBLE="YES",
    )
    (folder / "notes.txt").write_text("not a raster")
    report = ingest(catalog, [folder], data_dir)
    assert report.added == ["T33UUU_20190704T103031"], report
    assert report.warnings == [
        (str(folder / "notes.txt"), "ignored: not a raster, cube or STAC item file")
    ]
    item = catalog.get_item("test", "T33UUU_20190704T103031")
    assert sorted(item.assets) == ["B02", "B04", "B08", "SCL"]
    assert item.assets["B08"].extra_fields["eo:bands"] == [{"name": "B08", "common_name": "nir"}]
    assert item.assets["B04"].extra_fields["eo:bands"] == [{"name": "B04", "common_name": "red"}]
    assert item.assets["SCL"].roles == ["data", "cloud", "cloud-mask"]
    assert np.array_equal(read(item.assets["B02"].href), bands10["B02"])  # 10 m kept
    assert item.assets["B02"].extra_fields["raster:bands"][0]["nodata"] == 0  # S2 nodata
    props = item.properties
    assert props["constellation"] == "sentinel-2" and props["grid:code"] == "MGRS-33UUU"
    assert props["processing:level"] == "L2A"  # an SCL band means L2A
    assert props["eo:cloud_cover"] == pytest.approx(expected_cloud(scl, (8, 9, 10), 0), abs=0.01)
    assert props["datetime"] == "2019-07-04T10:30:31Z"
    # geometry/proj come from the finest band
    assert props["proj:shape"] == [32, 32]


def test_landsat_folders_with_fmask(catalog, data_dir, tmp_path):
    root = tmp_path / "lsts"
    expected = {}
    for k, scene in enumerate(["LT50350322009151EDC00", "LE70350322009159EDC00"]):
        fmask = np.random.default_rng(k).choice([0, 1, 2, 3, 4, 255], size=(20, 20)).astype("uint8")
        for j, b in enumerate(["b3", "b4", "b5"]):
            write_raster(
                root / scene / f"{scene}_{b}.tif",
                rand((20, 20), seed=10 * k + j, dtype="int16"),
                res=30,
                nodata=-9999,
            )
        write_raster(root / scene / f"{scene}_fmask.tif", fmask, res=30)
        expected[scene] = expected_cloud(fmask, (4,), 255)
    report = ingest(catalog, [root], data_dir)
    assert sorted(report.added) == sorted(expected)
    for scene, cloud in expected.items():
        item = catalog.get_item("test", scene)
        assert sorted(item.assets) == ["fmask", "nir", "red", "swir1"]
        assert item.properties["eo:cloud_cover"] == pytest.approx(cloud, abs=0.01)
        assert item.assets["fmask"].extra_fields["raster:bands"][0]["nodata"] == 255
    assert catalog.get_item("test", "LT50350322009151EDC00").properties["platform"] == "landsat-5"
    assert catalog.get_item("test", "LE70350322009159EDC00").properties["platform"] == "landsat-7"
    # b3 of TM/ETM+ is red
    assert np.array_equal(
        read(catalog.get_item("test", "LT50350322009151EDC00").assets["red"].href),
        read(root / "LT50350322009151EDC00" / "LT50350322009151EDC00_b3.tif"),
    )


def test_multi_date_stack_gives_one_item_per_date(catalog, data_dir, tmp_path):
    stack = rand((6, 12, 14), seed=5, dtype="int16")  # 3 dates x (B04, B08), date-major
    src = write_raster(tmp_path / "stack.tif", stack)
    dates = ["2018-04-29", "2018-05-13", "2018-07-08"]
    report = ingest(
        catalog,
        [src],
        data_dir,
        band_dates=dates,
        band_names=["B04", "B08"],
        properties={"constellation": "sentinel-2", "processing:level": "L3A"},
    )
    assert report.added == ["stack_20180429", "stack_20180513", "stack_20180708"]
    for d, item_id in enumerate(report.added):
        item = catalog.get_item("test", item_id)
        assert item.datetime == datetime.fromisoformat(dates[d]).replace(tzinfo=UTC)
        assert np.array_equal(read(item.assets["B04"].href), stack[2 * d])
        assert np.array_equal(read(item.assets["B08"].href), stack[2 * d + 1])
        assert item.assets["B08"].extra_fields["eo:bands"][0]["common_name"] == "nir"
        assert item.properties["processing:level"] == "L3A"
    bands = catalog.collection("test").summaries.get_list("eo:bands")
    assert [b["name"] for b in bands] == ["B04", "B08"]
    # a mapping that does not fit the band count is refused with the numbers
    bad = ingest(
        catalog,
        [src],
        data_dir,
        band_dates=dates[:2],
        band_names=["B04", "B08"],
        collection="other",
    )
    assert bad.failed and "6 bands" in bad.failed[0][1] and "2 dates x 2" in bad.failed[0][1]


def test_bands_without_names_are_numbered_not_taken_for_sensor_bands(catalog, data_dir, tmp_path):
    stack = rand((2, 9, 9), seed=8)
    src = write_raster(tmp_path / "S2_L2A_sample_20220612.tif", stack, nodata=0)
    item = catalog.get_item("test", ingest(catalog, [src], data_dir).added[0])
    assert sorted(item.assets) == ["b1", "b2"]  # not B01/B02: the file's band numbers
    assert np.array_equal(read(item.assets["b2"].href), stack[1])
    named = ingest(catalog, [src], data_dir, band_names=["B4", "B8"], collection="named")
    item = catalog.get_item("named", named.added[0])
    assert sorted(item.assets) == ["B04", "B08"]
    assert item.assets["B08"].extra_fields["eo:bands"][0]["common_name"] == "nir"


def test_multi_band_file_without_dates_keeps_band_descriptions(catalog, data_dir, tmp_path):
    stack = rand((3, 9, 9), seed=8)
    stack[2] = scl_array((9, 9), seed=8)
    src = write_raster(tmp_path / "S2_L2A_sample_20220612.tif", stack, nodata=0)
    with rasterio.open(src, "r+") as ds:
        ds.descriptions = ("B04", "B03", "SCL")
    report = ingest(catalog, [src], data_dir)
    item = catalog.get_item("test", report.added[0])
    assert sorted(item.assets) == ["B03", "B04", "SCL"]
    for index, key in enumerate(["B04", "B03", "SCL"]):
        assert np.array_equal(read(item.assets[key].href), stack[index])
    assert item.properties["constellation"] == "sentinel-2"
    assert item.properties["processing:level"] == "L2A"
    assert item.properties["eo:cloud_cover"] == pytest.approx(
        expected_cloud(stack[2], (8, 9, 10), 0), abs=0.01
    )


# -- cubes ------------------------------------------------------------------------------


def make_cube(with_crs: str | None = "grid_mapping") -> xr.Dataset:
    times = pd.to_datetime(["2020-05-01T10:30:00", "2020-05-11T10:30:00", "2020-05-21T10:30:00"])
    x = ORIGIN[0] + 5 + 10 * np.arange(8)
    y = ORIGIN[1] - 5 - 10 * np.arange(6)
    rng = np.random.default_rng(7)
    ds = xr.Dataset(
        {
            "B04": (("time", "y", "x"), rng.integers(1, 3000, (3, 6, 8)).astype("int16")),
            "SCL": (("time", "y", "x"), rng.integers(0, 12, (3, 6, 8)).astype("uint8")),
            "sun": (("time",), np.array([30.0, 31.0, 32.0])),
        },
        coords={"time": times, "x": x, "y": y},
    )
    if with_crs == "grid_mapping":
        ds["crs"] = xr.DataArray(0, attrs={"crs_wkt": UTM33.to_wkt()})
        for v in ("B04", "SCL"):
            ds[v].attrs["grid_mapping"] = "crs"
    elif with_crs == "spatial_ref":
        ds = ds.assign_coords(spatial_ref=xr.DataArray(0, attrs={"spatial_ref": UTM33.to_wkt()}))
    return ds


@pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")
@pytest.mark.parametrize("kind", ["netcdf", "zarr", "zarr-consolidated"])
def test_cube_gives_one_item_per_time_step(catalog, data_dir, tmp_path, kind):
    ds = make_cube("grid_mapping" if kind == "netcdf" else "spatial_ref")
    if kind == "netcdf":
        path = tmp_path / "S2_L2A_cube.nc"
        ds.to_netcdf(path)
    else:
        path = tmp_path / "S2_L2A_cube.zarr"
        ds.to_zarr(path, consolidated=kind == "zarr-consolidated")
    report = ingest(catalog, [path], data_dir)
    assert report.ok, report.failed
    assert len(report.added) == 3
    assert report.warnings and "sun" in report.warnings[0][1]
    for t, item_id in enumerate(sorted(report.added)):
        item = catalog.get_item("test", item_id)
        assert item.datetime == pd.Timestamp(ds.time.values[t]).tz_localize("UTC").to_pydatetime()
        assert np.array_equal(read(item.assets["B04"].href), ds["B04"].values[t])
        scl = ds["SCL"].values[t]
        assert item.properties["eo:cloud_cover"] == pytest.approx(
            expected_cloud(scl, (8, 9, 10), 0), abs=0.01
        )
        with rasterio.open(item.assets["B04"].href) as cog:
            assert cog.crs.to_epsg() == 32633
            assert cog.transform == Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])
        assert item.assets["B04"].extra_fields["eo:bands"][0]["common_name"] == "red"


def test_cubes_split_by_resolution_give_one_item_per_date(catalog, data_dir, tmp_path):
    """A product split into a 10 m and a 20 m cube (WorldCereal's S2 netCDFs) gives ONE item
    per date with the bands of both, its cloud cover from the 20 m SCL; a date only one
    cube has still gets an item."""
    ds = make_cube("grid_mapping")
    ten = ds[["B04", "crs"]]
    twenty = ds[["SCL", "crs"]].coarsen(x=2, y=2).max()
    twenty["SCL"].attrs["grid_mapping"] = "crs"
    extra = twenty.isel(time=[0]).assign_coords(time=pd.to_datetime(["2020-06-01T10:30:00"]))
    twenty = xr.concat([twenty, extra], dim="time", data_vars="minimal")
    ten.attrs["tile"] = twenty.attrs["tile"] = "33UUU"  # as WorldCereal's global attribute
    ten.to_netcdf(tmp_path / "S2_L2A_10m_patch_2020.nc")
    twenty.to_netcdf(tmp_path / "S2_L2A_20m_patch_2020.nc")
    report = ingest(catalog, [tmp_path / "S2_L2A_20m_patch_2020.nc",
                              tmp_path / "S2_L2A_10m_patch_2020.nc"], data_dir)
    assert report.ok, report.failed
    assert sorted(report.added) == [f"S2_L2A_patch_2020_202005{d}T103000" for d in
                                    ("01", "11", "21")] + ["S2_L2A_patch_2020_20200601T103000"]
    for t in range(3):
        item = catalog.get_item("test", sorted(report.added)[t])
        assert sorted(item.assets) == ["B04", "SCL"]
        assert np.array_equal(read(item.assets["B04"].href), ds["B04"].values[t])
        scl = twenty["SCL"].values[t]
        assert np.array_equal(read(item.assets["SCL"].href), scl)
        assert item.properties["eo:cloud_cover"] == pytest.approx(
            expected_cloud(scl, (8, 9, 10), 0), abs=0.01)
        assert item.properties["proj:shape"] == [6, 8]  # the finest band's grid
        assert item.properties["grid:code"] == "MGRS-33UUU"
        assert item.properties["processing:level"] == "L2A"
    assert sorted(catalog.get_item("test", sorted(report.added)[3]).assets) == ["SCL"]
    # the same from the folder
    again = ingest(catalog, [tmp_path], data_dir, collection="folder")
    assert sorted(again.added) == sorted(report.added)


def test_cube_without_crs_fails_and_names_what_is_missing(catalog, data_dir, tmp_path):
    path = tmp_path / "nocrs.nc"
    make_cube(None).to_netcdf(path)
    report = ingest(catalog, [path], data_dir)
    assert report.added == []
    ((failed_path, reason),) = report.failed
    assert failed_path == str(path)
    assert "unknown CRS" in reason and "grid_mapping" in reason and "spatial_ref" in reason
    assert catalog.collections() == [] and files_under(data_dir) == set()


# -- STAC JSON --------------------------------------------------------------------------


def write_stac_item(folder: Path, *, with_scl: bool = True, cloud: float = 42.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    red = rand((20, 20), seed=11)
    write_raster(folder / "red_plain.tif", red, nodata=0)
    with rasterio.open(folder / "red_plain.tif") as src:
        rasterio.shutil.copy(src, folder / "B04.tif", driver="COG")
    (folder / "red_plain.tif").unlink()
    assets = {
        "red": {
            "href": "https://bucket.example/S2B_33UUU_20200301_0_L2A/B04.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data", "reflectance"],
            "proj:shape": [10980, 10980],
            "eo:bands": [{"name": "red", "common_name": "red"}],
            "raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 0.0001}],
        },
        "nir": {
            "href": "https://bucket.example/S2B_33UUU_20200301_0_L2A/B08.tif",
            "type": "image/tiff",
            "roles": ["data"],
        },
        "thumbnail": {"href": "https://bucket.example/thumb.jpg", "roles": ["thumbnail"]},
    }
    if with_scl:
        write_raster(folder / "SCL.tif", scl_array((20, 20), seed=4), nodata=0)
        assets["scl"] = {"href": "s3://bucket/SCL.tif", "type": "image/tiff", "roles": ["data"]}
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "S2B_33UUU_20200301_0_L2A",
        "properties": {
            "datetime": "2020-03-01T10:00:00Z",
            "eo:cloud_cover": cloud,
            "platform": "sentinel-2b",
            "proj:epsg": 32633,
        },
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[12.5, 52.5], [12.5, 52.6], [12.6, 52.6], [12.6, 52.5], [12.5, 52.5]]],
        },
        "bbox": [12.5, 52.5, 12.6, 52.6],
        "links": [{"rel": "self", "href": "s3://x/item.json"}],
        "assets": assets,
    }
    path = folder / "item.json"
    path.write_text(json.dumps(item))
    return path


def test_stac_json_hrefs_rewritten_missing_assets_dropped(catalog, data_dir, tmp_path):
    path = write_stac_item(tmp_path / "stac")
    report = ingest(catalog, [path], data_dir)
    assert report.added == ["S2B_33UUU_20200301_0_L2A"]
    dropped = [w for p, w in report.warnings if p == str(path)]
    assert len(dropped) == 1 and dropped[0].startswith("2 asset(s) dropped")  # one line
    assert "'nir'" in dropped[0] and "'thumbnail'" in dropped[0]
    item = catalog.get_item("test", "S2B_33UUU_20200301_0_L2A")
    assert sorted(item.assets) == ["red", "scl"]  # own keys kept
    assert item.assets["red"].href == str((tmp_path / "stac" / "B04.tif").resolve())
    assert item.assets["red"].extra_fields["proj:shape"] == [20, 20]  # refreshed from the file
    assert item.assets["red"].extra_fields["raster:bands"][0]["scale"] == 0.0001  # kept
    scl = read(tmp_path / "stac" / "SCL.tif")
    assert item.properties["eo:cloud_cover"] == pytest.approx(
        expected_cloud(scl, (8, 9, 10), 0), abs=0.01
    )  # the mask wins over the metadata
    assert (
        item.properties["processing:level"] == "L2A"
        and item.properties["proj:code"] == "EPSG:32633"
    )
    assert "cloud-mask" in item.assets["scl"].roles
    assert not [lk for lk in item.links if lk.rel == "self"]


def test_stac_json_without_mask_keeps_its_cloud_cover(catalog, data_dir, tmp_path):
    path = write_stac_item(tmp_path / "stac", with_scl=False, cloud=12.5)
    report = ingest(catalog, [tmp_path / "stac"], data_dir)  # a folder holding the JSON
    assert report.added == ["S2B_33UUU_20200301_0_L2A"]
    assert catalog.get_item("test", report.added[0]).properties["eo:cloud_cover"] == 12.5
    assert path.exists()


def test_stac_json_whose_data_files_are_all_missing_fails(catalog, data_dir, tmp_path):
    path = write_stac_item(tmp_path / "stac", with_scl=False)
    (tmp_path / "stac" / "B04.tif").unlink()
    report = ingest(catalog, [path], data_dir)
    assert report.added == [] and report.failed[0][0] == str(path)
    assert "no data asset" in report.failed[0][1]
    assert catalog.collections() == []


# -- bad input, idempotence, rollback ---------------------------------------------------


def test_bad_inputs_are_reported_with_a_reason_and_change_nothing(catalog, data_dir, tmp_path):
    good = write_raster(tmp_path / "good_20200101.tif", rand((10, 10), seed=1))
    ingest(catalog, [good], data_dir)
    catalog_before = snapshot(catalog)
    files_before = files_under(data_dir)

    corrupt = tmp_path / "corrupt_20200101.tif"
    corrupt.write_bytes(good.read_bytes()[:300])  # a truncated GeoTIFF
    text = tmp_path / "text_20200101.tif"
    text.write_text("hello, I am not a raster")
    nocrs = write_raster(tmp_path / "nocrs_20200101.tif", rand((10, 10), seed=2), crs=None)
    nodate = write_raster(tmp_path / "nodate.tif", rand((10, 10), seed=2))
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{not json")
    missing = tmp_path / "missing.tif"
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.md").write_text("no data here")
    report = ingest(catalog, [corrupt, text, nocrs, nodate, bad_json, missing, empty], data_dir)
    reasons = dict(report.failed)
    assert set(reasons) == {
        str(p) for p in (corrupt, text, nocrs, nodate, bad_json, missing, empty)
    }
    assert "no raster, cube or STAC item" in reasons[str(empty)]
    assert "not a raster GDAL can read" in reasons[str(text)]
    assert "corrupt or truncated" in reasons[str(corrupt)]
    assert "no CRS" in reasons[str(nocrs)]
    assert "no acquisition date" in reasons[str(nodate)]
    assert "not valid JSON" in reasons[str(bad_json)]
    assert "no such file" in reasons[str(missing)]
    assert report.added == [] and not report.ok
    assert snapshot(catalog) == catalog_before
    assert files_under(data_dir) == files_before


def test_a_bad_file_among_good_ones_only_loses_itself(catalog, data_dir, tmp_path):
    good = write_raster(tmp_path / "a_20200101.tif", rand((10, 10), seed=1))
    text = tmp_path / "b_20200101.tif"
    text.write_text("garbage")
    report = ingest(catalog, [good, text], data_dir)
    assert report.added == ["a_20200101"] and [p for p, _ in report.failed] == [str(text)]


def test_second_ingest_skips_and_writes_nothing(catalog, data_dir, tmp_path):
    src = write_raster(tmp_path / "s_20200101.tif", rand((10, 10), seed=1))
    first = ingest(catalog, [src], data_dir)
    files = {p: p.stat().st_mtime_ns for p in files_under(data_dir)}
    second = ingest(catalog, [src], data_dir)
    assert first.added == ["s_20200101"] and second.added == [] and second.skipped == ["s_20200101"]
    assert {p: p.stat().st_mtime_ns for p in files_under(data_dir)} == files


def _two_scene_folder(tmp_path: Path) -> Path:
    root = tmp_path / "scenes"
    for k, day in enumerate(["20200101", "20200111", "20200121"]):
        for b in ["B04", "B08"]:
            write_raster(root / f"T33UUU_{day}T100000_{b}.tif", rand((10, 10), seed=k))
    return root


def test_interrupt_while_building_leaves_catalog_and_disk_as_before(
    catalog, data_dir, tmp_path, monkeypatch
):
    ingest(catalog, [write_raster(tmp_path / "x_20190101.tif", rand((8, 8), seed=1))], data_dir)
    before, files_before = snapshot(catalog), files_under(data_dir)
    real = items_module.make_item
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr("engine.ingest.rasters.make_item", flaky)
    with pytest.raises(KeyboardInterrupt):
        ingest(catalog, [_two_scene_folder(tmp_path)], data_dir)
    assert len(calls) == 2
    assert snapshot(catalog) == before
    assert files_under(data_dir) == files_before


@pytest.mark.parametrize("existing", [False, True])
def test_interrupt_while_committing_leaves_catalog_and_disk_as_before(
    catalog, data_dir, tmp_path, monkeypatch, existing
):
    if existing:
        ingest(catalog, [write_raster(tmp_path / "x_20190101.tif", rand((8, 8), seed=1))], data_dir)
    before, files_before = snapshot(catalog), files_under(data_dir)
    real_add = catalog.add_items

    def interrupted(items, *, collection):
        def gen():
            for n, item in enumerate(items):
                if n == 2:
                    raise KeyboardInterrupt  # mid-transaction
                yield item

        return real_add(gen(), collection=collection)

    monkeypatch.setattr(catalog, "add_items", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ingest(catalog, [_two_scene_folder(tmp_path)], data_dir)
    assert snapshot(catalog) == before
    assert files_under(data_dir) == files_before


def test_collection_template_and_summaries(catalog, data_dir, tmp_path):
    template = pystac.Collection(
        id="mine",
        description="my scenes",
        license="CC-BY-4.0",
        title="Mine",
        extent=pystac.Extent(
            pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])
        ),
    )
    ingest_paths(
        catalog,
        [_two_scene_folder(tmp_path)],
        collection=template,
        data_dir=data_dir,
        progress=True,
    )
    coll = catalog.collection("mine")
    assert coll.title == "Mine" and coll.license == "CC-BY-4.0"
    assert [b["name"] for b in coll.summaries.get_list("eo:bands")] == ["B04", "B08"]
    start, end = coll.extent.temporal.intervals[0]
    assert (start, end) == (
        datetime(2020, 1, 1, 10, tzinfo=UTC),
        datetime(2020, 1, 21, 10, tzinfo=UTC),
    )


# -- real data --------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.skipif(not RKH.exists(), reason=f"real-data sample {RKH} is absent")
def test_real_earth_search_item_with_local_cogs(catalog, data_dir):
    report = ingest(catalog, [RKH], data_dir, collection="sentinel-2-l2a")
    assert report.added == ["S2A_29RKH_20200219_0_L2A"], report.failed
    item = catalog.get_item("sentinel-2-l2a", "S2A_29RKH_20200219_0_L2A")
    for key in ("red", "nir", "scl", "visual"):
        assert Path(item.assets[key].href).parent == RKH
    assert not any(k.endswith("-jp2") for k in item.assets)
    dropped = [w for _, w in report.warnings if "dropped" in w]
    assert len(dropped) == 1 and "'red-jp2' (B04.jp2)" in dropped[0]
    scl = read(RKH / "SCL.tif")
    cloud = item.properties["eo:cloud_cover"]
    assert cloud == pytest.approx(expected_cloud(scl, (8, 9, 10), 0), abs=0.01)
    assert cloud == pytest.approx(4.051854, abs=0.5)  # Earth Search's own value (full res)
    assert item.assets["red"].extra_fields["proj:shape"] == [1098, 1098]
    assert files_under(data_dir) == set()  # local COGs referenced, nothing converted
    hits = catalog.search(Query(collection="sentinel-2-l2a", bbox=(-11.5, 24.8, -11.5, 24.8)))
    assert [i.id for i in hits] == ["S2A_29RKH_20200219_0_L2A"]
    assert os.access(item.assets["red"].href, os.R_OK)


def test_band_names_from_per_band_description_metadata(catalog, data_dir, tmp_path):
    """openEO writes band names as a per-band DESCRIPTION metadata item (not as the GDAL
    band description): ingest names the assets from it, as for descriptions."""
    stack = rand((3, 9, 9), seed=9)
    stack[2] = scl_array((9, 9), seed=9)
    src = write_raster(tmp_path / "S2_L2A_sample_20220612.tif", stack, nodata=0)
    with rasterio.open(src, "r+") as ds:
        for index, name in enumerate(["B04", "B03", "SCL"], start=1):
            ds.update_tags(index, DESCRIPTION=name)
    with rasterio.open(src) as ds:
        assert ds.descriptions == (None, None, None)
    report = ingest(catalog, [src], data_dir)
    item = catalog.get_item("test", report.added[0])
    assert sorted(item.assets) == ["B03", "B04", "SCL"]
    assert np.array_equal(read(item.assets["SCL"].href), stack[2])
    assert item.properties["eo:cloud_cover"] == pytest.approx(
        expected_cloud(stack[2], (8, 9, 10), 0), abs=0.01
    )


def test_valid_percent_of_a_file_without_nodata_is_all_pixels(catalog, data_dir, tmp_path):
    """A raster without nodata or mask (MODIS JP2, Copernicus DEM): every pixel is valid;
    rio-stac alone reports one pixel (0.27 % here)."""
    src = write_raster(tmp_path / "dem_20210101.tif", rand((20, 20), seed=3, dtype="int16"))
    report = ingest(catalog, [src], data_dir)
    item = catalog.get_item("test", report.added[0])
    stats = item.assets["b1"].extra_fields["raster:bands"][0]["statistics"]
    assert stats["valid_percent"] == 100.0
    with_nodata = write_raster(tmp_path / "half_20210102.tif",
                               np.where(np.arange(400).reshape(20, 20) < 100, 0,
                                        7).astype("uint16"), nodata=0)
    item = catalog.get_item("test", ingest(catalog, [with_nodata], data_dir).added[0])
    stats = item.assets["b1"].extra_fields["raster:bands"][0]["statistics"]
    assert stats["valid_percent"] == pytest.approx(75.0)


@pytest.mark.parametrize("name, expected", [
    ("S1_GRD-ASCENDING_20m_00002806639B424A_32631_2017-08-01_2018-11-30",
     {"constellation": "sentinel-1", "sar:product_type": "GRD", "sat:orbit_state": "ascending"}),
    ("S1A_GRD_patch_20200101", {"platform": "sentinel-1a", "instruments": ["c-sar"]}),
    ("TERRA_MODIS_012010_NDVI_2014-07-28", {"platform": "terra", "instruments": ["modis"]}),
    ("MYD13Q1_h12v10_20140728", {"platform": "aqua", "instruments": ["modis"]}),
])
def test_sentinel1_and_modis_names(name, expected):
    props = parse_scene(name).properties
    assert {k: props.get(k) for k in expected} == expected
    assert "processing:level" not in props  # no Sentinel-2 level read into them


def test_mixing_sensors_in_one_collection_is_refused(catalog, data_dir, tmp_path):
    """Band names mean different bands per sensor (issue 15): one collection per sensor."""
    s1 = write_raster(tmp_path / "S1A_GRD_patch_20200101.tif", rand((9, 9), seed=1))
    s2 = write_raster(tmp_path / "S2_L2A_patch_20200102.tif", rand((9, 9), seed=2))
    with pytest.raises(IngestError, match=r"would mix sensors: sentinel-1 .*sentinel-2"):
        ingest(catalog, [s1, s2], data_dir, collection="mixed")
    assert "mixed" not in [c.id for c in catalog.collections()]
    assert files_under(data_dir) == set()
    alone = ingest(catalog, [s2], data_dir, collection="s2only")
    assert alone.added and not alone.warnings
    with pytest.raises(IngestError, match=r"sentinel-1 \(item .*sentinel-2 \(collection"):
        ingest(catalog, [s1], data_dir, collection="s2only")
