"""Zoom tab: to the selected scenes, to all results, to a place, to coordinates."""

from __future__ import annotations

from typing import Any

import panel as pn
import param

from components.state import AppState


class ZoomPanel(pn.viewable.Viewer):
    """The Zoom tab of a session."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._selected = pn.widgets.Button(name="Zoom to the selected scene(s)",
                                           sizing_mode="stretch_width")
        self._selected.on_click(lambda e: self.state.zoom_to_selected())
        self._results = pn.widgets.Button(name="Zoom to all results",
                                          sizing_mode="stretch_width")
        self._results.on_click(lambda e: self.state.zoom_to_results())
        self._place = pn.widgets.TextInput(name="Place", placeholder="e.g. Toulouse",
                                           sizing_mode="stretch_width")
        self._go_place = pn.widgets.Button(name="Zoom to place", width=130)
        self._go_place.on_click(self._to_place)
        self._lon = pn.widgets.FloatInput(name="Longitude", value=None, width=120,
                                          placeholder="-180..180")
        self._lat = pn.widgets.FloatInput(name="Latitude", value=None, width=120,
                                          placeholder="-85..85")
        self._span = pn.widgets.FloatInput(name="Width km", value=20.0, start=0.1, width=90)
        self._go_xy = pn.widgets.Button(name="Zoom to coordinates",
                                        sizing_mode="stretch_width")
        self._go_xy.on_click(self._to_xy)

    def _to_place(self, event: Any) -> None:
        from engine.errors import EOXError
        from engine.gazetteer import place

        name = (self._place.value or "").strip()
        if not name:
            self.state.notify("Zoom: type a place name first", "warning")
            return
        try:
            found = place(name)
        except EOXError as exc:
            self.state.fail(exc, "Zoom")
            return
        self.state.show_box(found.bbox)

    def _to_xy(self, event: Any) -> None:
        if self._lon.value is None or self._lat.value is None:
            self.state.notify("Zoom: enter both longitude and latitude", "warning")
            return
        self.state.zoom_to_coordinates(float(self._lon.value), float(self._lat.value),
                                       span_km=float(self._span.value or 20.0))

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            self._selected, self._results,
            pn.Row(self._place, self._go_place, sizing_mode="stretch_width"),
            pn.Row(self._lon, self._lat, self._span), self._go_xy,
            sizing_mode="stretch_width",
        )
