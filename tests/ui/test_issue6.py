"""Split, Draw/Measure, Overlay and Extract tabs in real Chromium over the demo catalog."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import rasterio
from idle import Activity
from tiles import TileWatch, click_tab

pytestmark = pytest.mark.ui

MODEL = "(name) => Bokeh.documents[0].get_model_by_name(name)"


def _tab(page, name: str) -> None:
    click_tab(page, name)
    page.activity.wait()  # the tab's content arrived


def _js(page, body: str, arg=None):
    return page.evaluate(f"(arg) => {{ const model = {MODEL}; {body} }}", arg)


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1500, "height": 950}, accept_downloads=True)
    pg = ctx.new_page()
    pg.activity = Activity(pg)
    watch = TileWatch().attach(pg)
    pg.goto(server + "/")
    assert watch.wait(pg, lambda: len(watch.with_data()) >= 2, 30)
    pg.watch = watch
    yield pg
    ctx.close()


def _draw_square(page) -> None:
    """A polygon in the middle of the view, put in the Draw tab's source as PolyDrawTool
    does (the browser sends the change to the server like a drawing)."""
    _js(page, """
        const fig = model('eox-map');
        const x0 = fig.x_range.start, x1 = fig.x_range.end;
        const y0 = fig.y_range.start, y1 = fig.y_range.end;
        const dx = (x1 - x0) / 6, dy = (y1 - y0) / 6, cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
        model('eox-draw-src-polygon').data = {xs: [[cx - dx, cx + dx, cx + dx, cx - dx]],
                                               ys: [[cy - dy, cy - dy, cy + dy, cy + dy]]};
    """)


def test_split_view_two_layers_linked(page, artifacts):
    watch = page.watch
    before = set(watch.chains())
    _tab(page, "Split")
    page.get_by_role("button", name="Show split view").click()
    assert watch.wait(page, lambda: len(set(watch.chains()) - before) >= 1, 20)
    page.activity.wait(quiet=0.3)
    page.screenshot(path=str(artifacts / "ui-issue6-split.png"))
    left = _js(page, "return model('eox-split-left').renderers.map(r => r.tile_source ? "
                     "r.tile_source.url : '')")
    right = _js(page, "return model('eox-split-right').renderers.map(r => r.tile_source ? "
                      "r.tile_source.url : '')")
    assert any("/tiles/" in u for u in left) and any("/tiles/" in u for u in right)
    assert set(left) != set(right)  # two different layers
    start = _js(page, "return model('eox-split-right').x_range.start")
    # pan the LEFT map by dragging it; the right map's range follows
    canvases = [c.bounding_box() for c in page.locator("canvas").all()]
    split = [b for b in canvases if b and b["y"] < 500 and b["width"] > 200]
    assert split, canvases
    b0 = min(split, key=lambda b: b["x"])
    page.mouse.move(b0["x"] + b0["width"] / 2, b0["y"] + b0["height"] / 2)
    page.mouse.down()
    page.mouse.move(b0["x"] + b0["width"] / 2 - 120, b0["y"] + b0["height"] / 2, steps=8)
    page.mouse.up()
    after_js = ("return [model('eox-split-left').x_range.start, "
                "model('eox-split-right').x_range.start]")
    # the ranges are linked in the browser: the right map follows within a frame
    page.wait_for_function(f"(arg) => {{ const model = {MODEL}; const a = (() => {{ "
                           f"{after_js} }})(); return a[0] === a[1] && a[1] !== arg; }}",
                           arg=start, timeout=10_000)
    after = _js(page, after_js)
    assert after[0] == after[1] and after[1] != start
    page.screenshot(path=str(artifacts / "ui-issue6-split.png"))


def test_draw_polygon_shows_its_area_and_extract_downloads(page, artifacts, tmp_path):
    _tab(page, "Draw")
    page.get_by_role("button", name="Polygon", exact=True).click()
    page.wait_for_function(f"() => {{ const model = {MODEL}; "
                           "return model('eox-draw-polygon').active; }", timeout=10_000)
    assert _js(page, "return model('eox-draw-polygon').active")
    _draw_square(page)
    _tab(page, "Measure")
    row = page.locator(".tabulator-row", has_text="Polygon 1").filter(
        has_text=re.compile(r"\d (ha|km²)")).first
    row.wait_for(timeout=10000)
    assert " ha" in row.inner_text() or " km²" in row.inner_text(), row.inner_text()
    page.screenshot(path=str(artifacts / "ui-issue6-measure.png"))

    _tab(page, "Extract")
    page.get_by_role("button", name="Original band values").click()
    page.get_by_role("button", name="Extract", exact=True).click()
    download_button = page.get_by_role("button", name="Download", exact=False).last
    download_button.wait_for(timeout=30000)
    with page.expect_download(timeout=30000) as info:
        download_button.click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    with rasterio.open(path) as ds:
        assert ds.crs is not None and ds.count >= 1 and ds.width > 5
        assert ds.nodata is not None and np.any(ds.read(1) != ds.nodata)
    page.screenshot(path=str(artifacts / "ui-issue6-extract.png"))


def test_overlay_upload_draws_geojson(page, artifacts, tmp_path):
    view = _js(page, "const f = model('eox-map'); return [f.x_range.start, f.x_range.end, "
                     "f.y_range.start, f.y_range.end]")
    lon = lambda x: float(np.degrees(x / 6378137.0))
    lat = lambda y: float(np.degrees(np.arctan(np.sinh(y / 6378137.0))))
    w, e, s, n = lon(view[0]), lon(view[1]), lat(view[2]), lat(view[3])
    ring = [[w + (e - w) * a, s + (n - s) * b] for a, b in
            ((0.3, 0.3), (0.7, 0.3), (0.7, 0.7), (0.3, 0.7), (0.3, 0.3))]
    path = tmp_path / "parcels.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"crop": "barley"},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    _tab(page, "Overlay")
    page.locator("input[type=file]").first.set_input_files(str(path))
    page.get_by_text("1 feature(s), from EPSG:4326", exact=False).first.wait_for(
        timeout=15000)
    n = _js(page, "const r = model('eox-overlay-parcels-polygons'); "
                  "return r ? r.data_source.data.xs.length : -1")
    assert n == 1
    page.activity.wait(quiet=0.3)
    page.screenshot(path=str(artifacts / "ui-issue6-overlay.png"))
