"""A 4096 x 4096 COG added as a large raster layer in the served dashboard: it is drawn, and
zooming in re-renders it from a finer overview. Own server: an empty catalog and a data dir
holding the fixture COG (raster paths are allowed in the data dir by default)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from tiles import click_tab, serve_app

pytestmark = pytest.mark.ui

N = 4096
# value = row * N + col: one screen pixel's step along x is the source pixels it covers
STATS_JS = """(name) => {
  const r = Bokeh.documents[0].get_model_by_name('eox-raster-' + name);
  if (!r) return null;
  const d = r.data_source.data;
  if (!d.image || !d.image.length) return {empty: true};
  const img = d.image[0], v = d.v0[0];
  const [h, w] = img.shape;
  const steps = [];
  let detail = Infinity;  // smallest non-zero step: the read overview's factor
  for (let row = 0; row < h; row += 7) for (let c = 0; c + 1 < w; c += 5) {
    const a = v[row * w + c], b = v[row * w + c + 1];
    if (Number.isFinite(a) && Number.isFinite(b)) {
      steps.push(Math.abs(b - a));
      if (a !== b) detail = Math.min(detail, Math.abs(b - a));
    }
  }
  steps.sort((p, q) => p - q);
  let opaque = 0;
  for (let i = 0; i < img.length; i++) if ((img[i] >>> 24) > 0) opaque++;
  return {w, h, x: d.x[0], dw: d.dw[0], dh: d.dh[0], step: steps[Math.floor(steps.length / 2)],
          detail: Number.isFinite(detail) ? detail : null, opaque};
}"""


@pytest.fixture(scope="module")
def raster_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("large-raster")
    data = root / "data"
    data.mkdir()
    rows, cols = np.mgrid[0:N, 0:N]
    with rasterio.open(data / "big.tif", "w", driver="COG", width=N, height=N, count=1,
                       dtype="float32", crs="EPSG:3857", nodata=np.nan,
                       transform=from_origin(1_000_000, 6_000_000, 10, 10), compress="DEFLATE",
                       predictor=3, blocksize=512, overviews="AUTO",
                       overview_resampling="nearest") as dst:
        dst.write((rows * N + cols).astype(np.float32), 1)
    with serve_app(root / "catalog.sqlite", data, root, cwd=root) as base:
        yield base


def _wait(page, check, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        page.wait_for_timeout(200)
    return check()


def test_large_raster_is_drawn_and_rerendered_on_zoom(raster_server, browser, artifacts):
    ctx = browser.new_context(viewport={"width": 1500, "height": 950})
    page = ctx.new_page()
    try:
        page.goto(raster_server + "/")
        click_tab(page, "Batch")
        path = page.get_by_placeholder("dem.tif, or a path inside the raster folders")
        path.wait_for(timeout=20000)
        path.fill("big.tif")
        page.get_by_role("button", name="Add layer").click()

        def drawn():
            s = page.evaluate(STATS_JS, "big.tif")
            # drawn once the map has zoomed to the layer (it then fills most of the view)
            return s if s and not s.get("empty") and s["w"] > 400 else None

        first = _wait(page, drawn, 30)
        assert first, page.evaluate(STATS_JS, "big.tif")
        page.wait_for_timeout(800)
        first = page.evaluate(STATS_JS, "big.tif")
        # screen-sized, from an overview: several source pixels per screen pixel
        assert first["w"] <= 1500 and first["step"] >= 4 and first["detail"] >= 4, first
        assert first["opaque"] > 0.9 * first["w"] * first["h"]

        canvas = max((c for c in page.locator("canvas").all() if c.bounding_box()),
                     key=lambda c: c.bounding_box()["width"])
        box = canvas.bounding_box()
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB"))
        page.screenshot(path=str(artifacts / "ui-large-raster-1.png"))
        background = np.array([0x1b, 0x22, 0x30])
        painted = np.abs(shot.astype(int) - background).sum(axis=2) > 30
        assert painted.mean() > 0.3, painted.mean()  # the raster covers most of the map

        # zoom in with the mouse wheel: the server re-reads a finer overview
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        for _ in range(6):
            page.mouse.wheel(0, -300)
            page.wait_for_timeout(150)

        # Zoomed past full resolution (a source pixel spans several screen pixels), most
        # neighbouring screen pixels show the same source pixel: the median step is then 0,
        # and the finer detail shows in the smallest non-zero step, the overview factor.
        def finer():
            s = page.evaluate(STATS_JS, "big.tif")
            return s if s and s.get("detail") and s["detail"] < first["detail"] else None

        zoomed = _wait(page, finer, 20)
        assert zoomed, (first, page.evaluate(STATS_JS, "big.tif"))
        assert zoomed["step"] < first["step"]
        # the overview read matches the screen: less than one overview level (2x) coarser
        # than its source pixels per screen pixel (GDAL may take a slightly coarser one)
        for s in (first, zoomed):
            # the screen needs the coarser of the two axes (one read serves the whole view)
            need = max(1.0, s["dw"] / s["w"] / 10, s["dh"] / s["h"] / 10)
            assert s["detail"] < 2 * need, s
        assert zoomed["dw"] < first["dw"]  # a smaller area ...
        assert zoomed["w"] * zoomed["h"] > 0.5 * first["w"] * first["h"]  # ... as many pixels
        page.wait_for_timeout(500)
        page.screenshot(path=str(artifacts / "ui-large-raster-2.png"))
    finally:
        ctx.close()
