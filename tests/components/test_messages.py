"""Issue 14, item 5: a message goes away when its cause is fixed or the next action succeeds;
a zoom action always zooms (also to the box asked for last, after the user panned away)."""

from __future__ import annotations

import pytest

from components.map import MapView
from components.shell import Shell, detail_html
from components.tilemath import to_lonlat


def test_banner_clears_when_the_display_is_fixed(state):
    state.open_latest()
    shell = Shell(state=state)
    state.param.update(preset="custom-expression", expression="nir +* red", vmin=[-1], vmax=[1])
    assert shell._inline.visible and "expression" in shell._inline.object
    state.expression = "(nir - red) / (nir + red)"
    assert state.notice is None
    assert not shell._inline.visible


def test_banner_clears_when_the_next_action_succeeds(state):
    shell = Shell(state=state)
    state.place = "Nowhere-on-earth-xyz"
    state.zoom_to_place()
    assert shell._inline.visible and state.notice.level == "error"
    state.zoom_to_coordinates(13.4, 52.5)  # another action that works
    assert not shell._inline.visible


def test_detail_is_folded_and_escaped():
    html = detail_html("Traceback <script>alert(1)</script>")
    assert html.startswith("<details>") and "<script>" not in html and "&lt;script&gt;" in html
    assert detail_html("") == ""


def test_zoom_to_the_same_place_after_panning_zooms_again(state):
    view = MapView(state=state)
    box = (13.0, 52.3, 13.8, 52.7)
    state.show_box(box)
    fig = view.figure
    first = (fig.x_range.start, fig.x_range.end)
    fig.x_range.update(start=first[0] + 50_000, end=first[1] + 50_000)  # the user pans
    view._on_bokeh_range("end", None, None)
    state.show_box(box)  # same box: it used to be no change, so no zoom
    assert (fig.x_range.start, fig.x_range.end) == pytest.approx(first)
    lon0, _ = to_lonlat(fig.x_range.start, 0.0)
    assert lon0 == pytest.approx(state.viewport[0])
