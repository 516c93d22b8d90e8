"""Issue 14 item 6: Functions have their own tab; on Landsat (no blue/green band) the cloud
mask and max-NDI examples, which raised IndexError there, are not offered and the tab says
why; an applied function travels in the share link: a new tab on that URL draws it again."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from tiles import TileWatch, click_tab

pytestmark = pytest.mark.ui


def test_landsat_examples_and_the_link_carries_the_function(server, page, artifacts):
    watch = TileWatch().attach(page)
    page.goto(server + "/")
    click_tab(page, "Search")
    page.locator("select").first.select_option("landsat-sr")
    # the server took the collection (the URL says so) before the search: a row clicked
    # while the switch's results are still coming is replaced by them, unselected (seen
    # under load: "Function apply: select at least one scene")
    page.wait_for_url(lambda url: "collection=landsat-sr" in url, timeout=30_000)
    page.activity.wait()
    page.get_by_role("button", name="Search", exact=True).click()
    row = page.locator(".tabulator-row", has_text="2013-").first
    row.wait_for(timeout=30_000)
    row.locator("input[type=checkbox]").click()
    page.wait_for_url(lambda url: "items=" in url, timeout=30_000)  # the server has it
    page.activity.wait()
    click_tab(page, "Functions")
    page.get_by_text("Not offered for this collection").first.wait_for(timeout=15_000)
    assert page.get_by_text("cloudmask (needs blue, green)").count() == 1
    examples = page.locator("select", has=page.locator("option", has_text="ndvi")).first
    options = examples.locator("option").all_inner_texts()
    assert "ndvi" in options and "cloudmask" not in options and "maxNDI" not in options
    examples.select_option("ndvi")
    page.activity.wait()
    before = set(watch.chains())
    page.get_by_role("button", name="Apply", exact=True).click()
    try:
        page.get_by_text("Applied", exact=False).first.wait_for(timeout=60_000)
    finally:
        page.screenshot(path=str(artifacts / "ui-functions-landsat-apply.png"))
    assert watch.wait(page, lambda: any(c not in before for c in watch.chains()), 20)
    layer = next(c for c in watch.chains() if c not in before)
    page.screenshot(path=str(artifacts / "ui-functions-landsat.png"))
    assert watch.wait(page, lambda: parse_qs(urlparse(page.url).query).get("fn") == [layer], 10)

    other = page.context.new_page()
    watch2 = TileWatch().attach(other)
    other.goto(page.url)
    assert watch2.wait(other, lambda: len(watch2.with_data(layer)) >= 1, 40), watch2.chains()
    other.close()
