"""Issue 14, item 5, in Chromium: the banner clears when its cause is fixed; a repeated
warning is one toast, and toasts stay off the legend and the layer list under the map."""

from __future__ import annotations

import pytest
from tiles import TileWatch, click_tab

pytestmark = pytest.mark.ui

def _banner(page):
    """The banner of a display error (its text ends with the advice to fix it)."""
    return page.locator("div", has_text="or fix the expression").last

def test_banner_clears_and_toasts_do_not_pile_up(server, page):
    watch = TileWatch().attach(page)
    page.goto(server + "/")
    assert watch.wait(page, lambda: bool(watch.with_data()), 40)
    click_tab(page, "Display")
    page.get_by_text("Band math", exact=True).first.click()
    box = page.get_by_placeholder("(nir - red) / (nir + red)").first
    box.fill("nir +* red")
    box.press("Enter")
    _banner(page).wait_for(state="visible", timeout=15_000)
    box.fill("(nir - red) / (nir + red)")  # the cause fixed: the banner goes
    box.press("Enter")
    _banner(page).wait_for(state="hidden", timeout=15_000)

    # the same warning four times: one toast, at the top of the page
    click_tab(page, "Zoom")
    page.get_by_placeholder("e.g. Toulouse").first.fill("")
    for _ in range(4):
        page.get_by_role("button", name="Zoom to place", exact=True).click()
        page.activity.wait()  # each click answered before the next
    toasts = page.locator(".notyf__toast", has_text="type a place name first")
    assert watch.wait(page, lambda: toasts.count() >= 1, 10)
    page.wait_for_timeout(500)  # no further toast (an idle wait can outlast the toast itself)
    assert toasts.count() == 1
    toast = toasts.first.bounding_box()
    map_box = max((c.bounding_box() for c in page.locator("canvas").all()[:6]
                   if c.bounding_box()), key=lambda b: b["width"] * b["height"])
    assert toast["y"] + toast["height"] < map_box["y"] + map_box["height"] / 2  # top half
