"""The tabs, the map and the URL state, driven by setting widget values (no browser)."""

from __future__ import annotations

import holoviews as hv
import panel as pn
import pytest
from component_data import NEW, OLD, S2

from app.urlstate import apply_query, to_query, view_of
from components.display import DisplayPanel
from components.map import MapView
from components.search import SearchPanel
from components.shell import Shell
from components.state import AppState
from components.stretch import StretchPanel
from components.zoom import ZoomPanel

hv.extension("bokeh")


def test_search_panel_table_and_row_selection(state):
    panel = SearchPanel(state=state)
    state.param.update(collection=S2, place="Berlin")
    panel._go.clicks += 1
    assert list(panel._table.value["id"]) == [NEW, OLD]
    assert "Cloud %" in panel._table.value.columns
    panel._table.selection = [1]
    assert state.selected == [OLD]
    state.selected = [NEW]
    assert panel._table.selection == [0]


def test_place_autocomplete_offers_gazetteer_names(state):
    panel = SearchPanel(state=state)
    panel._place.value_input = "Berl"
    assert any(o.startswith("Berlin") for o in panel._place.options)


def test_display_panel_presets_and_custom_bands(state):
    state.open_latest()
    panel = DisplayPanel(state=state)
    assert "True colour" in panel._preset.options and not panel._legend.visible
    panel._preset.value = "ndvi"
    assert state.preset == "ndvi" and panel._legend.visible
    assert "RdYlGn" in state.chain.to_json() and "linear-gradient" in panel._legend.object
    panel._preset.value = "true-colour"
    panel._rgb[0].value = "B08"
    assert state.preset == "custom-rgb" and state.rgb == ["B08", "green", "blue"]
    panel._expression.value = "red / (nir + red"
    # the error is the session's notice (the shell shows it once), not a second alert here
    assert state.notice.level == "error" and "expression" in state.notice.text


def test_stretch_panel_inputs_and_histogram(state):
    state.open_latest()
    panel = StretchPanel(state=state)
    panel._inputs[0][1].value = 2500.0
    assert state.vmax[0] == 2500.0
    state.viewport = (13.0, 52.0, 14.0, 53.0)
    panel._auto.clicks += 1
    assert panel._inputs[0][0].value == state.vmin[0] and state.vmin[0] > 300
    assert isinstance(panel._hist.object, hv.Overlay)


def test_zoom_panel(state):
    state.open_latest()
    panel = ZoomPanel(state=state)
    panel._place.value = "Paris"
    panel._go_place.clicks += 1
    w, s, e, n = state.view_request
    assert w < 2.35 < e and s < 48.85 < n
    panel._place.value = "Qqqxxz Nowhere"
    panel._go_place.clicks += 1
    assert state.notice.level == "error"


def test_map_layers_follow_state(state):
    state.open_latest()
    view = MapView(state=state)
    model = pn.Column(view).get_root()
    assert model is not None and view._figure is not None
    scenes = view._tiles["scenes"]
    assert scenes.tile_source.url == state.tile_url and scenes.visible
    # the offline base map of the service unless EOX_BASEMAP names another
    assert view._tiles["basemap"].tile_source.url.endswith("basemap/{Z}/{X}/{Y}.png")
    state.choose_preset("false-colour")
    assert scenes.tile_source.url == state.tile_url
    view.layers = [l if l.name != "scenes" else type(l)("scenes", False, 0.5)
                   for l in view.layers]
    assert not scenes.visible
    state.view_request = (13.3, 52.5, 13.4, 52.6)
    assert view._figure.x_range.start < view._figure.x_range.end
    names = {r.name for r in view._figure.renderers}
    assert "eox-scenes" in names


def test_shell_builds_every_tab(state):
    state.open_latest()
    shell = Shell(state=state)
    assert list(shell.panels)[:4] == ["Search", "Display", "Functions", "Stretch"]
    state.notify("hello", "error")
    assert shell._inline.visible and shell._inline.object == "hello"
    assert isinstance(shell.template(), pn.template.BaseTemplate)


def test_url_state_round_trip(state, backend):
    state.open_latest()
    state.choose_preset("ndvi")
    state.viewport = (13.30, 52.50, 13.40, 52.56)
    query = to_query(state)
    assert query["collection"] == S2 and query["items"] == NEW and query["chain"] == state.chain_id
    other = AppState(backend=backend)
    assert apply_query(other, {k: [v.encode()] for k, v in query.items()})
    assert other.chain_id == state.chain_id and other.preset == "ndvi"
    assert other.selected == [NEW]
    w, _, e, _ = other.view_request
    assert abs((w + e) / 2 - 13.35) < 1e-4 and abs((e - w) - 0.10) < 1e-3


def test_url_state_bad_values_are_reported(backend):
    s = AppState(backend=backend)
    apply_query(s, {"collection": "nope", "cloud": "abc", "chain": "0123456789abcdef"})
    assert s.notice.level == "warning"
    for word in ("collection", "cloud", "chain"):
        assert word in s.notice.text
    with pytest.raises(ValueError):
        view_of("1000,0", "3")


def test_stretch_any_percentile_pair_bins_and_lines(state):
    import numpy as np
    from component_data import band_array

    state.open_latest()
    panel = StretchPanel(state=state)
    state.viewport = (13.0, 52.0, 14.0, 53.0)
    panel._low.value, panel._high.value, panel._bins.value = 10.0, 90.0, 32
    panel._auto.clicks += 1
    for i, (name, asset) in enumerate([("red", "B04"), ("green", "B03"), ("blue", "B02")]):
        band = state.statistics[name]
        pixels = band_array(asset, 500).astype(float)
        valid = pixels[band_array(asset) > 0]  # nodata corner left out
        assert len(band["histogram"]["counts"]) == 32
        assert state.vmin[i] == pytest.approx(np.percentile(valid, 10), rel=0.02)
        assert state.vmax[i] == pytest.approx(np.percentile(valid, 90), rel=0.02)
    lines = sorted(el.data for el in panel._hist.object if isinstance(el, hv.VLine))
    assert lines == sorted([*state.vmin, *state.vmax])
    panel._low.value = 95.0  # above the high one: refused with a message
    assert not state.auto_stretch() and state.notice.level == "warning"


def test_stretch_tab_shows_the_histogram_when_opened(state):
    state.open_latest()
    state.viewport = (13.0, 52.0, 14.0, 53.0)
    panel = StretchPanel(state=state)
    assert panel._hist.object is None
    panel.active = True
    assert set(state.statistics) == {"red", "green", "blue"}
    assert isinstance(panel._hist.object, hv.Overlay)
