"""Drawing on the map with the mouse, in real Chromium over the demo catalog: a polygon, a
box and a line drawn as a user draws them (the Draw tab's mode buttons, clicks and drags on
the map's canvas), listed in the Draw table, measured in the Measure tab as an independent
pyproj computation from the clicked pixels says, and a polygon vertex dragged in edit mode.

Bokeh's draw tools start and finish a shape on a *press* (a click held 300 ms); the Draw tab
adds the double-click users expect. Both are driven here.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from pyproj import Geod
from tiles import TileWatch, click_tab

pytestmark = pytest.mark.ui

MODEL = "(name) => Bokeh.documents[0].get_model_by_name(name)"
GEOD = Geod(ellps="WGS84")
R = 6378137.0
#: Bokeh tells a double tap from two taps by 300 ms: wait longer between single clicks.
CLICK_GAP_MS = 450


def _js(page, body: str, arg=None):
    return page.evaluate(f"(arg) => {{ const model = {MODEL}; {body} }}", arg)


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1500, "height": 950})
    pg = ctx.new_page()
    watch = TileWatch().attach(pg)
    pg.goto(server + "/")
    assert watch.wait(pg, lambda: len(watch.with_data()) >= 1, 30)
    yield pg
    ctx.close()


class Frame:
    """The map's plot frame on the page, and its data ranges (Web Mercator metres)."""

    def __init__(self, page) -> None:
        (self.left, self.top, self.width, self.height, self.x0, self.x1, self.y0,
         self.y1) = _js(page, """
            const fig = model('eox-map');
            const view = Bokeh.index.find_one(fig);
            const r = view.el.getBoundingClientRect(), f = view.frame.bbox;
            return [r.left + f.left, r.top + f.top, f.width, f.height,
                    fig.x_range.start, fig.x_range.end, fig.y_range.start, fig.y_range.end];
        """)

    @classmethod
    def settled(cls, page) -> Frame:
        """The frame once the page layout stopped moving (the sidebar's content can still
        resize the map just after a tab is shown)."""
        last = cls(page)
        for _ in range(20):
            page.wait_for_timeout(250)
            now = cls(page)
            if vars(now) == vars(last):
                return now
            last = now
        return last

    def at(self, a: float, b: float) -> tuple[float, float]:
        """Page pixel at fractions (a, b) of the frame's width and height (from top left),
        snapped to a whole pixel (what the mouse reports)."""
        return round(self.left + a * self.width), round(self.top + b * self.height)

    def mercator(self, px: float, py: float) -> tuple[float, float]:
        x = self.x0 + (px - self.left) / self.width * (self.x1 - self.x0)
        y = self.y1 - (py - self.top) / self.height * (self.y1 - self.y0)
        return x, y

    def lonlat(self, px: float, py: float) -> tuple[float, float]:
        x, y = self.mercator(px, py)
        return float(np.degrees(x / R)), float(np.degrees(np.arctan(np.sinh(y / R))))

    def metres_per_pixel(self) -> float:
        return (self.x1 - self.x0) / self.width


def _mode(page, name: str, tool: str) -> None:
    """Pick a drawing mode with the Draw tab's button; the map's tool becomes active."""
    page.get_by_role("button", name=name, exact=True).click()
    page.wait_for_function(f"() => Bokeh.documents[0].get_model_by_name('{tool}').active",
                           timeout=5000)


def _draw_path(page, pixels: list[tuple[float, float]]) -> None:
    """Draw a polygon or line as the Draw tab says: double-click the first vertex, click
    the next ones, double-click the last one."""
    page.mouse.dblclick(*pixels[0])
    page.wait_for_timeout(CLICK_GAP_MS)
    for px, py in pixels[1:-1]:
        page.mouse.click(px, py)
        page.wait_for_timeout(CLICK_GAP_MS)
    page.mouse.dblclick(*pixels[-1])
    page.wait_for_timeout(CLICK_GAP_MS)


def _source(page, name: str) -> dict:
    return _js(page, "const d = model(arg).data; const out = {}; "
                     "for (const k of Object.keys(d)) { out[k] = Array.from(d[k], "
                     "v => (v && v.length !== undefined) ? Array.from(v) : v); } return out;",
               f"eox-draw-src-{name}")


def _geodesic_area(lonlat: list[tuple[float, float]]) -> float:
    lons, lats = zip(*lonlat, strict=True)
    area, _ = GEOD.polygon_area_perimeter(lons, lats)
    return abs(area)


def _row_number(page, tab: str, name: str, unit: str) -> float:
    """The number before ``unit`` in the row of shape ``name`` of a tab's table."""
    pattern = re.compile(r"([\d,]+(?:\.\d+)?) " + re.escape(unit) + r"(?![²\w])")
    row = page.locator(".tabulator-row", has_text=name).filter(has_text=pattern).first
    row.wait_for(timeout=10_000)
    return float(pattern.search(row.inner_text()).group(1).replace(",", ""))


def _measured(page, name: str, unit: str, previous: float | None = None) -> float:
    """The Measure tab's value of shape ``name`` (waiting for it to differ from
    ``previous``: the table follows the drawings live)."""
    value = _row_number(page, "Measure", name, unit)
    deadline = 50
    while previous is not None and value == previous and deadline:
        page.wait_for_timeout(200)
        value = _row_number(page, "Measure", name, unit)
        deadline -= 1
    return value


def _units(page) -> None:
    """Plain metres and square metres in the Measure tab (every digit shown)."""
    page.locator("select", has=page.locator("option", has_text="square metres")).first \
        .select_option(label="square metres")
    page.locator("select", has=page.locator("option", has_text="nautical miles")).first \
        .select_option(label="metres")
    page.wait_for_timeout(500)


def _draw_rows(page) -> list[str]:
    return [t for t in page.locator(".tabulator-row").all_inner_texts() if t.strip()]


def test_draw_polygon_with_the_mouse_measure_and_edit_it(page, artifacts):
    click_tab(page, "Draw")
    _mode(page, "Polygon", "eox-draw-polygon")
    frame = Frame.settled(page)
    clicks = [frame.at(a, b) for a, b in ((0.30, 0.30), (0.62, 0.34), (0.56, 0.68),
                                          (0.34, 0.62))]
    _draw_path(page, clicks)
    assert vars(Frame(page)) == vars(frame)  # the view did not move while drawing

    # the shape's vertices are where the mouse clicked (within a pixel)
    src = _source(page, "polygon")
    assert len(src["xs"]) == 1 and len(src["xs"][0]) == 4, src
    tol = 1.5 * frame.metres_per_pixel()
    for (px, py), x, y in zip(clicks, src["xs"][0], src["ys"][0], strict=True):
        ex, ey = frame.mercator(px, py)
        assert abs(x - ex) < tol and abs(y - ey) < tol, (x, y, ex, ey)
    # ... and it is listed in the Draw table, with its 4 vertices
    # (the table follows the drawing live: it may show the shape with 3 vertices first)
    page.locator(".tabulator-row", has_text="Polygon 1").first.wait_for(timeout=10_000)
    for _ in range(50):
        row = [r for r in _draw_rows(page) if "Polygon 1" in r]
        if row and re.search(r"polygon\s+4\s", row[0]):
            break
        page.wait_for_timeout(200)
    assert row and re.search(r"polygon\s+4\s", row[0]), _draw_rows(page)
    page.screenshot(path=str(artifacts / "ui-draw-mouse-polygon.png"))

    # the Measure tab shows the area pyproj computes from the clicked pixels
    click_tab(page, "Measure")
    _units(page)
    shown = _measured(page, "Polygon 1", "m²")
    expected = _geodesic_area([frame.lonlat(*c) for c in clicks])
    assert expected > 0 and abs(shown - expected) / expected < 0.01, (shown, expected)
    page.screenshot(path=str(artifacts / "ui-draw-mouse-measure.png"))

    # edit: double-click the polygon to show its vertices, drag the third one outwards
    click_tab(page, "Draw")
    _mode(page, "Edit vertices", "eox-draw-edit")
    inside = frame.at(0.45, 0.48)
    page.mouse.dblclick(*inside)
    page.wait_for_function(
        "() => Bokeh.documents[0].get_model_by_name('eox-draw-vertices')"
        ".data_source.data.x.length === 4", timeout=5000)
    target = frame.at(0.70, 0.85)
    page.wait_for_timeout(CLICK_GAP_MS)
    page.mouse.move(*clicks[2])
    page.mouse.down()
    page.mouse.move(*target, steps=10)
    page.mouse.up()
    page.wait_for_timeout(CLICK_GAP_MS)
    src = _source(page, "polygon")
    assert len(src["xs"]) == 1 and len(src["xs"][0]) == 4, src
    moved = frame.mercator(*target)
    assert abs(src["xs"][0][2] - moved[0]) < tol and abs(src["ys"][0][2] - moved[1]) < tol
    page.screenshot(path=str(artifacts / "ui-draw-mouse-edit.png"))

    click_tab(page, "Measure")
    edited = _measured(page, "Polygon 1", "m²", previous=shown)
    after = [clicks[0], clicks[1], target, clicks[3]]
    expected_after = _geodesic_area([frame.lonlat(*c) for c in after])
    assert expected_after > expected * 1.2  # the vertex went outwards
    assert abs(edited - expected_after) / expected_after < 0.01, (edited, expected_after)
    page.screenshot(path=str(artifacts / "ui-draw-mouse-measure-edited.png"))


def test_draw_box_line_and_pressed_polygon_with_the_mouse(page, artifacts):
    click_tab(page, "Draw")

    # a box: shift+drag (Bokeh's BoxEditTool)
    _mode(page, "Box", "eox-draw-box")
    frame = Frame.settled(page)
    a, b = frame.at(0.25, 0.25), frame.at(0.55, 0.60)
    page.mouse.move(*a)
    page.keyboard.down("Shift")
    page.mouse.down()
    page.mouse.move(*b, steps=12)
    page.mouse.up()
    page.keyboard.up("Shift")
    page.locator(".tabulator-row", has_text="Box 1").first.wait_for(timeout=10_000)

    # a line: double-click, click, double-click
    _mode(page, "Line", "eox-draw-line")
    line = [frame.at(0.60, 0.20), frame.at(0.80, 0.40), frame.at(0.70, 0.75)]
    _draw_path(page, line)
    page.locator(".tabulator-row", has_text="Line 1").first.wait_for(timeout=10_000)

    # Bokeh's own way, which the help also gives: click and hold for the first and last
    _mode(page, "Polygon", "eox-draw-polygon")
    triangle = [frame.at(0.15, 0.70), frame.at(0.35, 0.70), frame.at(0.25, 0.90)]
    for i, (px, py) in enumerate(triangle):
        page.mouse.move(px, py)
        page.mouse.down()
        page.wait_for_timeout(600 if i in (0, len(triangle) - 1) else 50)
        page.mouse.up()
        page.wait_for_timeout(CLICK_GAP_MS)
    page.locator(".tabulator-row", has_text="Polygon 1").first.wait_for(timeout=10_000)
    assert vars(Frame(page)) == vars(frame)  # the view did not move while drawing
    rows = _draw_rows(page)
    assert any(re.search(r"Line 1\s+line\s+3\s", r) for r in rows), rows
    assert any(re.search(r"Polygon 1\s+polygon\s+3\s", r) for r in rows), rows
    assert len(_source(page, "box")["x"]) == 1 and len(_source(page, "line")["xs"]) == 1
    page.screenshot(path=str(artifacts / "ui-draw-mouse-box-line.png"))

    click_tab(page, "Measure")
    _units(page)
    corners = [frame.lonlat(*p) for p in (a, (b[0], a[1]), b, (a[0], b[1]))]
    box_area = _measured(page, "Box 1", "m²")
    expected = _geodesic_area(corners)
    assert abs(box_area - expected) / expected < 0.01, (box_area, expected)
    lons, lats = zip(*(frame.lonlat(*p) for p in line), strict=True)
    expected_len = GEOD.line_length(lons, lats)
    shown_len = _measured(page, "Line 1", "m")
    assert abs(shown_len - expected_len) / expected_len < 0.01, (shown_len, expected_len)
    page.screenshot(path=str(artifacts / "ui-draw-mouse-measure-box-line.png"))
