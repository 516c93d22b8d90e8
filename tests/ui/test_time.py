"""Time features in real Chromium over the demo catalog: the temporal slider changes the tiles
shown, play advances the dates (with the next frames prefetched), and a click on the map in
the Profile tab draws one chart point per clear date, as many as /api/profile counts."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
from tiles import TileWatch

pytestmark = pytest.mark.ui

#: The demo collection opened first (newest scene), with its 7 dates.
L3A_DATES = 7


def _tab(page, name: str) -> None:
    page.locator(".bk-tab", has_text=name).first.click()
    page.wait_for_timeout(400)


def _player_value(page) -> str:
    text = page.locator(".pn-player-title").first.inner_text()
    found = re.search(r"\d{4}-\d{2}-\d{2}", text)
    return found.group(0) if found else ""


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 950})
    pg = ctx.new_page()
    yield pg
    ctx.close()


def test_slider_play_and_profile(server, page, artifacts):
    watch = TileWatch().attach(page)
    page.goto(server + "/")
    assert watch.wait(page, lambda: len(watch.with_data()) >= 2, 30), watch.tiles[:5]
    first = watch.with_data()[0].chain
    seen = {(t.z, t.x, t.y): t for t in watch.with_data(first)}

    # 1. the Time tab lists the dates of the view; moving the slider shows another date.
    _tab(page, "Time")
    page.get_by_text(f"{L3A_DATES} date(s) of sentinel-2-l3a in this view").wait_for(
        timeout=15000)
    assert _player_value(page) == "2018-11-15"
    page.locator(".pn-player button.previous").first.click()
    assert watch.wait(page, lambda: _player_value(page) == "2018-10-15", 10)
    assert watch.wait(page, lambda: any(c != first and (t.z, t.x, t.y) in seen
                                        for t in watch.with_data() for c in [t.chain]), 20)
    other = next(t for t in watch.with_data() if t.chain != first and (t.z, t.x, t.y) in seen)
    assert not np.array_equal(other.pixels, seen[(other.z, other.x, other.y)].pixels)
    page.wait_for_timeout(800)
    page.screenshot(path=str(artifacts / "ui-time-1-slider.png"))

    # 2. play advances the dates; the next frames' tiles are requested ahead of showing them.
    shown_before = set(watch.chains())
    page.locator(".pn-player button.play").first.click()
    dates = set()
    watch.wait(page, lambda: dates.add(_player_value(page)) or len(dates) >= 3, 15)
    page.locator(".pn-player button.pause").first.click()
    assert len(dates) >= 3, dates  # at 1 fps, three dates within 15 s
    assert len(set(watch.chains()) - shown_before) >= 2
    page.screenshot(path=str(artifacts / "ui-time-2-played.png"))

    # 3. profile: click the middle of the map; one chart point per clear date.
    _tab(page, "Profile")
    page.get_by_role("button", name="Click the map for a profile").click()
    box = page.locator("canvas").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    summary = page.get_by_text("clear value(s)", exact=False).first
    summary.wait_for(timeout=20000)
    text = summary.inner_text()
    lon, lat = (float(v) for v in re.search(r"At (-?[\d.]+), (-?[\d.]+)", text).groups())
    shown = int(re.search(r"(\d+) clear value", text).group(1))
    api = httpx.get(server + "/api/profile", params={
        "collection": "sentinel-2-l3a", "lon": lon, "lat": lat, "mask_clouds": False},
        timeout=30).json()
    assert shown == api["clear"] > 0
    points = page.evaluate("""() => {
        for (const doc of window.Bokeh.documents) {
            const m = doc.get_model_by_name("eox-profile-clear");
            if (m != null) return m.data_source.data.x.length;
        }
        return -1;
    }""")
    assert points == api["clear"]
    page.wait_for_timeout(800)
    page.screenshot(path=str(artifacts / "ui-time-3-profile.png"))
