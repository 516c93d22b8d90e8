"""The page: a template with the map in the main area and the tabs in the sidebar.

Tabs are a list of ``(title, factory)``; a later tab (Exports, Measure, Draw, Overlay, Split,
Extract) is one more entry: ``Shell(state=s, tabs=[*DEFAULT_TABS, ("Draw", DrawPanel)])``.
Engine errors reach the user here: every ``state.notice`` becomes a notification.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any, ClassVar

import panel as pn
import param
from panel.io.resources import CDN_DIST
from panel.theme.fast import Fast

from components.batch import BatchPanel
from components.capnotice import CapNotice
from components.display import DisplayPanel, colorbar_html
from components.draw import DrawPanel
from components.exports import ExportsPanel
from components.extract import ExtractPanel
from components.functions import FunctionPanel
from components.layers import LayerList
from components.map import MapView
from components.measure import MeasurePanel
from components.overlay import OverlayPanel
from components.profile import ProfilePanel
from components.search import SearchPanel
from components.session import locked
from components.split import SplitPanel
from components.state import AppState
from components.stretch import StretchPanel
from components.time_tab import TimePanel
from components.viewnotice import ViewNotice
from components.zoom import ZoomPanel

TabFactory = Callable[..., pn.viewable.Viewer]

#: The tabs of the sidebar, in order; each factory is called with ``state=`` the session state.
DEFAULT_TABS: tuple[tuple[str, TabFactory], ...] = (
    ("Search", SearchPanel),
    ("Display", DisplayPanel),
    ("Functions", FunctionPanel),
    ("Stretch", StretchPanel),
    ("Zoom", ZoomPanel),
    ("Split", SplitPanel),
    ("Draw", DrawPanel),
    ("Measure", MeasurePanel),
    ("Overlay", OverlayPanel),
    ("Extract", ExtractPanel),
    ("Time", TimePanel),
    ("Profile", ProfilePanel),
    ("Exports", ExportsPanel),
    ("Batch", BatchPanel),
)

#: The tab headers wrap onto a second row instead of hiding the last tabs behind a scroll
#: (13 tabs do not fit the sidebar's width).
TABS_CSS = """
:host(.bk-above) .bk-headers-wrapper { flex-wrap: wrap; overflow-x: visible; }
:host(.bk-above) .bk-header { overflow: visible; }
.bk-tab { padding: 6px 9px; }
"""

_DURATION = {"info": 3000, "success": 3000, "warning": 6000, "error": 9000}
#: Most toasts on screen at once (older ones make room), and where they appear: at the top,
#: away from the legend and the layer list under the map.
MAX_TOASTS = 3
TOAST_POSITION = "top-center"


def detail_html(detail: str) -> str:
    """The technical detail of a message, folded away until the user asks for it."""
    if not detail:
        return ""
    return ("<details><summary>Technical detail</summary><pre style='white-space: pre-wrap; "
            f"font-size: 11px; max-height: 240px; overflow: auto'>{html.escape(detail)}"
            "</pre></details>")


class OfflineFast(Fast):
    """Panel's FAST design without its Google Fonts stylesheet: the page requests nothing
    from the internet (the text falls back to the system sans-serif)."""

    _resources: ClassVar[dict] = {**Fast._resources, "font": {}, "js_modules": {
        **Fast._resources["js_modules"],
        "fast-design": f"{CDN_DIST}bundled/fast/js/fast_design.js"}}  # served locally


class Shell(pn.viewable.Viewer):
    """Template, map, layer list and tabs of one session."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    tabs = param.List(default=list(DEFAULT_TABS), doc="(title, factory) per sidebar tab.")
    title = param.String("EO Explorer")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.map = MapView(state=self.state)
        self._cap_notice = CapNotice(state=self.state)  # the scene cap, as a notification
        self._view_notice = ViewNotice(state=self.state)  # a display outside the view, too
        # Tabs are built when first shown (a page opens fast whatever the number of tabs).
        # A tab clicked before the page's document_ready gets its content only because
        # app.server.deliver_changes_after_pull stops Panel dropping those patches (issue 5).
        self._built: dict[str, pn.viewable.Viewer] = {}
        self._slots = {title: pn.Column(sizing_mode="stretch_width") for title, _ in self.tabs}
        self._main: pn.Column | None = None
        self._tabs = pn.Tabs(*self._slots.items(), dynamic=True, stylesheets=[TABS_CSS],
                             sizing_mode="stretch_width", name="tabs")
        # a tab with an ``active`` parameter is told when it is shown (Time follows the view)
        self._tabs.param.watch(lambda e: self._tab_shown(), "active")
        self._tab_shown()
        self._layers = LayerList(map=self.map)
        self._legend = pn.pane.HTML(self._legend_html, margin=(5, 10))
        self._inline = pn.pane.Alert("", alert_type="warning", visible=False,
                                     sizing_mode="stretch_width", name="message")
        self._detail = pn.pane.HTML("", visible=False, sizing_mode="stretch_width",
                                    name="message-detail", margin=(0, 10))
        self._toasts: dict[str, float] = {}  # text -> when its toast leaves the screen
        notifications = pn.state.notifications
        if notifications is not None:
            notifications.param.update(max_notifications=MAX_TOASTS, position=TOAST_POSITION)
        self._show_notice()  # one set while the session was restored from its link

    @param.depends("state.notice", watch=True)
    def _show_notice(self) -> None:
        n = self.state.notice
        if n is None:  # its cause was fixed, or a later action succeeded
            self._inline.visible = self._detail.visible = False
            return
        banner = n.level in ("error", "warning")
        self._inline.alert_type = {"error": "danger", "warning": "warning"}.get(n.level, "info")
        self._inline.object = n.text
        self._inline.visible = banner
        self._detail.object = detail_html(n.detail)
        self._detail.visible = banner and bool(n.detail)
        self._toast(n.text, n.level)

    def _toast(self, text: str, level: str) -> None:
        """A toast, unless the same text is still on screen (a repeated error is one toast)."""
        notifications = pn.state.notifications
        if notifications is None:
            return
        now = time.monotonic()
        self._toasts = {t: end for t, end in self._toasts.items() if end > now}
        if text in self._toasts:
            return
        duration = _DURATION.get(level, 4000)
        self._toasts[text] = now + duration / 1000
        notifications.send(html.escape(text), duration=duration,
                           type=level if level in _DURATION else "info")

    def panel(self, title: str) -> pn.viewable.Viewer:
        """The panel of tab ``title``, built on first use.

        A tab that declares a ``map`` parameter (Draw, Overlay) draws on the session's map;
        one with a ``main_view()`` (Split) also shows that above the map.
        """
        if title not in self._built:
            factory = dict(self.tabs)[title]
            params = getattr(factory, "param", ())
            extra: dict[str, Any] = {"map": self.map} if "map" in params else {}
            if "active" in params:  # built because it is being shown, or not
                extra["active"] = list(self._slots).index(title) == self._tabs.active
            panel = factory(state=self.state, **extra)
            self._built[title] = panel
            self._slots[title].objects = [panel]
            if hasattr(panel, "main_view") and self._main is not None:
                self._main.insert(0, panel.main_view())
        return self._built[title]

    @property
    def panels(self) -> dict[str, pn.viewable.Viewer]:
        """Every tab's panel by title (building those not shown yet)."""
        return {title: self.panel(title) for title in self._slots}

    @locked(lambda self: self.map.figure)  # a tab's panel may add renderers to the map
    def _tab_shown(self) -> None:
        titles = list(self._slots)
        self.panel(titles[self._tabs.active])
        for i, title in enumerate(titles):
            panel = self._built.get(title)
            if panel is not None and "active" in getattr(panel, "param", ()):
                panel.active = i == self._tabs.active

    def add_tab(self, title: str, panel: pn.viewable.Viewer) -> None:
        """Append a tab after the page is built."""
        self._built[title] = panel
        self._slots[title] = pn.Column(panel, sizing_mode="stretch_width")
        self._tabs.append((title, self._slots[title]))

    @param.depends("state.chain", "state.colormap", "state.vmin", "state.vmax")
    def _legend_html(self) -> str:
        s = self.state
        if s.chain is None or not s.single_band or not s.vmin:
            return ""
        return colorbar_html(s.colormap, float(s.vmin[0]), float(s.vmax[0]), title=s.expression)

    def sidebar(self) -> pn.Column:
        """Messages and tabs."""
        return pn.Column(self._inline, self._detail, self._tabs, sizing_mode="stretch_width")

    def main(self) -> pn.Column:
        """The map with its legend and layer list; above it what tabs show in the main area
        (the Split tab's maps: a tab with a ``main_view()``)."""
        if self._main is None:
            footer = pn.Row(self._layers, pn.layout.HSpacer(), self._legend,
                            sizing_mode="stretch_width")
            extra = [p.main_view() for p in self._built.values() if hasattr(p, "main_view")]
            self._main = pn.Column(*extra, self.map, footer, sizing_mode="stretch_both")
        return self._main

    def embed(self) -> pn.Column:
        """Map and legend only, no sidebar (``?embed=true``, for an iframe)."""
        legend = pn.Row(pn.layout.HSpacer(), self._legend, sizing_mode="stretch_width")
        return pn.Column(self.map, legend, sizing_mode="stretch_both", name="eox-embed")

    def template(self) -> pn.template.BaseTemplate:
        """The served page."""
        template = pn.template.FastListTemplate(
            title=self.title, sidebar_width=470, accent="#0b6e99", header_background="#0b3954",
            theme_toggle=False, main_layout=None, design=OfflineFast,
        )
        template.sidebar.append(self.sidebar())
        template.main.append(self.main())
        return template

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Row(self.sidebar(), self.main(), sizing_mode="stretch_both")
