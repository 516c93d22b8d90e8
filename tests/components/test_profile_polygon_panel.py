"""The Profile tab's polygon profile without a server: the drawn polygons of the session are
offered, and picking one gives the engine's ``profile(geometry=...)`` (mean over the clear
pixels inside, per scene) in chart, table and CSV, over small Sentinel-2-like COGs whose
SCL band clouds part of the polygon on one date and all of it on another."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform

from components.backend import Backend
from components.profile import NO_POLYGON, POLYGON_COLUMNS, ProfilePanel
from components.state import AppState
from engine.catalog import SQLiteCatalog
from engine.chain.store import ChainStore
from engine.collection import Collection
from engine.ingest.items import BandAsset, build_collection, make_item
from engine.render import TileRenderer

UTM = CRS.from_epsg(32633)
ORIGIN = (385_000.0, 5_825_000.0)
RES, SIZE = 20.0, 64
NAME = "poly-test"
DATES = [datetime(2021, 3, 1, 10, tzinfo=UTC), datetime(2021, 4, 1, 10, tzinfo=UTC),
         datetime(2021, 5, 1, 10, tzinfo=UTC)]


def pixels(band: str, k: int) -> np.ndarray:
    """B04/B08 gradients per scene ``k`` (0 = nodata in rows 0-3); SCL: clear (4) on date 0,
    cloudy (9) in columns >= 30 on date 1, cloud shadow (3) everywhere on date 2."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    if band == "SCL":
        scl = np.full((SIZE, SIZE), 4 if k < 2 else 3, np.uint8)
        if k == 1:
            scl[:, 30:] = 9
        return scl
    arr = {"B04": 800 + 40 * k + 3 * cols, "B08": 2500 + 150 * k + 5 * rows}[band]
    arr = arr.astype(np.uint16)
    arr[:4, :] = 0
    return arr


def lonlat(col: float, row: float) -> list[float]:
    x, y = ORIGIN[0] + col * RES, ORIGIN[1] - row * RES
    lon, lat = warp_transform(UTM, "EPSG:4326", [x], [y])
    return [round(float(lon[0]), 7), round(float(lat[0]), 7)]


def feature(fid: str, kind: str, name: str, cols: tuple[int, int], rows: tuple[int, int]
            ) -> dict:
    """A drawing as the Draw tab keeps it: a WGS84 polygon with id, kind and name."""
    (c0, c1), (r0, r1) = cols, rows
    ring = [lonlat(c0, r0), lonlat(c1, r0), lonlat(c1, r1), lonlat(c0, r1), lonlat(c0, r0)]
    return {"type": "Feature", "id": fid, "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"id": fid, "kind": kind, "name": name}}


#: Columns 20-40 x rows 10-30: half of it cloudy on date 1 (columns >= 30).
POLY = feature("polygon-1", "polygon", "Polygon 1", (20, 40), (10, 30))
#: Crosses the nodata rows 0-3.
BOX = feature("box-1", "box", "Box 1", (5, 15), (0, 12))
LINE = {"type": "Feature", "id": "line-1",
        "geometry": {"type": "LineString", "coordinates": [lonlat(1, 1), lonlat(9, 9)]},
        "properties": {"id": "line-1", "kind": "line", "name": "Line 1"}}


@pytest.fixture(scope="module")
def backend(tmp_path_factory) -> Backend:
    root = tmp_path_factory.mktemp("poly")
    items = []
    for k, when in enumerate(DATES):
        assets = []
        for band, common in (("B04", "red"), ("B08", "nir"), ("SCL", None)):
            path = root / f"T{k}_{band}.tif"
            arr = pixels(band, k)
            with rasterio.open(path, "w", driver="COG", dtype=arr.dtype.name, count=1,
                               width=SIZE, height=SIZE, crs=UTM,
                               transform=from_origin(*ORIGIN, RES, RES),
                               nodata=0 if band != "SCL" else None) as dst:
                dst.write(arr, 1)
            assets.append(BandAsset(key=band, href=path,
                                    eo_band={"name": band, **({"common_name": common}
                                                               if common else {})},
                                    roles=["data", "cloud-mask"] if band == "SCL" else ["data"]))
        items.append(make_item(f"S2A_P_{k}", when, assets, collection=NAME, properties={
            "platform": "sentinel-2a", "constellation": "sentinel-2",
            "eo:cloud_cover": 10.0 * k, "grid:code": f"MGRS-P{k}"}))
    db = root / "catalog.sqlite"
    with SQLiteCatalog(db) as cat:
        cat.add_collection(build_collection(NAME, items))
        cat.add_items(items, collection=NAME)
    catalog = SQLiteCatalog(db)
    return Backend(catalog=catalog, chain_store=ChainStore(db), renderer=TileRenderer(catalog))


@pytest.fixture
def state(backend) -> AppState:
    return AppState(backend=backend, collection=NAME)


def numpy_mean(k: int, cols: tuple[int, int], rows: tuple[int, int], *, mask: bool = True
               ) -> tuple[float, int]:
    """Mean NDVI and pixel count over the pixel centres inside a column/row box."""
    sl = np.s_[rows[0]:rows[1], cols[0]:cols[1]]
    red, nir = pixels("B04", k)[sl].astype(float), pixels("B08", k)[sl].astype(float)
    scl = pixels("SCL", k)[sl]
    use = (red != 0) & (nir != 0)
    if mask:
        use &= ~np.isin(scl, (3, 8, 9, 10))
    ndvi = (nir - red) / (nir + red)
    return (float(ndvi[use].mean()) if use.any() else float("nan")), int(use.sum())


def test_selector_follows_the_drawings(state):
    panel = ProfilePanel(state=state)
    assert list(panel._shape.options) == [NO_POLYGON] and panel._shape.disabled
    assert panel._run_shape.disabled and panel.shape is None
    assert panel.run_polygon() is None and state.notice.level == "warning"
    state.drawings = [POLY, LINE]
    assert panel._shape.options == {"Polygon 1": "polygon-1"}  # lines are not areas
    assert panel.shape == "polygon-1" and not panel._run_shape.disabled
    state.drawings = [POLY, LINE, BOX]
    assert list(panel._shape.options) == ["Polygon 1", "Box 1"]
    assert panel.shape == "polygon-1"  # the pick is kept while it exists
    state.drawings = [LINE]
    assert list(panel._shape.options) == [NO_POLYGON] and panel.shape is None


def test_polygon_profile_is_the_engine_profile(state, backend):
    state.drawings = [POLY, BOX]
    panel = ProfilePanel(state=state)
    panel._shape.value = "polygon-1"
    panel._run_shape.clicks += 1  # the button
    df = panel.table
    expected = Collection(NAME, catalog=backend.catalog).profile(geometry=POLY["geometry"])
    assert list(df.columns) == POLYGON_COLUMNS
    pd.testing.assert_frame_equal(df.reset_index(drop=True),
                                  expected[POLYGON_COLUMNS].reset_index(drop=True))
    # and independently: pixel centres of columns 20-39, rows 10-29
    for k in (0, 1):
        mean, n = numpy_mean(k, (20, 40), (10, 30))
        assert df["value"].iloc[k] == pytest.approx(mean, rel=1e-6)
        assert df["count"].iloc[k] == n
    assert df["count"].tolist() == [400, 200, 0]
    assert df["cloud_fraction"].tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert df["cloud"].tolist() == [False, False, True] and np.isnan(df["value"].iloc[2])
    # chart: one point per clear date, the all-cloudy date marked; polygon hover
    assert panel.chart_shown and panel.chart_points == 2
    assert panel._cloud_src.data["date"] == ["2021-05-01 10:00"]
    assert list(panel._clear_src.data["count"]) == [400, 200]
    assert ("clear pixels", "@count") in panel._hover.tooltips
    assert "Polygon 1" in panel._chart.title.text
    assert "Over Polygon 1: **2 clear value(s)** of 3 scene(s)" in panel._summary.object
    assert "1 all cloudy" in panel._summary.object and panel.point is None
    csv = pd.read_csv(io.StringIO(panel.csv_text()))
    assert list(csv.columns) == POLYGON_COLUMNS
    assert csv["count"].tolist() == [400, 200, 0]
    assert csv["value"].iloc[:2].tolist() == pytest.approx(df["value"].iloc[:2].tolist())
    assert panel._csv.filename == f"profile_{NAME}_Polygon_1.csv"


def test_polygon_reruns_on_inputs_and_point_switches_back(state):
    state.drawings = [POLY, BOX]
    panel = ProfilePanel(state=state)
    panel.run_polygon("box-1")  # rows 0-3 are nodata: 10 x 8 valid pixel centres
    assert panel.table["count"].tolist() == [80, 80, 0]
    assert panel.table["value"].iloc[0] == pytest.approx(
        numpy_mean(0, (5, 15), (0, 12))[0], rel=1e-6)
    panel.mask_clouds = False  # re-runs over the same polygon: clouds averaged too
    mean, n = numpy_mean(2, (5, 15), (0, 12), mask=False)
    assert panel.table["count"].tolist() == [80, 80, n]
    assert panel.table["value"].iloc[2] == pytest.approx(mean, rel=1e-6)
    assert "clouds not masked" in panel._summary.object
    panel.run(*lonlat(25.5, 20.5))  # a point profile again: point columns and tooltips
    assert panel.area is None and list(panel.table.columns) == POLYGON_COLUMNS[:5]
    assert ("cloudy pixel", "@cloud") in panel._hover.tooltips


def test_polygon_errors_say_why(state):
    far = feature("polygon-9", "polygon", "Polygon 9", (2000, 2010), (2000, 2010))
    tiny = feature("polygon-8", "polygon", "Polygon 8", (20.1, 20.2), (10.1, 10.2))
    state.drawings = [far, tiny]
    panel = ProfilePanel(state=state)
    assert panel.run_polygon("polygon-9") is None
    assert "no scene" in state.notice.text and not panel.chart_shown
    assert state.notice.level == "error" and not panel._alert.visible  # said once
    assert panel.run_polygon("polygon-8") is None
    assert "no pixel centre" in state.notice.text
    state.drawings = [POLY]
    state.start, state.end = datetime(2021, 5, 1), datetime(2021, 5, 31)
    df = panel.run_polygon("polygon-1")
    assert len(df) == 1 and "No clear value over Polygon 1" in panel._alert.object
    assert "1 all cloudy" in panel._alert.object and not panel.chart_shown


def test_polygon_too_large_is_refused_before_reading(state, monkeypatch):
    import functools

    import components.profile as profile_module
    from engine.timeseries import limits

    read = []
    monkeypatch.setattr(profile_module, "check_polygon_size",
                        functools.partial(limits.check_polygon_size, max_pixels=4))
    monkeypatch.setattr(profile_module.Collection, "profile",
                        lambda *a, **k: read.append(1))
    state.drawings = [POLY]
    panel = ProfilePanel(state=state)
    assert panel.run_polygon("polygon-1") is None
    text = state.notice.text
    assert state.notice.level == "error" and "too large" in text and "limit of 4 pixels" in text
    assert read == [] and not panel.chart_shown
