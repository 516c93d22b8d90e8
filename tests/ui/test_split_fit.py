"""Issue 14 item 8 (split view): its toggle shows its state, and with the split maps shown on a
small window the main map is still in sight below them and the main area scrolls to the rest."""

from __future__ import annotations

import time

import pytest
from tiles import LOADED_JS, TileWatch, click_tab

pytestmark = pytest.mark.ui

SCROLL_MAIN = "() => { const m = document.getElementById('main'); m.scrollTop = m.scrollHeight;" \
              " return m.scrollTop; }"


def _maps(page) -> list[dict]:
    """Bounding boxes (window coordinates) of the map canvases, top first."""
    boxes = [c.bounding_box() for c in page.locator("canvas").all()]
    found = {(b["x"], b["y"], b["width"], b["height"]): b for b in boxes
             if b and b["width"] > 200 and b["height"] > 150}
    return sorted(found.values(), key=lambda b: (b["y"], b["x"]))


def _settled_maps(page, holds, timeout: float = 10.0) -> list[dict]:
    """The map boxes once Bokeh has laid them out: two reads a frame apart agree and
    ``holds(maps)`` is true (or the timeout passed: the caller's asserts then say why)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        maps = _maps(page)
        if (maps == last and holds(maps)) or time.monotonic() > deadline:
            return maps
        last = maps
        page.wait_for_timeout(50)


def _fits(maps: list[dict]) -> bool:
    """The split maps are above the main map, do not overlap it, and it starts in the upper
    70 % of the 720-pixel window."""
    if len(maps) < 2:
        return False
    split, main = maps[0], maps[-1]
    return (split["y"] < main["y"] and split["y"] + split["height"] <= main["y"] + 1
            and main["y"] < 720 * 0.7)


def _background(button) -> tuple[int, ...]:
    """The button's computed background colour as (r, g, b); white when transparent."""
    rgba = button.evaluate("el => getComputedStyle(el).backgroundColor")
    parts = [float(v) for v in rgba[rgba.index("(") + 1:-1].split(",")]
    if len(parts) == 4 and parts[3] == 0:
        return (255, 255, 255)
    return tuple(int(v) for v in parts[:3])


def test_split_toggle_state_and_fit(server, page, artifacts):
    page.set_viewport_size({"width": 1280, "height": 720})
    watch = TileWatch().attach(page)
    page.goto(server + "/")
    assert watch.wait(page, lambda: len(watch.with_data()) >= 1, 30)
    page.wait_for_function(LOADED_JS, timeout=90_000)  # a condition; slow late in a full run
    click_tab(page, "Split", timeout=60_000)
    off = page.get_by_role("button", name="Show split view (off)")
    off.wait_for(timeout=10_000)
    light = _background(off)  # outline: a light button
    off.click()
    on = page.get_by_role("button", name="Hide split view (on)")
    on.wait_for(timeout=10_000)
    dark = _background(on)  # solid: filled with the accent colour
    assert sum(dark) < sum(light) - 150, (light, dark)
    page.locator("canvas").nth(2).wait_for(timeout=10_000)
    for mode in ("Side by side", "Swipe"):
        page.get_by_role("button", name=mode, exact=True).click()
        page.activity.wait()
        maps = _settled_maps(page, _fits)  # Bokeh has laid the figures out
        split, main = maps[0], maps[-1]
        assert split["y"] < main["y"], maps
        # the split maps do not overlap the main map, which starts in the upper 70 %
        assert split["y"] + split["height"] <= main["y"] + 1, (mode, maps)
        assert main["y"] < 720 * 0.7, (mode, maps)
        page.screenshot(path=str(artifacts / f"ui-split-fit-{mode[:4].lower()}.png"))
    # the main area scrolls to show the whole main map
    assert page.evaluate(SCROLL_MAIN) > 0
    main = _settled_maps(page, lambda m: bool(m) and m[-1]["y"] + m[-1]["height"] <= 720)[-1]
    assert main["y"] + main["height"] <= 720, main
    on.scroll_into_view_if_needed()
    on.click()
    page.get_by_role("button", name="Show split view (off)").wait_for(timeout=10_000)
