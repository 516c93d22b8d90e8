"""AppState without a browser: first open, search, display chains, errors, stretch, zoom."""

from __future__ import annotations

import numpy as np
from component_data import LANDSAT, LS_ITEM, NEW, OLD, S2, band_array

from components.presets import presets_for
from components.state import AppState


def test_first_open_shows_newest_scene_in_true_colour(state, backend):
    assert state.open_latest()
    assert state.collection == S2 and state.selected == [NEW]
    assert state.preset == "true-colour" and state.rgb == ["red", "green", "blue"]
    chain = backend.chain_store.get(state.chain_id)
    assert chain.source.ids == (NEW,)
    assert state.tile_url == f"api/chains/{state.chain_id}/tiles/{{Z}}/{{X}}/{{Y}}.png?empty=transparent"
    w, s, e, n = state.view_request
    assert 13.1 < w < e < 13.5 and 52.0 < s < n < 52.6  # the fixture scene near Berlin


def test_presets_follow_the_collection_bands(state):
    state.collection = LANDSAT
    assert state.presets == ["ndvi"]
    assert state.preset == "ndvi" and state.single_band
    state.collection = S2
    assert {"true-colour", "false-colour", "ndvi", "ndwi", "swir", "agriculture",
            "urban"} == set(state.presets)
    assert [p.key for p in presets_for(["red", "nir"])] == ["ndvi"]


def test_search_by_place_dates_cloud_and_sort(state):
    state.param.update(collection=S2, place="Berlin")
    assert state.search() == 2
    assert list(state.results["id"]) == [NEW, OLD]  # newest first
    assert set(state.footprints) == {NEW, OLD}
    state.param.update(max_cloud=30)
    assert state.search() == 1 and list(state.results["id"]) == [OLD]
    state.param.update(max_cloud=100, sort="Oldest first")
    state.search()
    assert list(state.results["id"]) == [OLD, NEW]
    cols = list(state.results.columns)
    assert cols[:7] == ["Date", "Platform", "Level", "Orbit", "Tile", "Cloud %", "Size MB"]


def test_search_no_results_and_unknown_place_are_messages(state):
    state.param.update(collection=S2, place="Tokyo")
    assert state.search() == 0
    assert state.notice.level == "warning" and "No scenes match" in state.notice.text
    state.place = "Nowhereville Xyzzy"
    assert state.search() == 0
    assert state.notice.level == "error" and "Search" in state.notice.text
    state.param.update(place="", point=(13.35, 52.535))
    assert state.search() == 2  # the app still works after the error


def test_preset_change_registers_a_new_chain(state, backend):
    state.open_latest()
    first = state.chain_id
    state.choose_preset("false-colour")
    assert state.chain_id != first
    steps = backend.chain_store.get(state.chain_id).model_dump(mode="json")["steps"]
    assert steps[0] == {"name": "bands", "bands": ["nir", "red", "green"]}
    state.choose_preset("ndvi")
    steps = backend.chain_store.get(state.chain_id).model_dump(mode="json")["steps"]
    assert [s["name"] for s in steps] == ["expression", "scale", "colormap"]
    assert steps[2]["colormap"] == "RdYlGn"


def test_bad_expression_keeps_the_last_chain_and_says_why(state):
    state.open_latest()
    good = state.chain_id
    state.param.update(preset="custom-expression", expression="nir +* red", vmin=[-1], vmax=[1])
    assert state.chain_id == good
    assert state.notice.level == "error" and "expression" in state.notice.text
    state.expression = "nir - B99"
    assert state.notice.level == "error" and "B99" in state.notice.text
    state.expression = "(nir - red) / (nir + red)"
    assert state.chain_id != good and state.notice is None  # fixed: the message goes


def test_auto_stretch_uses_percentiles_of_the_visible_pixels(state):
    state.open_latest()
    state.viewport = (13.0, 52.0, 14.0, 53.0)  # the whole scene is visible
    assert state.auto_stretch(2, 98)
    for i, band in enumerate(["B04", "B03", "B02"]):
        arr = band_array(band, 500).astype(float)
        vals = arr[arr > 0]
        lo, hi = np.percentile(vals, [2, 98])
        span = vals.max() - vals.min()
        assert abs(state.vmin[i] - lo) < 0.02 * span, (band, state.vmin[i], lo)
        assert abs(state.vmax[i] - hi) < 0.02 * span, (band, state.vmax[i], hi)
    assert set(state.statistics) == {"red", "green", "blue"} or len(state.statistics) == 3


def test_stretch_outside_the_scene_is_a_message(state):
    state.open_latest()
    state.viewport = (100.0, 10.0, 101.0, 11.0)
    assert not state.auto_stretch()
    assert state.notice.level == "error" and "zoom to them" in state.notice.text


def test_zoom_actions(state):
    state.open_latest()
    state.param.update(selected=[], view_request=None)
    state.zoom_to_selected()
    assert state.notice.level == "warning" and state.view_request is None
    state.zoom_to_results()
    w, s, e, n = state.view_request
    assert w < 13.35 < e and s < 52.535 < n
    state.zoom_to_coordinates(2.35, 48.85, span_km=10)
    w, s, e, n = state.view_request
    assert abs((w + e) / 2 - 2.35) < 1e-9 and abs((n - s) * 111.32 - 10) < 1e-6
    state.zoom_to_coordinates(500, 0)
    assert state.notice.level == "error"


def test_apply_chain_restores_display(state, backend):
    state.open_latest()
    state.choose_preset("ndvi")
    chain = state.chain
    other = AppState(backend=backend)
    other.apply_chain(chain)
    assert other.collection == S2 and other.selected == [NEW]
    assert other.preset == "ndvi" and other.chain_id == chain.id


def test_sessions_share_no_state(backend):
    a, b = AppState(backend=backend), AppState(backend=backend)
    a.open_latest()
    assert b.selected == [] and b.chain is None and a.selected == [NEW]
    assert LS_ITEM not in a.footprints


def test_zoom_to_selected_scenes_not_among_the_results(state, backend):
    """Issue 14, the monkey's seed 4: scenes selected by a shared link (or before a search
    whose results lack them) are displayed; "Zoom to the selected scene(s)" shows them
    instead of saying that nothing is selected."""
    state.open_latest()
    expected = state.view_request
    state.param.update(place="Nowhere near", view_request=None)
    state.param.update(results=state.results.iloc[0:0], bounds={}, footprints={})
    assert state.selected == [NEW] and state.chain is not None  # still displayed
    state.notice = None
    state.zoom_to_selected()
    assert state.notice is None
    assert state.view_request == expected
    linked = AppState(backend=backend)  # a shared link: items only, no search yet
    linked.collection = S2
    linked.selected = [OLD]
    linked.zoom_to_selected()
    w, s, e, n = linked.view_request
    assert 13.1 < w < e < 13.5 and 52.0 < s < n < 52.6
