"""Issue 15 item 3 in Chromium: over a catalog where the scene cap is hit (set low with
EOX_TILE_MAX_SCENES), the map's tiles carry X-EOX-Notice and the dashboard shows that
notice once as a notification (not once per tile or per pan)."""

from __future__ import annotations

import httpx
import pytest
from tiles import TileWatch, serve_app

from engine.chain import Chain

pytestmark = pytest.mark.ui

CENTRE = (-106.914, 40.288)  # the demo Landsat scenes (all on one small footprint)
TEXT = "5 scenes overlap a tile of this view; the first 2 in mosaic order are shown"
#: counts the distinct toasts that ever showed TEXT (a toast leaves after a few seconds)
COUNT_TOASTS = """(text) => {
  window.eoxCapToasts = 0;
  new MutationObserver(() => {
    for (const t of document.querySelectorAll('.notyf__toast:not([data-eox-seen])')) {
      if (!t.textContent.includes(text)) continue;
      t.setAttribute('data-eox-seen', '1');
      window.eoxCapToasts += 1;
    }
  }).observe(document.documentElement, {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def capped(demo_catalog, tmp_path_factory):
    """`eoexplorer serve` over the demo catalog with at most 2 scenes per tile."""
    with serve_app(demo_catalog, demo_catalog.parent / "data",
                   tmp_path_factory.mktemp("serve-cap"),
                   env={"EOX_TILE_MAX_SCENES": "2"}) as base:
        yield base


def test_cut_tiles_are_told_once_in_the_dashboard(capped, page):
    items = httpx.get(f"{capped}/api/search", params={"collection": "landsat-sr", "limit": 5},
                      timeout=30).json()["features"]
    ids = [f["id"] for f in items][:5]
    assert len(ids) == 5
    chain = Chain.from_json({
        "source": {"collection": "landsat-sr", "ids": ids, "mosaic": "latest"},
        "steps": [{"name": "bands", "bands": ["swir1", "nir", "red"]},
                  {"name": "scale", "min": [0.0, 0.0, 0.0], "max": [4000.0, 4000.0, 3000.0]}]})
    r = httpx.post(f"{capped}/api/chains", content=chain.to_json(), timeout=30,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    notices = []
    page.on("response", lambda resp: notices.append(resp.headers.get("x-eox-notice"))
            if "/tiles/" in resp.url and resp.status == 200 else None)
    watch = TileWatch().attach(page)
    page.goto(f"{capped}/?chain={chain.id}&center={CENTRE[0]},{CENTRE[1]}&zoom=13")
    page.evaluate(COUNT_TOASTS, TEXT)
    assert watch.wait(page, lambda: bool(watch.with_data()), 40), watch.chains()
    told = lambda: page.evaluate("window.eoxCapToasts")
    assert watch.wait(page, lambda: told() >= 1, 20)
    # the tiles themselves say it too (the header the page cannot read from an <img>)
    assert any(n and n.startswith(TEXT.replace("a tile of this view", "this tile"))
               for n in notices), notices[:5]
    canvas = max((c for c in page.locator("canvas").all() if c.bounding_box()),
                 key=lambda c: c.bounding_box()["width"])  # the map
    box = canvas.bounding_box()
    zooms = {t.z for t in watch.tiles}
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(3):  # zoom out: another view, the same cut
        page.mouse.wheel(0, 300)
        page.wait_for_timeout(150)
    assert watch.wait(page, lambda: {t.z for t in watch.with_data()} - zooms, 30)
    page.wait_for_timeout(2000)  # a second toast would come within a round trip
    assert told() == 1
