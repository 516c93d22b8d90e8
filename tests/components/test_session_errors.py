"""Issue 14, item 1: the root causes the monkey found, one focused test each, and the one
path callback errors take to the user (components.session)."""

from __future__ import annotations

import logging

from component_data import LANDSAT, S2
from panel.io.state import set_curdoc

from components.display import DisplayPanel
from components.presets import CUSTOM_EXPRESSION
from components.session import exception_handler, on_error, report, run_locked


def test_switching_collection_with_the_display_tab_keeps_a_valid_preset(state):
    """The preset picker's options change with the collection: that reset (value None) is no
    user pick (was ``KeyError: None`` in ``presets.preset``, leaving the switch half done)."""
    state.collection = S2
    panel = DisplayPanel(state=state)
    panel._expression.value = "(nir - swir16) / (nir + swir16)"
    assert state.preset == CUSTOM_EXPRESSION
    state.notice = None
    state.collection = LANDSAT  # raised KeyError: None before
    panel._preset.value = None  # what the browser sends when the options change
    assert state.notice is None or state.notice.level not in ("warning", "error"), state.notice
    assert state.bands == ["red", "nir", "swir1"] or set(state.bands) >= {"red", "nir"}
    assert state.preset in (*state.presets, "custom-rgb", CUSTOM_EXPRESSION)
    # then picking NDVI draws NDVI, in its own colormap (was the old band math in viridis)
    panel._preset.value = "ndvi"
    assert state.preset == "ndvi"
    assert state.expression == "(nir - red) / (nir + red)"
    assert state.colormap == "RdYlGn"
    assert panel._preset.value == "ndvi"


def test_an_unknown_preset_is_refused_with_the_valid_choices(state):
    state.collection = LANDSAT
    before = (state.preset, state.expression)
    state.choose_preset(None)  # type: ignore[arg-type]
    state.choose_preset("no-such-preset")
    assert (state.preset, state.expression) == before
    assert state.notice.level == "warning"
    assert "no-such-preset" in state.notice.text and "ndvi" in state.notice.text


def test_a_callback_error_reaches_the_user_and_the_log(state, caplog):
    from bokeh.document import Document

    doc = Document()
    on_error(doc, lambda text, detail: state.notify(text, "error", detail=detail))
    with caplog.at_level(logging.ERROR, logger="components.session"):
        try:
            [][1]  # noqa: PLE0643 - raises on purpose
        except IndexError as exc:
            with set_curdoc(doc):
                exception_handler(exc)  # what Panel calls for a failing widget callback
    assert state.notice.level == "error"
    assert "went wrong" in state.notice.text and "still usable" in state.notice.text
    assert "IndexError: list index out of range" in state.notice.detail  # detail on demand
    assert "Traceback" in state.notice.detail
    assert any("session callback failed" in r.getMessage() for r in caplog.records)


def test_report_without_a_session_only_logs(caplog):
    with caplog.at_level(logging.ERROR, logger="components.session"):
        report(ValueError("boom"), None, action="testing")
    assert any("(testing): boom" in r.getMessage() for r in caplog.records)


def test_run_locked_runs_at_once_without_a_served_session():
    from bokeh.document import Document

    done = []
    run_locked(None, lambda: done.append(1))
    run_locked(Document(), lambda: done.append(2))  # not served: no lock to wait for
    assert done == [1, 2]


def test_time_tab_never_claims_a_date_the_map_does_not_show(state):
    """Sentinel-2 -> Landsat left the map blank while the Time tab said "Map shows <date>"."""
    from components.timeslider import TimeSlider

    state.collection = S2
    state.search()
    state.viewport = (12.0, 51.0, 15.0, 54.0)
    slider = TimeSlider(state=state, active=True)
    assert slider.frames and slider.show(slider.frames[-1].label)
    assert "Map shows: **" in slider._shown_text()
    slider.active = False  # another tab is shown while the collection changes
    state.collection = LANDSAT
    assert state.selected == [] and slider.date == ""
    assert "Map shows: **" not in slider._shown_text()
    assert slider.frames == []  # no Sentinel-2 dates offered on Landsat
