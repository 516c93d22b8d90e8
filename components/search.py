"""Search tab: collection, place (with autocomplete), point/box on the map, dates, cloud
cover, sort and limit; results in a table whose selected rows are displayed on the map."""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from components.datefield import DateField
from components.session import run_locked
from components.state import AppState
from engine.errors import EOXError

#: Runs in the browser when the server sends new place suggestions: shows them at once in
#: the open menu (Bokeh refreshes it only on the next key press, so the suggestions for
#: the last letters typed never appeared) and unfiltered (the server already matched them,
#: also by other spellings: "Munch" -> "Munich, DE", which the browser's filter hid).
SUGGEST_JS = """
const view = Bokeh.index.find_one(cb_obj);
if (view == null || view.input_el == null) return;
view.compute_completions = () => [...cb_obj.completions];
if (view.input_el.matches(':focus')) view._toggle_menu();
"""

#: Columns shown in the results table (the id stays hidden); Cloud % next to the date, so
#: it is in view however narrow the sidebar.
COLUMNS = ["Date", "Cloud %", "Platform", "Level", "Tile", "Orbit", "Size MB"]


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
        # the title next to the id (the id stays the choice: links and code use it)
        self._title = pn.pane.Markdown(self._collection_title(), margin=(0, 10),
                                       name="collection-title")
        self._place = pn.widgets.AutocompleteInput(
            name="Place", placeholder="Type a city, region or country…", min_characters=2,
            case_sensitive=False, search_strategy="includes", restrict=False,
            sizing_mode="stretch_width", value=s.place)
        self._place.param.watch(self._place_typed, "value_input")
        self._place.jscallback(options=SUGGEST_JS)
        self._place.param.watch(self._place_chosen, "value")
        self._goto = pn.widgets.Button(name="Go to place", width=110)
        self._goto.on_click(lambda e: self._go_to_typed())
        self._pick = pn.widgets.RadioButtonGroup.from_param(
            s.param.pick, name="On the map", button_type="light",
            options={"Off": "off", "Click a point": "point", "Drag a box": "box"})
        self._clear = pn.widgets.Button(name="Clear area", width=110)
        self._clear.on_click(lambda e: self.state.param.update(point=None, bbox=None, place=""))
        self._start = DateField(owner=s, field="start", label="From", span=s.date_range)
        self._end = DateField(owner=s, field="end", end=True, label="To", span=s.date_range)
        self._date_error = pn.pane.Alert("", alert_type="warning", visible=False,
                                         margin=(0, 10), name="date-error")
        for field in (self._start, self._end):
            field.param.watch(self._date_typed, "error")
        self._cloud = pn.widgets.FloatSlider.from_param(s.param.max_cloud, name="Max cloud %",
                                                        step=5, sizing_mode="stretch_width",
                                                        disabled=bool(s.cloud_reason))
        self._cloud_reason = pn.pane.Markdown(s.cloud_reason, visible=bool(s.cloud_reason),
                                              margin=(0, 10), name="cloud-reason")
        self._sort = pn.widgets.Select.from_param(s.param.sort, name="Sort", width=150)
        self._limit = pn.widgets.IntInput.from_param(s.param.limit, name="Limit", width=90)
        self._go = pn.widgets.Button(name="Search", button_type="primary",
                                     sizing_mode="stretch_width")
        self._go.on_click(lambda e: self._search())
        self._table = pn.widgets.Tabulator(
            results_view(s.results), selectable="checkbox", show_index=False,
            hidden_columns=["id"], disabled=True, pagination="local", page_size=12,
            sizing_mode="stretch_width", height=380, layout="fit_data_fill",
            name="results")
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
        # labels place() resolves back to the same place ("Georgia (country)", "Bonn, DE")
        self._place.options = list(dict.fromkeys(p.label for p in found))

    def _place_chosen(self, event: param.parameterized.Event) -> None:
        self._accept((event.new or "").strip())

    def _accept(self, text: str) -> bool:
        """Take ``text`` as the place: a name the gazetteer knows as it is, else its best
        suggestion (what Enter on a half-typed "Berl" means); the field shows the place."""
        from engine.errors import PlaceNotFound
        from engine.gazetteer import place, search_places

        if text:
            try:
                place(text)
            except PlaceNotFound:
                best = search_places(text, limit=1)
                text = best[0].label if best else text
        if text != self._place.value:  # re-enters through _place_chosen with a known name
            self._place.param.update(value_input=text, value=text)
            return bool(text)
        self.state.param.update(place=text, point=None, bbox=None)
        if text:  # the map moves: Bokeh models change, which needs the document lock
            run_locked(pn.state.curdoc, self.state.zoom_to_place)
        return bool(text)

    def _typed(self) -> str:
        """What the place field shows now (typed, not necessarily committed)."""
        return (self._place.value_input or self._place.value or "").strip()

    def _go_to_typed(self) -> None:
        text = self._typed()
        if not text:
            self.state.notify("Go to place: type a place name first", "warning")
        elif text == self.state.place:
            run_locked(pn.state.curdoc, self.state.zoom_to_place)
        else:
            self._accept(text)

    def _search(self) -> None:
        text = self._typed()
        if text and text != self.state.place and self.state.point is None \
                and self.state.bbox is None:
            self._accept(text)
        self.state.search()

    def _collection_title(self) -> str:
        try:
            return self.state.backend.facts(self.state.collection).title
        except EOXError:
            return ""

    @param.depends("state.collection", watch=True)
    def _collection_shown(self) -> None:
        self._title.object = self._collection_title()

    # -- filters that fit the collection ---------------------------------------------------
    @param.depends("state.cloud_reason", "state.date_range", watch=True)
    def _collection_fitted(self) -> None:
        reason = self.state.cloud_reason
        self._cloud.disabled = bool(reason)
        self._cloud_reason.param.update(object=reason, visible=bool(reason))
        self._start.span = self._end.span = self.state.date_range

    def _date_typed(self, *_: Any) -> None:
        text = self._start.error or self._end.error
        self._date_error.param.update(object=text, visible=bool(text))

    # -- results <-> selection -----------------------------------------------------------
    # The table shows the state: a selection event that shows the selected scenes found in
    # the table (the state's own, set below) changes nothing, so nothing echoes back.
    @param.depends("state.results", watch=True)
    def _results_changed(self) -> None:
        self._table.value = results_view(self.state.results)
        self._table.selection = self._indices(self.state.selected)

    @param.depends("state.selected", watch=True)
    def _selected_changed(self) -> None:
        wanted = self._indices(self.state.selected)
        if sorted(wanted) != sorted(self._table.selection):
            self._table.selection = wanted

    def _indices(self, ids: list[str]) -> list[int]:
        frame = self._table.value
        if frame is None or frame.empty:
            return []
        where = {v: i for i, v in enumerate(frame["id"])}
        return [where[i] for i in ids if i in where]

    def _rows_selected(self, event: param.parameterized.Event) -> None:
        frame = self._table.value
        rows = [str(frame["id"].iloc[i]) for i in sorted(event.new) if i < len(frame)]
        listed = set(frame["id"].astype(str)) if frame is not None and "id" in frame else set()
        if set(rows) == {i for i in self.state.selected if i in listed}:
            return  # the table shows the state's selection
        before = set(self.state.selected)
        self.state.selected = rows
        if set(self.state.selected) - before:  # a scene picked in the table: show it
            run_locked(pn.state.curdoc, self.state.zoom_to_selected)

    # -- area text ------------------------------------------------------------------------
    @param.depends("state.point", "state.bbox", "state.place", watch=True)
    def _area_changed(self) -> None:
        self._area.object = self._area_text()
        if self.state.place != self._place.value and not self.state.place:
            self._place.param.update(value_input="", value="")

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
            self._collection, self._title,
            pn.Row(self._place, self._goto, sizing_mode="stretch_width"),
            pn.Row(self._pick, self._clear),
            self._area,
            self._start, self._end, self._date_error,
            self._cloud, self._cloud_reason,
            pn.Row(self._sort, self._limit),
            self._go,
            self._status,
            self._table,
            sizing_mode="stretch_width",
        )
