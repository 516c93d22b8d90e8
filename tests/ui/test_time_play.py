"""Issue 14, item 7, in Chromium: playing at 2 fps shows every date on the map in turn (no
date skipped), each date's tiles requested ahead of it (prefetch), and the player's buttons
say what they do on hover."""

from __future__ import annotations

import time
from itertools import pairwise

import httpx
import pytest
from tiles import TileWatch, click_tab

pytestmark = pytest.mark.ui

#: The demo collection opened first (newest scene) has 7 dates in its view.
L3A_DATES = 7

#: The scene layer's tile template every 25 ms, as the browser's map has it.
RECORD_JS = """() => {
  window.__eox_layer = [];
  setInterval(() => {
    const r = Bokeh.documents[0].get_model_by_name('eox-scenes');
    const u = r && r.visible ? r.tile_source.url : '';
    const l = window.__eox_layer;
    if (u && (!l.length || l[l.length - 1][0] !== u)) l.push([u, performance.now()]);
  }, 25);
  return performance.now();
}"""

TOOLTIPS = {"slower": "Slower", "previous": "Previous date", "pause": "Pause",
            "play": "Play", "next": "Next date", "faster": "Faster"}


def _chain(url: str) -> str:
    return url.split("/chains/")[1].split("/")[0]


def _day_of(catalog, chain_json: dict) -> str:
    """The UTC day of the scenes a frame chain reads."""
    from engine.catalog import SQLiteCatalog
    from engine.collection import Collection

    src = chain_json["source"]
    with SQLiteCatalog(catalog) as cat:
        items = Collection(src["collection"], catalog=cat).ids(src["ids"]).items()
    return min(i.datetime for i in items).date().isoformat()


def test_play_at_2_fps_shows_every_date_with_tiles_requested_ahead(server, page,
                                                                    demo_catalog):
    watch = TileWatch().attach(page)
    requested: dict[str, float] = {}  # chain -> when its first tile was requested
    page.on("request", lambda r: requested.setdefault(_chain(r.url), time.monotonic())
            if "/chains/" in r.url and "/tiles/" in r.url else None)
    page.goto(server + "/")
    assert watch.wait(page, lambda: bool(watch.with_data()), 40)
    click_tab(page, "Time")
    page.get_by_text(f"{L3A_DATES} date(s) of sentinel-2-l3a in this view").wait_for(
        timeout=20_000)

    # tooltips: hovering a player button shows what it does
    for cls, text in TOOLTIPS.items():
        button = page.locator(f"button.{cls}").first
        button.hover()
        shown = button.evaluate("(b) => getComputedStyle(b, '::after').content")
        assert shown == f'"{text}"', (cls, shown)
        assert button.get_attribute("aria-label") in (None, text)

    page.get_by_role("button", name="2 fps").click()
    page.wait_for_timeout(300)
    t_js = page.evaluate(RECORD_JS) / 1000
    offset = time.monotonic() - t_js  # JS performance.now() seconds -> time.monotonic()
    page.locator("button.play").first.click()
    page.wait_for_timeout(round((L3A_DATES + 2) * 500 + 1500))  # a loop at 2 fps, and more
    page.locator("button.pause").first.click()
    layer = [(_chain(u), t / 1000 + offset) for u, t in page.evaluate("window.__eox_layer")]

    # the dates of the chains the map showed, in order
    dates: dict[str, str] = {}
    for chain, _ in layer:
        if chain not in dates:
            body = httpx.get(f"{server}/api/chains/{chain}", timeout=10).json()
            dates[chain] = _day_of(demo_catalog, body)
    shown = [dates[c] for c, _ in layer]
    distinct = list(dict.fromkeys(shown))
    assert len(distinct) == L3A_DATES, shown  # every date was on the map during the loop
    # in the slider's order: each date follows the one before it (none skipped)
    order = sorted(distinct)
    steps = [(order.index(b) - order.index(a)) % L3A_DATES for a, b in pairwise(shown)]
    assert all(s == 1 for s in steps), f"{shown} {steps}"
    # each date shown had its tiles requested before the map switched to it (prefetch;
    # the first date, already displayed, needs none ahead), and they came with pixels
    late = [(dates[c], round(requested[c] - at, 2) if c in requested else None)
            for c, at in layer[1:] if c not in requested or requested[c] > at]
    assert not late, late
    assert watch.wait(page, lambda: all(watch.with_data(c) for c, _ in layer), 30), [
        dates[c] for c, _ in layer if not watch.with_data(c)]
