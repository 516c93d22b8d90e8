"""Time components without a server: the slider's dates and chains, the timelapse export and
the index profile, over a small catalog of Sentinel-2-like COGs (B04, B08, SCL) whose pixel
values are known, so every expected number is computed here with numpy."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform

from components.backend import Backend
from components.profile import ProfilePanel
from components.state import AppState
from components.time_tab import TimePanel
from components.timelapse import TimelapsePanel
from components.timeslider import SPEEDS, TimeSlider, frame_chain, view_frames
from engine.catalog import SQLiteCatalog
from engine.chain.store import ChainStore
from engine.collection import Collection
from engine.ingest.items import BandAsset, build_collection, make_item
from engine.render import TileRenderer

UTM = CRS.from_epsg(32633)
ORIGIN = (385_000.0, 5_825_000.0)
FAR = (585_000.0, 5_625_000.0)  # ~280 km away: outside the test view
RES, SIZE = 20.0, 64
TS, NOMASK = "ts-test", "ts-nomask"
# (id, when, cloud cover %, origin, SCL class everywhere); two scenes share 2021-05-01.
SCENES = [
    ("S2A_T_20210301", datetime(2021, 3, 1, 10, tzinfo=UTC), 5.0, ORIGIN, 4),
    ("S2A_T_20210401", datetime(2021, 4, 1, 10, tzinfo=UTC), 10.0, ORIGIN, 4),
    ("S2A_T_20210501a", datetime(2021, 5, 1, 10, tzinfo=UTC), 20.0, ORIGIN, 4),
    ("S2A_T_20210501b", datetime(2021, 5, 1, 10, 0, 5, tzinfo=UTC), 30.0, ORIGIN, 4),
    ("S2A_T_20210601", datetime(2021, 6, 1, 10, tzinfo=UTC), 80.0, ORIGIN, 9),
    ("S2A_T_20210701", datetime(2021, 7, 1, 10, tzinfo=UTC), 0.0, FAR, 4),
]
IN_VIEW = ["2021-03-01", "2021-04-01", "2021-05-01", "2021-06-01"]


def pixels(band: str, k: int) -> np.ndarray:
    """Band values of scene number ``k`` (uint16; 0 is nodata in the first 4 rows)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    arr = {"B04": 800 + 40 * k + 3 * cols, "B08": 2500 + 150 * k + 5 * rows}[band]
    arr = arr.astype(np.uint16)
    arr[:4, :] = 0
    return arr


def _cog(path: Path, array: np.ndarray, origin: tuple[float, float]) -> Path:
    with rasterio.open(path, "w", driver="COG", dtype=array.dtype.name, count=1, width=SIZE,
                       height=SIZE, crs=UTM, transform=from_origin(*origin, RES, RES),
                       nodata=0, compress="DEFLATE", blocksize=256) as dst:
        dst.write(array, 1)
    return path


def _items(folder: Path, collection: str, *, scl: bool):
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for k, (sid, when, cloud, origin, klass) in enumerate(SCENES):
        assets = [BandAsset(key=b, href=_cog(folder / f"{sid}_{b}.tif", pixels(b, k), origin),
                            eo_band={"name": b, "common_name": c})
                  for b, c in (("B04", "red"), ("B08", "nir"))]
        if scl:
            assets.append(BandAsset(key="SCL", href=_cog(
                folder / f"{sid}_SCL.tif", np.full((SIZE, SIZE), klass, np.uint8), origin),
                roles=["data", "cloud-mask"]))
        props = {"platform": "sentinel-2a", "constellation": "sentinel-2",
                 "eo:cloud_cover": cloud, "grid:code": f"MGRS-{sid}"}
        items.append(make_item(sid if scl else sid + "_n", when, assets, properties=props,
                               collection=collection))
    return items


@pytest.fixture(scope="module")
def backend(tmp_path_factory) -> Backend:
    root = tmp_path_factory.mktemp("time")
    db = root / "catalog.sqlite"
    with SQLiteCatalog(db) as cat:
        for name, scl in ((TS, True), (NOMASK, False)):
            items = _items(root / name, name, scl=scl)
            cat.add_collection(build_collection(name, items))
            cat.add_items(items, collection=name)
    catalog = SQLiteCatalog(db)
    return Backend(catalog=catalog, chain_store=ChainStore(db), renderer=TileRenderer(catalog))


def _lonlat(col: float, row: float, origin=ORIGIN) -> tuple[float, float]:
    x, y = origin[0] + (col + 0.5) * RES, origin[1] - (row + 0.5) * RES
    lon, lat = warp_transform(UTM, "EPSG:4326", [x], [y])
    return float(lon[0]), float(lat[0])


def _view() -> tuple[float, float, float, float]:
    """A WGS84 box well inside the scenes at ORIGIN."""
    w, n = _lonlat(8, 8)
    e, s = _lonlat(56, 56)
    return (w, s, e, n)


@pytest.fixture
def state(backend) -> AppState:
    s = AppState(backend=backend, collection=TS)
    s.viewport = _view()
    return s


@pytest.fixture
def slider(state) -> TimeSlider:
    return TimeSlider(state=state, active=True)


# -- slider --------------------------------------------------------------------------------
def test_slider_dates_are_the_catalog_dates_in_view(slider, state):
    assert [f.label for f in slider.frames] == IN_VIEW
    assert slider.frame("2021-05-01").ids == ("S2A_T_20210501a", "S2A_T_20210501b")
    assert slider.frame("2021-05-01").cloud == pytest.approx(25.0)
    assert slider.player.options == IN_VIEW and not slider.player.disabled
    # the cloud limit drops the cloudy date, and one scene of 05-01
    slider.max_cloud = 25
    assert [f.label for f in slider.frames] == IN_VIEW[:3]
    assert slider.frame("2021-05-01").ids == ("S2A_T_20210501a",)
    # the view moves onto the far scene: only its date
    w, n = _lonlat(8, 8, FAR)
    e, s = _lonlat(56, 56, FAR)
    state.viewport = (w, s, e, n)
    assert [f.label for f in slider.frames] == ["2021-07-01"]
    # a view with no data says so
    state.viewport = (0.0, 0.0, 0.1, 0.1)
    assert slider.frames == [] and "No scene" in slider.message and slider.player.disabled


def test_search_dates_limit_the_slider(slider, state):
    state.start, state.end = datetime(2021, 4, 1), datetime(2021, 5, 31)
    assert [f.label for f in slider.frames] == ["2021-04-01", "2021-05-01"]


def test_dates_follow_the_view_only_while_shown(state):
    slider = TimeSlider(state=state, active=False)
    assert slider.frames == []
    slider.active = True
    assert [f.label for f in slider.frames] == IN_VIEW
    slider.active = False
    state.viewport = (0.0, 0.0, 0.1, 0.1)
    assert len(slider.frames) == 4  # not recomputed while hidden ...
    slider.active = True
    assert slider.frames == []  # ... but as soon as the tab is shown again


def test_a_date_change_changes_the_chain_and_url(slider, state, backend):
    assert slider.show("2021-03-01")
    assert state.selected == ["S2A_T_20210301"]
    first_id, first_url = state.chain_id, state.tile_url
    assert first_id and first_id in first_url
    # the slider's own chain for the frame is the chain the state displays
    assert frame_chain(state.chain, slider.frame("2021-03-01"),
                       catalog=backend.catalog).id == first_id
    assert slider.show("2021-05-01")
    assert state.selected == ["S2A_T_20210501a", "S2A_T_20210501b"]
    assert state.chain_id != first_id and state.tile_url != first_url
    stored = backend.chain_store.get(state.chain_id)
    assert stored.source.ids == ("S2A_T_20210501a", "S2A_T_20210501b")
    assert stored.steps == state.chain.steps  # same display, other scenes
    # the next frames (wrapping) are registered for prefetching
    assert slider.prefetch_urls == [slider.frame_url(slider.frame(d))
                                    for d in ("2021-06-01", "2021-03-01", "2021-04-01")]
    for url in slider.prefetch_urls:
        backend.chain_store.get(url.split("/")[2])  # raises NotFound if not registered
    assert list(slider._src.data["url"]) == slider.prefetch_urls


def test_player_steps_and_speed(slider, state):
    slider.player.value = "2021-04-01"  # what the browser sends when the user drags/plays
    assert slider.date == "2021-04-01" and state.selected == ["S2A_T_20210401"]
    assert slider.step() == "2021-05-01" and slider.player.value == "2021-05-01"
    assert slider.step(2) == "2021-03-01"  # wraps around
    slider.speed = "4 fps"
    assert slider.player.interval == 1000 / SPEEDS["4 fps"] == 250


def test_display_change_keeps_the_date_and_reprefetches(slider, state):
    slider.show("2021-04-01")
    before, chain_id = list(slider.prefetch_urls), state.chain_id
    state.vmax = [0.5]  # another stretch: another display chain
    assert state.chain_id != chain_id
    assert state.selected == ["S2A_T_20210401"] and slider.date == "2021-04-01"
    assert slider.prefetch_urls and slider.prefetch_urls != before


def test_selecting_a_dates_scenes_by_hand_moves_the_slider(slider, state):
    state.selected = ["S2A_T_20210501b", "S2A_T_20210501a"]
    assert slider.date == "2021-05-01" and slider.player.value == "2021-05-01"


def test_frame_tiles_differ_between_dates(slider, state, backend):
    """Two dates give different pixels at the same tile (B04 grows with the date)."""
    import morecantile

    lon, lat = _lonlat(32, 32)
    t = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, 14)
    imgs = []
    for d in ("2021-03-01", "2021-04-01"):
        slider.show(d)
        img = backend.renderer.tile(state.chain, t.z, t.x, t.y)
        assert img is not None
        imgs.append(backend.renderer.encode(img, "png"))
    assert imgs[0] != imgs[1]


def test_view_frames_counts_more_than_the_limit(backend):
    frames, more = view_frames(Collection(TS, catalog=backend.catalog), _view(), max_scenes=2)
    assert more and [f.label for f in frames] == ["2021-05-01", "2021-06-01"]  # newest 2
    assert frames[0].ids == ("S2A_T_20210501b",)
    frames, more = view_frames(Collection(TS, catalog=backend.catalog), _view(), max_scenes=5)
    assert not more and len(frames) == 4


# -- timelapse -----------------------------------------------------------------------------
def test_timelapse_gif_export(state):
    panel = TimePanel(state=state, active=True)
    panel.slider.max_cloud = 50  # 3 dates play
    tl = panel.timelapse
    tl.param.update(format="gif", width=256, fps=4)
    state.selected = ["S2A_T_20210301"]
    assert tl.start()
    assert tl.wait(60)
    assert tl.message.startswith("Timelapse ready"), tl.message
    assert tl.done == tl.total == 3
    path = Path(tl.path)
    with Image.open(path) as gif:
        assert gif.n_frames == 3 and gif.size[0] == 256
        assert gif.info["duration"] == 250
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
    assert not np.array_equal(frames[0], frames[1])  # the dates differ
    assert tl._download.file == str(path) and tl._download.visible
    assert tl._show.disabled  # no map here: nothing to lay the GIF on


def test_timelapse_mp4_and_bad_view(state):
    slider = TimeSlider(state=state, active=True)
    tl = TimelapsePanel(state=state, slider=slider)
    state.selected = ["S2A_T_20210301"]
    tl.param.update(format="mp4", width=256)
    assert tl.start() and tl.wait(60)
    data = Path(tl.path).read_bytes()
    assert data[4:8] == b"ftyp" and tl.total == 4
    state.viewport = (0.0, 0.0, 0.1, 0.1)
    assert not tl.start()
    assert "No scene" in tl.message and state.notice.level == "error"


# -- profile -------------------------------------------------------------------------------
def _ndvi(k: int, col: int, row: int) -> float:
    red, nir = float(pixels("B04", k)[row, col]), float(pixels("B08", k)[row, col])
    return (nir - red) / (nir + red)


def test_profile_values_match_the_engine_and_numpy(state, backend):
    panel = ProfilePanel(state=state)
    lon, lat = _lonlat(20, 30)
    df = panel.run(lon, lat)
    expected = Collection(TS, catalog=backend.catalog).profile(lon, lat)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), expected.reset_index(drop=True))
    assert df["id"].tolist() == [s[0] for s in SCENES[:5]]
    want = [_ndvi(k, 20, 30) for k in range(4)]
    assert df["value"].iloc[:4].tolist() == pytest.approx(want, rel=1e-6)  # the engine evaluates in float32
    assert df["cloud"].tolist() == [False] * 4 + [True]
    assert np.isnan(df["value"].iloc[4])  # the cloudy date is masked ...
    assert panel.chart_points == 4 and panel.chart_shown  # ... and not drawn as a value
    assert len(panel._cloud_src.data["x"]) == 1
    assert panel._cloud_src.data["date"] == ["2021-06-01 10:00"]
    assert "4 clear value(s)** of 5 scene(s); 1 cloudy" in panel._summary.object
    assert not panel._alert.visible
    csv = pd.read_csv(io.StringIO(panel.csv_text()))
    assert list(csv.columns) == ["date", "value", "cloud", "scene_cloud", "id"]
    assert csv["value"].iloc[:4].tolist() == pytest.approx(want, rel=1e-6)  # the engine evaluates in float32
    assert pd.isna(csv["value"].iloc[4]) and bool(csv["cloud"].iloc[4])
    assert panel._csv.filename == f"profile_{TS}_{lon:.5f}_{lat:.5f}.csv"


def test_profile_expression_and_unmasked(state):
    panel = ProfilePanel(state=state)
    lon, lat = _lonlat(10, 40)
    panel.run(lon, lat)
    panel.param.update(expression="B08 - B04", mask_clouds=False)  # recomputes
    df = panel.table
    k_values = [float(pixels("B08", k)[40, 10]) - float(pixels("B04", k)[40, 10])
                for k in range(5)]
    assert df["value"].tolist() == pytest.approx(k_values)
    assert df["cloud"].tolist()[-1] is True  # flagged even when not masked
    assert "clouds not masked" in panel._summary.object


def test_profile_bad_inputs_say_why(state):
    panel = ProfilePanel(state=state)
    # a point with no scene
    assert panel.run(0.5, 0.5) is None
    # an error is said once: the session's notice (the shell's message bar and toast)
    assert state.notice.level == "error" and "no scene" in state.notice.text
    assert not panel._alert.visible
    assert not panel.chart_shown and panel.chart_points == 0
    # only cloudy scenes in the dates
    state.start, state.end = datetime(2021, 6, 1), datetime(2021, 6, 30)
    df = panel.run(*_lonlat(20, 30))
    assert len(df) == 1 and panel._alert.visible
    assert "No clear value" in panel._alert.object and "cloudy" in panel._alert.object
    assert not panel.chart_shown and panel._table.visible  # the row stays listed
    # a fill pixel (nodata rows 0-3): no data, not cloud
    state.start = state.end = None
    panel.run(*_lonlat(20, 1))
    assert "of 5 scene(s): 1 cloudy, 4 without data here" in panel._alert.object
    # a band the collection lacks: the message lists the bands
    panel.expression = "(B05 - B04) / (B05 + B04)"
    assert "B05" in state.notice.text and "B08" in state.notice.text
    assert state.notice.level == "error" and not panel._alert.visible


def test_profile_without_cloud_mask(state):
    state.collection = NOMASK
    panel = ProfilePanel(state=state)
    assert panel._mask.disabled and not panel.mask_clouds
    assert "no cloud-mask band" in panel._mask.name
    df = panel.run(*_lonlat(20, 30))
    assert panel.chart_points == 5 and not df["cloud"].any()


def test_profile_pick_mode_and_map_click(state):
    from types import SimpleNamespace

    from components.map import MapView, to_mercator

    mv = MapView(state=state)
    panel = ProfilePanel(state=state, map=mv)
    state.pick = "point"
    panel.picking = True
    assert state.pick == "off"  # a click does one thing
    lon, lat = _lonlat(20, 30)
    x, y = to_mercator(np.array([lon]), np.array([lat]))
    panel._on_map_tap(SimpleNamespace(x=float(x[0]), y=float(y[0])))
    assert panel.point == pytest.approx((lon, lat), abs=1e-6)
    assert panel.chart_points == 4
    assert panel._marker.data["x"][0] == pytest.approx(float(x[0]))
    state.pick = "box"
    assert not panel.picking
