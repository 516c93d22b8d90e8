"""The polygon profile in real Chromium over the Landsat demo (105 scenes with Fmask): a
polygon drawn in the Draw tab is offered in the Profile tab; picking it draws one chart point
per clear date, as many as POST /api/profile counts for the same polygon, and the CSV
download holds the polygon columns."""

from __future__ import annotations

import csv
import json
import re

import httpx
import pytest
from tiles import click_tab

pytestmark = pytest.mark.ui

MODEL = "(name) => Bokeh.documents[0].get_model_by_name(name)"
#: The Landsat demo's 61 x 61 px footprint, centred, at a zoom where it fills the map.
LINK = "/?collection=landsat-sr&center=-106.9142,40.2883&zoom=13.6"


def _js(page, body: str):
    return page.evaluate(f"() => {{ const model = {MODEL}; {body} }}")


def test_profile_of_a_drawn_polygon(server, page, artifacts, tmp_path):
    page.goto(server + LINK)
    click_tab(page, "Profile")
    select = page.locator("select", has=page.locator("option",
                                                     has_text="Draw a polygon in the Draw tab"))
    select.wait_for(timeout=15000)  # nothing drawn yet: the selector says so
    assert select.is_disabled()

    # a polygon in the middle third of the view, put in the Draw tab's source as the
    # PolyDrawTool does (the browser sends the change to the server like a drawing)
    click_tab(page, "Draw")  # builds the Draw tab, which adds its sources to the map
    page.wait_for_function(f"() => ({MODEL})('eox-draw-src-polygon') != null", timeout=15000)
    _js(page, """
        const fig = model('eox-map');
        const x0 = fig.x_range.start, x1 = fig.x_range.end;
        const y0 = fig.y_range.start, y1 = fig.y_range.end;
        const dx = (x1 - x0) / 6, dy = (y1 - y0) / 6, cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
        model('eox-draw-src-polygon').data = {xs: [[cx - dx, cx + dx, cx, cx - dx]],
                                               ys: [[cy - dy, cy - dy, cy + dy, cy + dy]]};
    """)
    page.locator(".tabulator-row", has_text="Polygon 1").first.wait_for(timeout=10000)
    with page.expect_download(timeout=15000) as info:  # the drawing as the server keeps it
        page.get_by_role("button", name="Download GeoJSON").click()
    drawn = json.loads(info.value.path().read_text())["features"][0]
    assert drawn["geometry"]["type"] == "Polygon"

    # the Profile tab offers it; the button profiles it
    click_tab(page, "Profile")
    shape = page.locator("select", has=page.locator("option", has_text="Polygon 1"))
    shape.wait_for(timeout=10000)
    shape.select_option(label="Polygon 1")
    page.get_by_role("button", name="Profile of a drawn polygon").click()
    summary = page.locator("p", has_text="Over Polygon 1").first
    summary.wait_for(timeout=30000)
    text = summary.inner_text()
    shown = int(re.search(r"(\d+) clear value", text).group(1))
    scenes = int(re.search(r"of (\d+) scene", text).group(1))

    api = httpx.post(server + "/api/profile", json={
        "collection": "landsat-sr", "geometry": drawn["geometry"]}, timeout=60)
    assert api.status_code == 200, api.text
    body = api.json()
    assert shown == body["clear"] > 0 and scenes == body["count"] == 105
    assert body["clear"] < body["count"]  # Fmask clouds some dates out
    points = _js(page, "return model('eox-profile-clear').data_source.data.x.length")
    cloudy = _js(page, "return model('eox-profile-cloudy').data_source.data.x.length")
    assert points == body["clear"]
    assert cloudy == sum(p["cloud"] for p in body["points"]) > 0
    means = _js(page, "return Array.from(model('eox-profile-clear').data_source.data.value)")
    want = [p["value"] for p in body["points"] if p["value"] is not None and not p["cloud"]]
    assert means == pytest.approx(want, rel=1e-9)
    # the table lists the scenes (first page: the oldest dates) with the polygon columns
    first = body["points"][0]["date"][:10]
    page.locator(".tabulator-row", has_text=first).first.wait_for(timeout=10000)
    headers = page.locator(".tabulator-col-title").all_inner_texts()
    assert {"count", "cloud_fraction"} <= set(headers), headers
    page.activity.wait(quiet=0.3)
    page.screenshot(path=str(artifacts / "ui-profile-polygon.png"))

    # CSV download: one row per scene, with the polygon columns
    with page.expect_download(timeout=15000) as info:
        page.get_by_role("button", name="Download CSV").click()
    assert info.value.suggested_filename == "profile_landsat-sr_Polygon_1.csv"
    rows = list(csv.DictReader(info.value.path().read_text().splitlines()))
    assert len(rows) == 105 and {"count", "cloud_fraction"} <= set(rows[0])
    assert [int(r["count"]) for r in rows] == [p["count"] for p in body["points"]]
