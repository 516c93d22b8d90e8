"""A timelapse played on the map in real Chromium: export the view in the Time tab, click
"Show on map", and the frame shown changes by itself in the browser (the glyph's shown row and
date read from BokehJS over time, no click); screenshots of the video's area at two frames
differ, and each matches the frame the glyph says it shows rather than the other."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect
from tiles import click_tab

pytestmark = pytest.mark.ui

LAYER = "Timelapse"

#: The video layer's state in the page: shown row, its date, the number of frames, the
#: video's box in CSS pixels of the page (from the map's ranges) and the player's value.
_STATE_JS = """(name) => {
  for (const doc of window.Bokeh.documents) {
    const flt = doc.get_model_by_name("eox-video-filter:" + name);
    const src = doc.get_model_by_name("eox-video-data:" + name);
    const label = doc.get_model_by_name("eox-video-date:" + name);
    if (flt == null || src == null || label == null) continue;
    const fig = doc.get_model_by_name("eox-map");
    const view = Bokeh.index.find_one(fig);
    const r = view.el.getBoundingClientRect(), f = view.frame.bbox;
    const fx = (x) => r.left + f.left + (x - fig.x_range.start) / (fig.x_range.end - fig.x_range.start) * f.width;
    const fy = (y) => r.top + f.top + (fig.y_range.end - y) / (fig.y_range.end - fig.y_range.start) * f.height;
    const d = src.data, i = flt.indices[0];
    const x0 = d.x[0], y1 = d.y[0], x1 = x0 + d.w[0], y0 = y1 - d.h[0];
    // the video's box on the page, within the map's frame
    const box = [Math.max(fx(x0), r.left + f.left), Math.max(fy(y1), r.top + f.top),
                 Math.min(fx(x1), r.left + f.left + f.width), Math.min(fy(y0), r.top + f.top + f.height)];
    return {index: i, n: d.url.length, date: label.text, url: d.url[i], box: box,
            video: [fx(x0), fy(y1), fx(x1), fy(y0)]};
  }
  return null;
}"""


def _state(page):
    return page.evaluate(_STATE_JS, LAYER)


def _decode(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
                      .convert("RGB")).astype(float)


def _clip(box) -> dict:
    """The middle of the video's area on screen (away from edges, labels and the toolbar)."""
    x0, y0, x1, y1 = box
    pad_x, pad_y = (x1 - x0) * 0.2, (y1 - y0) * 0.25
    return {"x": x0 + pad_x, "y": y0 + pad_y, "width": x1 - x0 - 2 * pad_x,
            "height": y1 - y0 - 2 * pad_y}


def _shot(page, clip: dict) -> np.ndarray:
    img = Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")
    return np.asarray(img).astype(float)


def _mismatch(shot: np.ndarray, frame: np.ndarray, clip: dict, video) -> float:
    """Mean absolute difference between a screenshot of ``clip`` and the part of ``frame``
    (drawn over the page rectangle ``video``) under it."""
    h, w = frame.shape[:2]
    vx0, vy0, vx1, vy1 = video
    sx, sy = w / (vx1 - vx0), h / (vy1 - vy0)
    left, top = (clip["x"] - vx0) * sx, (clip["y"] - vy0) * sy
    part = Image.fromarray(frame.astype(np.uint8)).crop(
        (round(left), round(top), round(left + clip["width"] * sx),
         round(top + clip["height"] * sy))).resize((shot.shape[1], shot.shape[0]),
                                                   Image.BILINEAR)
    return float(np.abs(np.asarray(part).astype(float) - shot).mean())


def test_timelapse_plays_on_the_map(server, page, artifacts):
    page.goto(server + "/")
    click_tab(page, "Time")
    page.get_by_text("date(s) of sentinel-2-l3a in this view").first.wait_for(timeout=20000)
    page.get_by_role("button", name="Export timelapse of this view").click()
    show = page.get_by_role("button", name="Show on map")
    expect(show).to_be_enabled(timeout=40000)  # enabled once the export is written
    assert "Timelapse ready" in page.locator("p", has_text="Timelapse ready").last.inner_text()
    show.click()
    page.wait_for_function(f"({_STATE_JS})('{LAYER}') !== null", timeout=10000)
    page.wait_for_timeout(300)

    # the player runs in the browser: the shown row changes over time with no click
    first = _state(page)
    assert first["n"] >= 3, first
    seen = {first["index"]: first["date"]}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(seen) < 3:
        st = _state(page)
        seen.setdefault(st["index"], st["date"])
        page.wait_for_timeout(100)
    assert len(seen) >= 3, seen  # at least two frame changes, dates follow
    assert len(set(seen.values())) == len(seen), seen

    # the map's pixels change with it: a screenshot of the video's area at two frames (the
    # player paused for each shot, so the glyph's frame is known while the shot is taken)
    player = page.locator(".eox-video-player")

    def paused_shot() -> tuple[dict, np.ndarray]:
        player.locator("button.pause").click()
        page.wait_for_timeout(400)  # the last frame's image decoded and painted
        st = _state(page)
        shot = _shot(page, _clip(st["box"]))
        assert _state(page)["index"] == st["index"]  # still paused on it
        return st, shot

    sa, a = paused_shot()
    player.locator("button.play").click()
    page.wait_for_function(f"({_STATE_JS})('{LAYER}').index !== {sa['index']}", timeout=10000)
    sb, b = paused_shot()
    assert sa["index"] != sb["index"] and sa["date"] != sb["date"]
    assert float(np.abs(a - b).mean()) > 2.0  # the map shows different pictures
    # ... and each screenshot is the frame the glyph says it shows, not the other one
    fa, fb = _decode(sa["url"]), _decode(sb["url"])
    clip, video = _clip(sa["box"]), sa["video"]
    assert _mismatch(a, fa, clip, video) < _mismatch(a, fb, clip, video)
    assert _mismatch(b, fb, clip, video) < _mismatch(b, fa, clip, video)
    page.screenshot(path=str(artifacts / "ui-time-4-video-on-map.png"))
