"""First open of the served dashboard: the view is in the address bar at once (a link copied
right away reproduces it in a fresh browser), the page asks nothing from the internet, an
empty map makes no broken requests, and it all works behind a path prefix."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from idle import Activity
from tiles import LOADED_JS, TileWatch, click_tab

pytestmark = pytest.mark.ui

VIEWPORT = {"width": 1500, "height": 950}


class Requests:
    """Every request a page makes and every one that failed."""

    def __init__(self, page) -> None:
        self.urls: list[str] = []
        self.failed: list[str] = []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("requestfailed", lambda r: None if r.failure == "net::ERR_ABORTED"
                else self.failed.append(f"{r.url} {r.failure}"))
        page.on("websocket", lambda ws: self.urls.append(ws.url))

    def foreign(self, origin: str) -> list[str]:
        """Requests to anything but ``origin`` (http and ws) or data:/blob: URLs."""
        host = urlparse(origin).netloc
        return [u for u in self.urls
                if not u.startswith(("data:", "blob:")) and urlparse(u).netloc != host]


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def _view(page) -> tuple[float, float, float, float]:
    """x0, x1, y0, y1 of the map (Web Mercator metres), read from Bokeh in the browser."""
    return tuple(page.evaluate("""() => {
        const f = Bokeh.documents[0].get_model_by_name('eox-map');
        return [f.x_range.start, f.x_range.end, f.y_range.start, f.y_range.end] }"""))


def test_first_open_link_reproduces_the_view_offline(server, browser):
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    activity = Activity(page)
    requests, watch = Requests(page), TileWatch().attach(page)
    page.goto(server + "/")
    assert watch.wait(page, lambda: bool(watch.with_data()), 30), watch.tiles[:3]
    chain = watch.with_data()[0].chain
    # the view is in the address bar as soon as the first tiles are there
    assert watch.wait(page, lambda: _query(page.url).get("chain") == chain, 5), page.url
    link = page.url
    q = _query(link)
    assert {"center", "zoom", "collection", "items", "chain"} <= set(q)
    view = _view(page)
    page.wait_for_function(LOADED_JS, timeout=30_000)
    tabs = page.locator(".bk-tab")
    for i in range(tabs.count()):  # every tab is built when shown: its resources too
        tabs.nth(i).click()
        activity.wait()  # its content and what that loads
    click_tab(page, "Stretch")
    page.get_by_text("Auto stretch (visible pixels)").wait_for(timeout=15000)
    activity.wait(quiet=0.5)
    assert requests.foreign(server) == [], requests.foreign(server)
    assert requests.failed == [], requests.failed

    fresh = browser.new_context(viewport=VIEWPORT)  # no cookies, no storage, no cache
    other = fresh.new_page()
    requests2, watch2 = Requests(other), TileWatch().attach(other)
    other.goto(link)
    assert watch2.wait(other, lambda: bool(watch2.with_data(chain)), 30), watch2.chains()
    assert watch2.chains() == [chain]  # same layers: the same chain, hence the same stretch
    assert watch2.wait(other, lambda: _query(other.url).get("chain") == chain, 5)
    q2 = _query(other.url)
    assert (q2["items"], q2["collection"]) == (q["items"], q["collection"])
    c1, c2 = ([float(v) for v in x["center"].split(",")] for x in (q, q2))
    assert abs(c1[0] - c2[0]) < 1e-4 and abs(c1[1] - c2[1]) < 1e-4
    assert abs(float(q["zoom"]) - float(q2["zoom"])) < 0.01
    view2 = _view(other)
    pixel = (view[1] - view[0]) / VIEWPORT["width"] * 1.5  # about one screen pixel
    diff = [a - b for a, b in zip(view, view2, strict=True)]
    assert all(abs(d) < 2 * pixel for d in diff), (diff, pixel)
    assert requests2.foreign(server) == [] and requests2.failed == []
    fresh.close()
    ctx.close()


def test_behind_a_prefix_and_with_nothing_selected(prefixed_server, browser):
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    requests, watch = Requests(page), TileWatch().attach(page)
    page.goto(prefixed_server + "/")
    assert watch.wait(page, lambda: bool(watch.with_data()), 30), requests.urls[:5]
    assert watch.wait(page, lambda: "chain=" in page.url, 5), page.url
    prefix = urlparse(prefixed_server).path + "/"
    outside = [u for u in requests.urls if not u.startswith(("data:", "blob:"))
               and not urlparse(u).path.startswith(prefix)]
    assert outside == [], outside  # a proxy forwarding only /eox/ would serve the page

    # A link naming a collection but no scene: an empty map, no tile layer, no broken request.
    empty = ctx.new_page()
    requests2, watch2 = Requests(empty), TileWatch().attach(empty)
    activity2 = Activity(empty)
    empty.goto(prefixed_server + "/?collection=sentinel-2-l1c")
    assert watch2.wait(empty, lambda: "center=" in empty.url, 20), empty.url
    activity2.wait(quiet=0.5)  # nothing more on its way
    assert "items" not in _query(empty.url) and "chain" not in _query(empty.url)
    assert watch2.tiles == [] and requests2.failed == []
    assert not [u for u in requests2.urls if "about:" in u or "{" in u]
    assert requests2.foreign(prefixed_server) == []
    ctx.close()
