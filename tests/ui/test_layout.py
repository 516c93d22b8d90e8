"""Issue 14 item 8 (part): the map keeps its size as layers are added; the results table
shows Cloud % without scrolling sideways; the collection's title shows next to its id; the
Display tab says what is shown in plain words, the chain's JSON on demand; the presets are
one choice (a pressed button), not a column of checkbox-like squares."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from idle import Activity
from tiles import LOADED_JS, TileWatch, click_tab

pytestmark = pytest.mark.ui


def _map_height(page) -> float:
    box = page.locator(".bk-Canvas, .bk-canvas").first.bounding_box()
    return box["height"]


def test_map_size_table_titles_and_plain_words(server, page, artifacts):
    watch = TileWatch().attach(page)
    page.goto(server + "/")
    assert watch.wait(page, lambda: len(watch.with_data()) >= 1, 30)
    page.wait_for_function(LOADED_JS, timeout=30_000)
    page.activity.wait(quiet=0.3)
    first = _map_height(page)
    # collections with their titles
    page.get_by_text("Sentinel-2 L3A monthly composites (demo: Bouconne, 2018)").wait_for(
        timeout=10_000)
    # Cloud % in view in the results table
    page.get_by_role("button", name="Search", exact=True).click()
    page.locator(".tabulator-row").first.wait_for(timeout=15_000)
    table = page.locator(".tabulator").first.bounding_box()
    cloud = page.locator(".tabulator-col", has_text="Cloud %").first.bounding_box()
    assert cloud["x"] + cloud["width"] <= table["x"] + table["width"] + 1, (cloud, table)
    # plain words, JSON on demand
    click_tab(page, "Display")
    page.get_by_text("Shown: Sentinel-2 L3A monthly composites, 2018-11-15, True colour").wait_for(
        timeout=10_000)
    # presets: one choice, one pressed button
    pressed = page.locator(".bk-btn-group .bk-btn.bk-active")
    assert pressed.count() == 1 and pressed.first.inner_text() == "True colour"
    page.get_by_role("button", name="Show the chain's JSON").click()
    page.get_by_text('"sentinel-2-l3a"').first.wait_for(timeout=10_000)  # in the JSON
    page.screenshot(path=str(artifacts / "ui-layout-display.png"))

    # the same view with one more layer (a user-function layer from a link): same map size
    chain = parse_qs(urlparse(page.url).query)["chain"][0]
    other = page.context.new_page()
    other_activity = Activity(other)
    other.goto(page.url + f"&fn={chain}")
    other.wait_for_function(LOADED_JS, timeout=30_000)
    other.get_by_text("user function").first.wait_for(timeout=15_000)
    other_activity.wait(quiet=0.3)
    assert abs(_map_height(other) - first) <= 2, (_map_height(other), first)
    other.screenshot(path=str(artifacts / "ui-layout-layers.png"))
    other.locator("select").first.select_option("landsat-sr")  # its title follows
    other.get_by_text("Landsat 5/7 surface reflectance").first.wait_for(timeout=10_000)
    other.close()
