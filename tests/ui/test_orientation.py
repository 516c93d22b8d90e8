"""Issue 14 item 2: orientation offline. The map has a base layer by default (land, borders,
place names drawn by the service from packaged data, no internet), so zooming to a place
shows where one is; picking a scene in the results table zooms the map to it."""

from __future__ import annotations

import io
import re
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image
from tiles import LOADED_JS

pytestmark = pytest.mark.ui

BASEMAP = re.compile(r"/api/basemap/(\d+)/(\d+)/(\d+)\.png")


def _center(page):
    c = parse_qs(urlparse(page.url).query).get("center")
    return tuple(float(v) for v in c[0].split(",")) if c else None


def test_base_layer_offline_and_table_selection_zooms(server, page, artifacts):
    tiles: list[tuple[int, np.ndarray]] = []
    outside: list[str] = []

    def seen(response):
        m = BASEMAP.search(response.url)
        if m and response.status == 200:
            img = np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))
            tiles.append((int(m.group(1)), img))

    page.on("response", seen)
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith((server, "data:", "blob:" + server)) else None)
    page.goto(server + "/")
    page.wait_for_function(LOADED_JS, timeout=30_000)
    box = page.get_by_placeholder("Type a city, region or country…")
    box.fill("Germany (country)")
    box.press("Enter")
    for _ in range(200):  # tiles at a country's zoom: land, borders and names
        if any(z <= 7 for z, _ in tiles):
            break
        page.wait_for_timeout(100)
    country = [img for z, img in tiles if z <= 7]
    assert country, [z for z, _ in tiles]
    colours = {tuple(c) for img in country for c in img.reshape(-1, 3)[::7]}
    assert len(colours) > 10  # not an empty dark rectangle
    page.activity.wait(quiet=0.3)
    page.screenshot(path=str(artifacts / "ui-basemap-germany.png"))
    assert not outside, outside[:5]  # nothing fetched from the internet

    # a scene picked in the table: the map goes to it (Colorado, far from Germany)
    page.locator("select").first.select_option("landsat-sr")
    page.wait_for_timeout(500)  # the switch: its callback can outlast an idle wait under load
    box.fill("")
    page.get_by_role("button", name="Search", exact=True).click()
    row = page.locator(".tabulator-row").first
    row.wait_for(timeout=60_000)  # a condition: late in a full run on 2 busy cores it is slow
    row.locator("input[type=checkbox]").click()
    for _ in range(150):
        c = _center(page)
        if c and -110 < c[0] < -100 and 36 < c[1] < 42:
            break
        page.wait_for_timeout(100)
    else:
        raise AssertionError(f"the map did not go to the scene: centre {_center(page)}")
    page.activity.wait(quiet=0.3)
    page.screenshot(path=str(artifacts / "ui-basemap-scene.png"))
