"""A scene without the displayed preset's bands (a Sentinel-1-like VV/VH scene among
Sentinel-2 ones, true colour shown) never gives a silent empty map: the display falls back
to a band the scene has and says so; a chain the tile service would refuse is reported.
Also: the Search tab's date fields fit the sidebar (QA screenshot 01-first-open)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from tiles import TileWatch, click_tab, serve_app

from engine.catalog import SQLiteCatalog
from engine.ingest.items import BandAsset, build_collection, make_item

pytestmark = pytest.mark.ui

COLLECTION = "mixed-s1-s2"
S2_ID, S1_ID = "S2A_33UUU_20200801", "S1A_IW_GRDH_20200725"
SIZE = 256
S2_BANDS = {"B02": ("blue", 600), "B03": ("green", 900), "B04": ("red", 1200),
            "B08": ("nir", 3000)}


def _cog(path: Path, array: np.ndarray, nodata: float) -> Path:
    profile = {"driver": "COG", "dtype": array.dtype.name, "count": 1, "width": SIZE,
               "height": SIZE, "crs": CRS.from_epsg(32633),
               "transform": from_origin(385_000.0, 5_825_000.0, 20.0, 20.0), "nodata": nodata,
               "compress": "DEFLATE", "blocksize": 256, "overviews": "AUTO"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)
    return path


@pytest.fixture(scope="module")
def mixed_catalog(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mixed-ui")
    data = root / "data"
    data.mkdir()
    ramp = np.add.outer(np.arange(SIZE), np.arange(SIZE)).astype(np.float32)
    s2_assets = [BandAsset(key=k, href=_cog(data / f"{S2_ID}_{k}.tif",
                                             (base + 4 * ramp).astype(np.uint16), 0),
                           eo_band={"name": k, "common_name": common})
                 for k, (common, base) in S2_BANDS.items()]
    s1_assets = [BandAsset(key=k, href=_cog(data / f"{S1_ID}_{k}.tif", low + 0.04 * ramp,
                                             -9999.0), eo_band={"name": k})
                 for k, low in (("VV", -25.0), ("VH", -30.0))]
    s2 = make_item(S2_ID, datetime(2020, 8, 1, 10, tzinfo=UTC), s2_assets,
                   properties={"platform": "sentinel-2a", "eo:cloud_cover": 1.0},
                   collection=COLLECTION)
    s1 = make_item(S1_ID, datetime(2020, 7, 25, 5, tzinfo=UTC), s1_assets,
                   properties={"platform": "sentinel-1a"}, collection=COLLECTION)
    db = root / "catalog.sqlite"
    with SQLiteCatalog(db) as cat:
        cat.add_collection(build_collection(COLLECTION, [s2, s1]))
        cat.add_items([s2, s1], collection=COLLECTION)
    return db, data


@pytest.fixture(scope="module")
def mixed_server(mixed_catalog, tmp_path_factory):
    db, data = mixed_catalog
    with serve_app(db, data, tmp_path_factory.mktemp("serve-mixed")) as base:
        yield base


def _row(page, text: str):
    return page.locator(".tabulator-row", has_text=text).first


def test_s1_scene_in_true_colour_is_never_a_silent_empty_map(mixed_server, page, artifacts):
    watch = TileWatch().attach(page)
    page.goto(mixed_server + "/")
    # first open: the newest scene (Sentinel-2) in true colour, with pixels
    assert watch.wait(page, lambda: len(watch.with_data()) >= 1, 40), watch.tiles[:5]
    s2_chain = watch.with_data()[0].chain

    # the date fields fit in the sidebar (the "To" field was cut off)
    sidebar = page.locator("#sidebar").bounding_box()
    dates = page.locator(".bk-input-group:has(input.flatpickr-input) input >> visible=true")
    assert dates.count() >= 2
    for i in range(2):
        box = dates.nth(i).bounding_box()
        assert box is not None and box["x"] + box["width"] <= sidebar["x"] + sidebar["width"]

    # select only the Sentinel-1 scene (true colour is still the display)
    click_tab(page, "Search")
    _row(page, "2020-07-25").wait_for(timeout=15000)
    _row(page, "2020-08-01").locator("input[type=checkbox]").click()
    page.activity.wait()
    _row(page, "2020-07-25").locator("input[type=checkbox]").click()

    # a visible message says why the display changed ...
    toast = page.locator(".notyf__toast", has_text="no band 'red'").first
    toast.wait_for(timeout=15000)
    assert "VV" in toast.inner_text() and "greyscale" in toast.inner_text()
    # ... and the map shows the scene's VV band (tiles with pixels), never a refused tile
    assert watch.wait(page, lambda: any(t.chain != s2_chain for t in watch.with_data()), 30), \
        [(t.chain[:8], t.status) for t in watch.tiles[-8:]]
    s1_chain = next(t.chain for t in reversed(watch.with_data()) if t.chain != s2_chain)
    assert not [t for t in watch.tiles if t.chain == s1_chain and t.status >= 400]
    page.screenshot(path=str(artifacts / "ui-refused-1-s1-fallback.png"))

    # both scenes at once share no band: the tile service's refusal is shown inline
    _row(page, "2020-08-01").locator("input[type=checkbox]").click()
    inline = page.get_by_text("unknown band 'VV'", exact=False).first
    inline.wait_for(timeout=15000)
    page.screenshot(path=str(artifacts / "ui-refused-2-both.png"))
    assert not [t for t in watch.tiles if t.status >= 400], \
        [(t.chain[:8], t.status) for t in watch.tiles if t.status >= 400]
    # the app keeps working: back to the Sentinel-2 scene alone, true colour again
    _row(page, "2020-07-25").locator("input[type=checkbox]").click()
    # (the same chain as at first open: the page's URL names it, its tiles may come from
    # the browser's cache)
    assert watch.wait(page, lambda: f"chain={s2_chain}" in page.url, 30), page.url
    page.screenshot(path=str(artifacts / "ui-refused-3-back-to-s2.png"))
