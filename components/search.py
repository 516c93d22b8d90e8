"""Search tab: collection, place (with autocomplete), point/box on the map, dates, cloud
cover, sort and limit; results in a table whose selected rows are displayed on the map."""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from components.state import AppState

#: Columns shown in the results table (the id stays hidden).
COLUMNS = ["Date", "Platform", "Level", "Orbit", "Tile", "Cloud %", "Size MB"]


def results_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The results as the table shows them: readable dates, rounded numbers, id index."""
    if frame.empty:
        return pd.DataFrame(columns=[*COLUMNS, "id"])
    out = frame.copy()
    out["Date"] = out["Date"].dt.strftime("%Y-%m-%d %H:%M")
    out["Cloud %"] = out["Cloud %"].round(1)
    out["Size MB"] = out["Size MB"].round(1)
    return out[[*COLUMNS, "id"]].reset_index(drop=True)


class SearchPanel(pn.viewable.Viewer):
    """The Search tab of a session."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        s = self.state
        self._collection = pn.widgets.Select.from_param(s.param.collection, name="Collection",
                                                        sizing_mode="stretch_width")
        self._place = pn.widgets.AutocompleteInput(
            name="Place", placeholder="Type a city, region or country…", min_characters=2,
            case_sensitive=False, search_strategy="includes", restrict=False,
            sizing_mode="stretch_width", value=s.place)
        self._place.param.watch(self._place_typed, "value_input")
        self._place.param.watch(self._place_chosen, "value")
        self._goto = pn.widgets.Button(name="Go to place", width=110)
        self._goto.on_click(lambda e: self.state.zoom_to_place())
        self._pick = pn.widgets.RadioButtonGroup.from_param(
            s.param.pick, name="On the map", button_type="light",
            options={"Off": "off", "Click a point": "point", "Drag a box": "box"})
        self._clear = pn.widgets.Button(name="Clear area", width=110)
        self._clear.on_click(lambda e: self.state.param.update(point=None, bbox=None, place=""))
        # the two dates share the sidebar's width (a fixed width each overflowed it)
        self._start = pn.widgets.DatePicker.from_param(
            s.param.start, name="From", sizing_mode="stretch_width", width=None, min_width=120)
        self._end = pn.widgets.DatePicker.from_param(
            s.param.end, name="To", sizing_mode="stretch_width", width=None, min_width=120)
        self._cloud = pn.widgets.FloatSlider.from_param(s.param.max_cloud, name="Max cloud %",
                                                        step=5, sizing_mode="stretch_width")
        self._sort = pn.widgets.Select.from_param(s.param.sort, name="Sort", width=150)
        self._limit = pn.widgets.IntInput.from_param(s.param.limit, name="Limit", width=90)
        self._go = pn.widgets.Button(name="Search", button_type="primary",
                                     sizing_mode="stretch_width")
        self._go.on_click(lambda e: self.state.search())
        self._table = pn.widgets.Tabulator(
            results_view(s.results), selectable="checkbox", show_index=False,
            hidden_columns=["id"], disabled=True, pagination="local", page_size=12,
            sizing_mode="stretch_width", height=380, layout="fit_data_fill",
            name="results")
        self._syncing = False
        self._table.selection = self._indices(s.selected)
        self._table.param.watch(self._rows_selected, "selection")
        self._area = pn.pane.Markdown(self._area_text(), margin=(0, 10))
        self._status = pn.pane.Markdown(s.param.status, margin=(0, 10))

    # -- place --------------------------------------------------------------------------
    def _place_typed(self, event: param.parameterized.Event) -> None:
        from engine.gazetteer import search_places

        text = (event.new or "").strip()
        if len(text) < 2:
            return
        found = search_places(text, limit=10)
        labels = [f"{p.name}, {p.country}" if p.country else p.name for p in found]
        self._place.options = list(dict.fromkeys(labels))

    def _place_chosen(self, event: param.parameterized.Event) -> None:
        text = (event.new or "").strip()
        self.state.param.update(place=text, point=None, bbox=None)
        if text:
            self.state.zoom_to_place()

    # -- results <-> selection -----------------------------------------------------------
    @param.depends("state.results", watch=True)
    def _results_changed(self) -> None:
        self._syncing = True
        try:
            self._table.value = results_view(self.state.results)
            self._table.selection = self._indices(self.state.selected)
        finally:
            self._syncing = False

    @param.depends("state.selected", watch=True)
    def _selected_changed(self) -> None:
        wanted = self._indices(self.state.selected)
        if sorted(wanted) != sorted(self._table.selection):
            self._syncing = True
            try:
                self._table.selection = wanted
            finally:
                self._syncing = False

    def _indices(self, ids: list[str]) -> list[int]:
        frame = self._table.value
        if frame is None or frame.empty:
            return []
        where = {v: i for i, v in enumerate(frame["id"])}
        return [where[i] for i in ids if i in where]

    def _rows_selected(self, event: param.parameterized.Event) -> None:
        if self._syncing:
            return
        frame = self._table.value
        self.state.selected = [str(frame["id"].iloc[i]) for i in sorted(event.new)
                               if i < len(frame)]

    # -- area text ------------------------------------------------------------------------
    @param.depends("state.point", "state.bbox", "state.place", watch=True)
    def _area_changed(self) -> None:
        self._area.object = self._area_text()
        if self.state.place != self._place.value and not self.state.place:
            self._place.value = ""

    def _area_text(self) -> str:
        s = self.state
        if s.bbox is not None:
            return "Area: box " + ", ".join(f"{v:.4f}" for v in s.bbox)
        if s.point is not None:
            return f"Area: point {s.point[0]:.5f}, {s.point[1]:.5f}"
        if s.place:
            return f"Area: {s.place}"
        return "Area: anywhere (type a place, or click/drag on the map)"

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            self._collection,
            pn.Row(self._place, self._goto, sizing_mode="stretch_width"),
            pn.Row(self._pick, self._clear),
            self._area,
            pn.Row(self._start, self._end, sizing_mode="stretch_width", name="dates"),
            self._cloud,
            pn.Row(self._sort, self._limit),
            self._go,
            self._status,
            self._table,
            sizing_mode="stretch_width",
        )
