"""The page: a template with the map in the main area and the tabs in the sidebar.

Tabs are a list of ``(title, factory)``; a later tab (Exports, Measure, Draw, Overlay, Split,
Extract) is one more entry: ``Shell(state=s, tabs=[*DEFAULT_TABS, ("Draw", DrawPanel)])``.
Engine errors reach the user here: every ``state.notice`` becomes a notification.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import panel as pn
import param

from components.display import DisplayPanel, colorbar_html
from components.layers import LayerList
from components.map import MapView
from components.search import SearchPanel
from components.state import AppState
from components.stretch import StretchPanel
from components.zoom import ZoomPanel

TabFactory = Callable[..., pn.viewable.Viewer]

#: The tabs of the sidebar, in order; each factory is called with ``state=`` the session state.
DEFAULT_TABS: tuple[tuple[str, TabFactory], ...] = (
    ("Search", SearchPanel),
    ("Display", DisplayPanel),
    ("Stretch", StretchPanel),
    ("Zoom", ZoomPanel),
)

_DURATION = {"info": 3000, "success": 3000, "warning": 6000, "error": 9000}


class Shell(pn.viewable.Viewer):
    """Template, map, layer list and tabs of one session."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    tabs = param.List(default=list(DEFAULT_TABS), doc="(title, factory) per sidebar tab.")
    title = param.String("EO Explorer")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.map = MapView(state=self.state)
        self.panels = {title: factory(state=self.state) for title, factory in self.tabs}
        self._tabs = pn.Tabs(*[(t, p) for t, p in self.panels.items()], dynamic=False,
                             sizing_mode="stretch_width", name="tabs")
        self._layers = LayerList(map=self.map)
        self._legend = pn.pane.HTML(self._legend_html, margin=(5, 10))
        self._inline = pn.pane.Alert("", alert_type="warning", visible=False,
                                     sizing_mode="stretch_width", name="message")

    @param.depends("state.notice", watch=True)
    def _show_notice(self) -> None:
        n = self.state.notice
        if n is None:
            return
        self._inline.alert_type = {"error": "danger", "warning": "warning"}.get(n.level, "info")
        self._inline.object = n.text
        self._inline.visible = n.level in ("error", "warning")
        notifications = pn.state.notifications
        if notifications is not None:
            notifications.send(n.text, duration=_DURATION.get(n.level, 4000),
                               type=n.level if n.level in _DURATION else "info")

    def add_tab(self, title: str, panel: pn.viewable.Viewer) -> None:
        """Append a tab after the page is built."""
        self.panels[title] = panel
        self._tabs.append((title, panel))

    @param.depends("state.chain", "state.colormap", "state.vmin", "state.vmax")
    def _legend_html(self) -> str:
        s = self.state
        if s.chain is None or not s.single_band or not s.vmin:
            return ""
        return colorbar_html(s.colormap, float(s.vmin[0]), float(s.vmax[0]), title=s.expression)

    def sidebar(self) -> pn.Column:
        """Messages and tabs."""
        return pn.Column(self._inline, self._tabs, sizing_mode="stretch_width")

    def main(self) -> pn.Column:
        """The map with its legend and layer list."""
        footer = pn.Row(self._layers, pn.layout.HSpacer(), self._legend,
                        sizing_mode="stretch_width")
        return pn.Column(self.map, footer, sizing_mode="stretch_both")

    def template(self) -> pn.template.BaseTemplate:
        """The served page."""
        template = pn.template.FastListTemplate(
            title=self.title, sidebar_width=470, accent="#0b6e99", header_background="#0b3954",
            theme_toggle=False, main_layout=None,
        )
        template.sidebar.append(self.sidebar())
        template.main.append(self.main())
        return template

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Row(self.sidebar(), self.main(), sizing_mode="stretch_both")
