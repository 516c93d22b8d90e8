"""The user-function editor in real Chromium over the demo catalog: load the stubble example,
Test -> OK, Apply -> a new map layer whose tiles arrive with data. Screenshot in
tests/artifacts/."""

from __future__ import annotations

import pytest
from idle import Activity
from tiles import TileWatch, click_tab

pytestmark = pytest.mark.ui


def test_stubble_example_test_then_apply(server, browser, artifacts):
    ctx = browser.new_context(viewport={"width": 1500, "height": 950})
    page = ctx.new_page()
    activity = Activity(page)
    try:
        watch = TileWatch().attach(page)
        page.goto(server + "/")
        # the newest demo scene (Sentinel-2 L3A: B04, B06, B08, B11) opens with data
        assert watch.wait(page, lambda: len(watch.with_data()) >= 1, 30), watch.tiles[:5]
        # select it again through the search form (its collection is already chosen)
        assert page.locator("select").first.input_value() == "sentinel-2-l3a"
        page.get_by_role("button", name="Search", exact=True).click()
        row = page.locator(".tabulator-row").first
        row.wait_for(timeout=15_000)
        assert "2018-11-15" in row.inner_text()
        # the opened scene is already selected: a click would unselect it
        if "tabulator-selected" not in (row.get_attribute("class") or ""):
            row.locator("input[type=checkbox]").click()
        page.locator(".tabulator-row.tabulator-selected").first.wait_for(timeout=10_000)
        activity.wait()
        assert "tabulator-selected" in (row.get_attribute("class") or "")
        before = set(watch.chains())
        click_tab(page, "Functions")
        examples = page.locator("select", has=page.locator("option", has_text="stubble"))
        examples.first.select_option("stubble")
        activity.wait()
        page.get_by_role("button", name="Test", exact=True).click()
        ok = page.get_by_text("Test OK: stubble()", exact=False).first
        ok.wait_for(timeout=30_000)
        assert "(4, 256, 256)" in ok.inner_text()

        page.get_by_role("button", name="Apply", exact=True).click()
        page.get_by_text("Applied stubble()", exact=False).first.wait_for(timeout=60_000)
        assert watch.wait(page, lambda: any(c not in before for c in watch.chains()), 20)
        layer = next(c for c in watch.chains() if c not in before)
        assert watch.wait(page, lambda: len(watch.with_data(layer)) >= 1, 60), [
            (t.chain, t.status) for t in watch.tiles[-10:]]
        tile = watch.with_data(layer)[0]
        opaque = tile.pixels[tile.pixels[..., 3] > 0]
        assert (opaque[:, :3] == [0, 255, 0]).all()  # stubble candidates in lime, rest clear
        activity.wait(quiet=0.3)
        page.screenshot(path=str(artifacts / "ui-8-user-function.png"))
    finally:
        ctx.close()
