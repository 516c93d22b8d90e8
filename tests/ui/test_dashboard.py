"""The served dashboard in real Chromium over the demo catalog: first view, search, select,
presets, auto stretch, copied link, bad input. Screenshots go to tests/artifacts/."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from idle import Activity
from tiles import TileWatch, click_tab

pytestmark = pytest.mark.ui


def _chain_in_url(page) -> str:
    return parse_qs(urlparse(page.url).query).get("chain", [""])[0]


def _new_chain(watch, known: set) -> bool:
    return bool(watch.chains()) and watch.chains()[-1] not in known


def _tab(page, activity: Activity, name: str) -> None:
    click_tab(page, name)
    activity.wait()  # the tab's content arrived


def test_dashboard_end_to_end(server, page, artifacts):
    watch = TileWatch().attach(page)
    activity = Activity(page)
    page.goto(server + "/")
    # 1. first open: the newest demo scene in true colour, with real pixels.
    assert watch.wait(page, lambda: len(watch.with_data()) >= 2, 30), watch.tiles[:5]
    first_chain = watch.with_data()[0].chain
    activity.wait()
    page.screenshot(path=str(artifacts / "ui-1-first-open.png"))

    # 2. search a demo place in the Sentinel-2 L1C collection.
    page.locator("select").first.select_option("sentinel-2-l1c")
    activity.wait()
    place = page.get_by_placeholder("Type a city, region or country…")
    place.fill("Germany")
    place.press("Enter")
    activity.wait()
    page.get_by_role("button", name="Search", exact=True).click()
    row = page.locator(".tabulator-row").first
    row.wait_for(timeout=15000)
    assert "2017-02-16" in row.inner_text()
    page.screenshot(path=str(artifacts / "ui-2-search.png"))

    # 3. select the scene: its tiles arrive with data.
    row.locator("input[type=checkbox]").click()
    assert watch.wait(page, lambda: _new_chain(watch, {first_chain}), 15)
    s2_chain = watch.chains()[-1]
    _tab(page, activity, "Zoom")
    page.get_by_role("button", name="Zoom to the selected scene(s)").click()
    assert watch.wait(page, lambda: len(watch.with_data(s2_chain)) >= 2, 30), watch.chains()
    activity.wait()
    page.screenshot(path=str(artifacts / "ui-3-selected.png"))
    true_tiles = {(t.z, t.x, t.y): t for t in watch.with_data(s2_chain)}

    # 4. false colour: new chain, new tiles, different pixels at the same place.
    _tab(page, activity, "Display")
    page.get_by_text("False colour (infrared)").click()
    assert watch.wait(page, lambda: _new_chain(watch, {first_chain, s2_chain}), 15)
    fc_chain = watch.chains()[-1]
    assert watch.wait(page, lambda: any((t.z, t.x, t.y) in true_tiles
                                        for t in watch.with_data(fc_chain)), 20)
    t_fc = next(t for t in watch.with_data(fc_chain) if (t.z, t.x, t.y) in true_tiles)
    t_tc = true_tiles[(t_fc.z, t_fc.x, t_fc.y)]
    assert not np.array_equal(t_fc.pixels, t_tc.pixels)
    activity.wait()
    page.screenshot(path=str(artifacts / "ui-4-false-colour.png"))

    # 5. auto stretch from the visible pixels: another chain, tiles with data.
    _tab(page, activity, "Stretch")
    page.get_by_role("button", name="Auto stretch (visible pixels)").click()
    seen = set(watch.chains())
    assert watch.wait(page, lambda: _new_chain(watch, seen), 20)
    st_chain = watch.chains()[-1]
    assert watch.wait(page, lambda: len(watch.with_data(st_chain)) >= 1, 20)
    activity.wait()
    page.screenshot(path=str(artifacts / "ui-5-stretch.png"))

    # 6. the copied link reproduces the view.
    assert watch.wait(page, lambda: _chain_in_url(page) == st_chain, 10), page.url
    link = page.url
    other = page.context.new_page()
    watch2 = TileWatch().attach(other)
    other_activity = Activity(other)
    other.goto(link)
    assert watch2.wait(other, lambda: len(watch2.with_data(st_chain)) >= 1, 30), watch2.chains()
    q1, q2 = parse_qs(urlparse(link).query), None
    watch2.wait(other, lambda: "center" in parse_qs(urlparse(other.url).query), 10)
    q2 = parse_qs(urlparse(other.url).query)
    assert q2["chain"] == q1["chain"] and q2["items"] == q1["items"]
    c1 = [float(v) for v in q1["center"][0].split(",")]
    c2 = [float(v) for v in q2["center"][0].split(",")]
    assert abs(c1[0] - c2[0]) < 1e-3 and abs(c1[1] - c2[1]) < 1e-3
    assert abs(float(q1["zoom"][0]) - float(q2["zoom"][0])) < 0.05
    other_activity.wait()
    other.screenshot(path=str(artifacts / "ui-6-reloaded-link.png"))
    other.close()

    # 7. a bad expression shows a message; the map keeps the last good layer.
    _tab(page, activity, "Display")
    page.get_by_text("Band math", exact=True).click()
    activity.wait()
    box = page.get_by_placeholder("(nir - red) / (nir + red)")
    box.fill("nir +* red")
    box.press("Enter")
    alert = page.get_by_text("malformed expression", exact=False).first
    alert.wait_for(timeout=10000)
    page.screenshot(path=str(artifacts / "ui-7-bad-expression.png"))
    assert _chain_in_url(page) != ""
