"""Time tab: the temporal slider over the map's view and the timelapse export of its dates."""

from __future__ import annotations

from typing import Any

import panel as pn
import param

from components.map import MapView
from components.state import AppState
from components.timelapse import TimelapsePanel
from components.timeslider import TimeSlider


class TimePanel(pn.viewable.Viewer):
    """The slider (dates in view, play) above the timelapse form that exports those dates."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    map = param.ClassSelector(class_=MapView, default=None, allow_None=True,
                             doc="The MapView (prefetch, GIF layer; optional).")
    active = param.Boolean(False, doc="True while the tab is shown.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.slider = TimeSlider(state=self.state, map=self.map, active=self.active)
        self.timelapse = TimelapsePanel(state=self.state, slider=self.slider, map=self.map)

    @param.depends("active", watch=True)
    def _active_changed(self) -> None:
        self.slider.active = self.active

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self.slider, pn.layout.Divider(), self.timelapse,
                         sizing_mode="stretch_width")
