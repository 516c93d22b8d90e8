"""Time features in real Chromium over the demo catalog: the temporal slider changes the tiles
shown, play advances the dates (with the next frames prefetched), and a click on the map in
the Profile tab draws one chart point per clear date, as many as /api/profile counts."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np
import pytest
from tiles import TileWatch, click_tab

pytestmark = pytest.mark.ui

#: The demo collection opened first (newest scene), with its 7 dates.
L3A_DATES = 7


def _tab(page, name: str) -> None:
    click_tab(page, name)
    page.activity.wait()  # the tab's content arrived


def _chain_in_url(page) -> str:
    return parse_qs(urlparse(page.url).query).get("chain", [""])[0]


def _shown(page) -> str:
    """The date the Time tab says the map shows ('' for none)."""
    text = page.get_by_text("Map shows:").first.inner_text()
    found = re.search(r"\d{4}-\d{2}-\d{2}", text)
    return found.group(0) if found else ""


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
    assert _shown(page) == "2018-11-15"  # the newest scene, opened first, is that date
    page.locator("button.previous").first.click()
    assert watch.wait(page, lambda: _shown(page) == "2018-10-15", 10)
    assert watch.wait(page, lambda: any(c != first and (t.z, t.x, t.y) in seen
                                        for t in watch.with_data() for c in [t.chain]), 20)
    other = next(t for t in watch.with_data() if t.chain != first and (t.z, t.x, t.y) in seen)
    assert not np.array_equal(other.pixels, seen[(other.z, other.x, other.y)].pixels)
    page.activity.wait(quiet=0.3)
    page.screenshot(path=str(artifacts / "ui-time-1-slider.png"))

    # 2. play advances the dates; each played frame's tiles were requested before it was shown
    #    (the slider prefetches the next frames as hidden images).
    page.locator("button.play").first.click()
    shown: dict[str, tuple[str, float]] = {}  # date -> (chain in the page URL, when seen)

    def record() -> bool:
        date, chain = _shown(page), _chain_in_url(page)
        if date and chain and date not in shown:
            shown[date] = (chain, time.monotonic())
        return len(shown) >= 4

    watch.wait(page, record, 20)
    page.locator("button.pause").first.click()
    assert len(shown) >= 4, shown  # at 1 fps, four dates within 20 s
    played = list(shown.values())[1:]  # the first one was shown before play
    for chain, seen in played:
        first = min((t.at for t in watch.tiles if t.chain == chain), default=None)
        assert first is not None and first < seen, (chain, first, seen)
    page.screenshot(path=str(artifacts / "ui-time-2-played.png"))

    # 3. profile: click the middle of the map; one chart point per clear date.
    _tab(page, "Profile")
    page.get_by_role("button", name="Click the map for a profile").click()
    boxes = [c.bounding_box() for c in page.locator("canvas").all()]
    box = max((b for b in boxes if b), key=lambda b: b["width"] * b["height"])  # the map
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    summary = page.locator("p", has_text="clear value(s)").first
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
    page.activity.wait(quiet=0.3)
    page.screenshot(path=str(artifacts / "ui-time-3-profile.png"))
