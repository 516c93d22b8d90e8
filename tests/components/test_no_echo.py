"""Widgets that show the state do not write it back: the display tab, the results table and
the date fields follow a state change without changing the state again (no guard flags)."""

from __future__ import annotations

from datetime import date

from component_data import LANDSAT, NEW, OLD, S2

from components.datefield import DateField
from components.display import DisplayPanel
from components.search import SearchPanel


def _presets_set(state) -> list[str]:
    seen: list[str] = []
    state.param.watch(lambda e: seen.append(e.new), "preset", onlychanged=False)
    return seen


def test_the_display_tab_follows_presets_and_collections_without_echo(state):
    state.open_latest()
    panel = DisplayPanel(state=state)
    seen = _presets_set(state)
    state.choose_preset("ndwi")  # the expression box now shows NDWI's formula
    assert panel._expression.value == state.expression and state.preset == "ndwi"
    state.collection = LANDSAT  # new bands in the RGB pickers, one by one
    state.collection = S2
    assert seen == ["ndwi", "ndvi", "ndvi"]  # never custom-rgb/-expression
    assert [w.value for w in panel._rgb] == state.rgb
    panel._rgb[2].value = "B08"  # the user's pick still counts, with the state's others
    assert state.preset == "custom-rgb" and state.rgb == [*state.rgb[:2], "B08"]


def test_new_results_keep_a_selection_they_do_not_list(state):
    panel = SearchPanel(state=state)
    state.param.update(collection=S2, place="Berlin")
    assert state.search() == 2
    state.selected = [NEW]
    state.max_cloud = 30  # NEW has 60 % clouds: not listed any more
    assert state.search() == 1 and list(panel._table.value["id"]) == [OLD]
    assert state.selected == [NEW] and panel._table.selection == []
    panel._table.selection = [0]  # a row the user ticks replaces the selection
    assert state.selected == [OLD]


def test_a_date_field_keeps_its_date_when_the_calendar_span_moves(state):
    state.start = date(2020, 6, 1)
    field = DateField(owner=state, field="start", span=(date(2020, 1, 1), date(2020, 12, 31)))
    assert field._pick.value == date(2020, 6, 1) and field._text.value == "2020-06-01"
    field.span = (date(2010, 1, 1), date(2010, 12, 31))  # the calendar cannot show it
    assert field._pick.value is None and state.start == date(2020, 6, 1)
    field._text.value = "2010-06"
    assert state.start == date(2010, 6, 1) and field._pick.value == date(2010, 6, 1)
    field._pick.value = None  # the user clears the calendar
    assert state.start is None
