"""Issue 14, item 9 in Chromium: a loaded overlay polygon appears in the layer list, becomes
the Extract area with one click, and a PNG extract of it comes with a world file whose
georeference matches the polygon (checked here with rasterio/numpy, not the app)."""

from __future__ import annotations

import json
import re
import zipfile

import numpy as np
import pytest
import rasterio
from affine import Affine
from idle import Activity
from pyproj import CRS, Transformer
from tiles import TileWatch, click_tab

pytestmark = pytest.mark.ui

MODEL = "(name) => Bokeh.documents[0].get_model_by_name(name)"


def _js(page, body: str):
    return page.evaluate(f"() => {{ const model = {MODEL}; {body} }}")


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1500, "height": 950}, accept_downloads=True)
    pg = ctx.new_page()
    pg.activity = Activity(pg)
    watch = TileWatch().attach(pg)
    pg.goto(server + "/")
    assert watch.wait(pg, lambda: len(watch.with_data()) >= 2, 30)
    yield pg
    ctx.close()


def test_overlay_polygon_is_a_layer_and_the_extract_area_with_a_world_file(page, tmp_path):
    view = _js(page, "const f = model('eox-map'); return [f.x_range.start, f.x_range.end, "
                     "f.y_range.start, f.y_range.end]")
    lon = lambda x: float(np.degrees(x / 6378137.0))
    lat = lambda y: float(np.degrees(np.arctan(np.sinh(y / 6378137.0))))
    w, e, s, n = lon(view[0]), lon(view[1]), lat(view[2]), lat(view[3])
    # a small field in the middle of the displayed scene's view
    box = (w + (e - w) * 0.45, s + (n - s) * 0.45, w + (e - w) * 0.55, s + (n - s) * 0.55)
    ring = [[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]],
            [box[0], box[1]]]
    path = tmp_path / "fields.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "north field"},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))

    click_tab(page, "Overlay")
    page.activity.wait()
    page.locator("input[type=file]").first.set_input_files(str(path))
    page.get_by_text("1 feature(s), from EPSG:4326", exact=False).first.wait_for(timeout=15000)
    # the layer list (under the map) lists it with its own checkbox
    page.get_by_text("Overlay: fields", exact=True).first.wait_for(timeout=10000)

    page.get_by_role("button", name="Use as area (Extract, Profile, Statistics)").click()
    page.get_by_text("is now an area in the Extract", exact=False).first.wait_for(timeout=10000)

    click_tab(page, "Extract")
    page.activity.wait()
    area = page.locator("select").filter(has_text="fields").first
    area.wait_for(timeout=10000)
    assert "north field" in area.locator("option:checked").inner_text()
    page.get_by_role("button", name="PNG", exact=True).click()
    page.activity.wait(quiet=0.3)
    page.get_by_role("button", name="Extract", exact=True).click()
    world = page.get_by_role("button", name="(PNG + world file .pgw)", exact=False).first
    world.wait_for(timeout=60000)
    with page.expect_download(timeout=30000) as info:
        world.click()
    bundle = tmp_path / info.value.suggested_filename
    info.value.save_as(bundle)
    with zipfile.ZipFile(bundle) as z:
        names = z.namelist()
        z.extractall(tmp_path / "out")
    png = next(tmp_path / "out" / m for m in names if m.endswith(".png"))
    assert {png.with_suffix(".pgw").name, png.with_suffix(".prj").name} <= set(names)
    # a name any system can store (no ':' from "fields: north field")
    assert re.fullmatch(r"[\w.-]+", png.name), png.name
    crs = CRS.from_wkt((png.with_suffix(".prj")).read_text())
    # the world file: pixel width, two rotations, pixel height (negative), centre of the
    # top-left pixel; GDAL reads the PNG's geotransform from it (as QGIS would), also in a
    # process whose GDAL settings are the app's (engine.storage.configure_gdal)
    a, d, b, e, c, f = (float(v) for v in png.with_suffix(".pgw").read_text().split())
    with rasterio.open(png) as ds:
        width, height, pixels, transform = ds.width, ds.height, ds.read(), ds.transform
    assert width > 2 and height > 2 and d == b == 0 and a > 0 and e < 0
    left, top = c - a / 2, f - e / 2
    assert transform.almost_equals(Affine(a, b, left, d, e, top)), transform
    right, bottom = left + a * width, top + e * height
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    (lw, le), (lb, lt) = to_ll.transform([left, right], [bottom, top])
    # the extract covers the field (to a pixel or two) and nothing far beyond it
    tol_x, tol_y = (box[2] - box[0]) * 0.2, (box[3] - box[1]) * 0.2
    assert abs(lw - box[0]) < tol_x and abs(le - box[2]) < tol_x, (lw, le, box)
    assert abs(lb - box[1]) < tol_y and abs(lt - box[3]) < tol_y, (lb, lt, box)
    assert pixels.any()
