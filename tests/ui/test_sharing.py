"""Sharing in real Chromium over the demo catalog: the standalone HTML page opened from
file:// shows tiles with data; the Exports tab's link reproduces the view (centre, zoom,
scenes, bands and stretch) in a fresh browser context; the embed view, in an iframe of a page
from another origin, shows the map and legend without the sidebar."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from tiles import TileWatch, click_tab

from engine.chain import Chain

pytestmark = pytest.mark.ui


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    yield ctx
    ctx.close()


def _stretched_chain(server) -> Chain:
    """The first demo Sentinel-2 L1C scene in false colour with an unusual stretch."""
    items = httpx.get(f"{server}/api/search", params={"collection": "sentinel-2-l1c"},
                      timeout=30).json()
    item = items["features"][0]["id"]
    chain = Chain.from_json({
        "source": {"collection": "sentinel-2-l1c", "ids": [item], "mosaic": "latest"},
        "steps": [{"name": "bands", "bands": ["B08", "B04", "B03"]},
                  {"name": "scale", "min": [150.0, 100.0, 100.0], "max": [3900.0, 2400.0, 2100.0],
                   "gamma": 1.2}]})
    assert httpx.post(f"{server}/api/chains", content=chain.to_json(), timeout=30,
                      headers={"Content-Type": "application/json"}).status_code == 201
    return chain


def test_exported_html_opens_from_disk_with_tiles(server, context, tmp_path, artifacts):
    chain = _stretched_chain(server)
    path = chain.export_html(tmp_path / "false-colour.html", service_url=server)
    page = context.new_page()
    watch = TileWatch().attach(page)
    page.goto(path.as_uri())
    assert watch.wait(page, lambda: len(watch.with_data(chain.id)) >= 2, 30), watch.tiles[:4]
    assert page.evaluate("window.eoxExport.tiles.loaded") >= 2
    assert chain.describe() in page.locator(".eox-info").inner_text()
    assert "R B08" in page.locator(".eox-legend").inner_text()
    page.screenshot(path=str(artifacts / "ui-sharing-1-standalone.png"))


def test_link_reproduces_the_view_and_embed_hides_the_sidebar(server, context, browser,
                                                               tmp_path, artifacts):
    chain = _stretched_chain(server)
    page = context.new_page()
    shown = TileWatch().attach(page)
    page.goto(f"{server}/?chain={chain.id}&center=12.61,52.49&zoom=12.5")
    assert shown.wait(page, lambda: len(shown.with_data(chain.id)) >= 1, 30), shown.chains()
    click_tab(page, "Exports")
    link_box = page.get_by_label("Link to this view")
    link_box.wait_for(timeout=20000)
    page.wait_for_function("() => new URLSearchParams(location.search).get('chain')", timeout=20000)
    link = link_box.input_value()
    assert link == page.url
    query = parse_qs(urlparse(link).query)
    assert query["chain"] == [chain.id]  # bands and stretch are in the chain's JSON
    embed = page.get_by_label("Embed in a web page (iframe)").input_value()
    assert "embed=true" in embed and f"chain={chain.id}" in embed
    page.screenshot(path=str(artifacts / "ui-sharing-2-exports-tab.png"))

    # the link in a fresh context: same chain (so same bands and stretch), centre and zoom
    fresh = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        other = fresh.new_page()
        watch = TileWatch().attach(other)
        other.goto(link)
        assert watch.wait(other, lambda: len(watch.with_data(chain.id)) >= 1, 30), \
            watch.chains()
        assert watch.wait(other, lambda: "center" in parse_qs(urlparse(other.url).query), 10)
        again = parse_qs(urlparse(other.url).query)
        assert again["chain"] == [chain.id] and again["items"] == query["items"]
        c1 = [float(v) for v in query["center"][0].split(",")]
        c2 = [float(v) for v in again["center"][0].split(",")]
        assert abs(c1[0] - c2[0]) < 1e-3 and abs(c1[1] - c2[1]) < 1e-3
        assert abs(float(query["zoom"][0]) - float(again["zoom"][0])) < 0.05
    finally:
        fresh.close()

    # the embed view in an iframe of a page from another origin (file://)
    src = embed.split('src="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    host = tmp_path / "host.html"
    host.write_text(f"<html><body><h1>Elsewhere</h1><iframe src='{src}' width='900' "
                    "height='600'></iframe></body></html>")
    outer = context.new_page()
    watch = TileWatch().attach(outer)
    outer.goto(host.as_uri())
    assert watch.wait(outer, lambda: len(watch.with_data(chain.id)) >= 1, 30), watch.chains()
    inner = outer.frames[1]
    inner.wait_for_selector("canvas", timeout=20000)
    assert inner.locator(".bk-tab").count() == 0  # no tabs, no sidebar
    assert inner.locator("#sidebar, .sidenav").count() == 0
    outer.screenshot(path=str(artifacts / "ui-sharing-3-embed.png"))
