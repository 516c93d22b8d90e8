"""Split tab: two layers (two dates, two presets, or both) side by side with linked pan and
zoom, or on one map with a swipe between them.

``SplitView(backend=b, left=chain1, right=chain2)`` is the reusable piece (the seed's
``map.split(p1, p2)``): two Bokeh figures sharing one x and one y range, so panning or
zooming either moves both. In swipe mode the right layer's figure lies exactly over the
left one and is cut with a CSS ``clip-path`` the slider moves.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.models import Label, PanTool, Range1d, ResetTool, WheelZoomTool, WMTSTileSource
from bokeh.plotting import figure

from components.backend import Backend
from components.presets import preset
from components.session import locked
from components.state import AppState
from components.statebase import overlaps, union_box
from components.tilemath import to_lonlat, to_mercator
from engine.chain import Chain, process
from engine.collection import Collection
from engine.errors import EOXError, InvalidInput

log = logging.getLogger(__name__)

#: The display choice meaning "the chain the main map shows, on the chosen scene".
CURRENT = "current"
MODES = ("Side by side", "Swipe")
NO_TILES = "data:,"
#: Height of the split maps on the served page (px).
PAGE_HEIGHT = 270


def _ranges(view: tuple | None) -> tuple[Range1d, Range1d]:
    w, s, e, n = view or (-20.0, 30.0, 40.0, 65.0)
    (x0, x1), (y0, y1) = to_mercator(np.array([w, e]), np.array([s, n]))
    return Range1d(float(x0), float(x1)), Range1d(float(y0), float(y1))


class SplitView(pn.viewable.Viewer):
    """Two chains on linked maps: side by side, or swiped on one map.

    Args:
        backend: registers the chains (their tiles come from the service's URLs).
        left, right: the chains shown (None: an empty map).
        view: W, S, E, N shown first (WGS84).
    """

    backend = param.ClassSelector(class_=Backend, doc="Engine handles (chain registration).")
    left = param.ClassSelector(class_=Chain, default=None, allow_None=True)
    right = param.ClassSelector(class_=Chain, default=None, allow_None=True)
    left_label = param.String("", doc="Caption of the left layer.")
    right_label = param.String("", doc="Caption of the right layer.")
    mode = param.Selector(objects=list(MODES), default="Side by side")
    swipe = param.Number(0.5, bounds=(0.0, 1.0), doc="Swipe position, left to right.")
    view = param.Tuple(default=None, length=4, allow_None=True, doc="W, S, E, N first shown.")
    height = param.Integer(420, bounds=(100, None), doc="Map height in pixels.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.x_range, self.y_range = _ranges(self.view)
        self.figures: dict[str, Any] = {}
        self._tiles: dict[str, Any] = {}
        self._labels: dict[str, Label] = {}
        for side in ("left", "right"):
            self.figures[side] = self._figure(side)
        self._side = pn.Row(pn.pane.Bokeh(self.figures["left"], sizing_mode="stretch_width"),
                            pn.pane.Bokeh(self.figures["right"], sizing_mode="stretch_width"),
                            sizing_mode="stretch_width")
        # swipe: the same two layers on two more figures stacked in one box
        self.figures["under"] = self._figure("left", name="under")
        self.figures["over"] = self._figure("right", name="over")
        self._over = pn.pane.Bokeh(self.figures["over"], sizing_mode="stretch_width",
                                   styles={"position": "absolute", "top": "0", "left": "0",
                                           "width": "100%"})
        self._stack = pn.Column(
            pn.pane.Bokeh(self.figures["under"], sizing_mode="stretch_width"), self._over,
            sizing_mode="stretch_width", height=self.height + 10,
            styles={"position": "relative"})
        self._slider = pn.widgets.FloatSlider.from_param(
            self.param.swipe, name="Swipe", step=0.01, sizing_mode="stretch_width",
            show_value=False)
        self._captions = pn.pane.HTML("", margin=(0, 10), name="split-captions")
        self._layers_changed()
        self._swipe_changed()

    def _figure(self, side: str, *, name: str | None = None) -> Any:
        pan, wheel = PanTool(), WheelZoomTool()
        fig = figure(x_range=self.x_range, y_range=self.y_range, tools=[pan, wheel, ResetTool()],
                     active_drag=pan, active_scroll=wheel, height=self.height,
                     sizing_mode="stretch_width", x_axis_type=None, y_axis_type=None,
                     background_fill_color="#1b2230", toolbar_location=None,
                     outline_line_color=None, min_border=0, name=f"eox-split-{name or side}")
        fig.grid.visible = False
        if self.backend is not None:  # EOX_BASEMAP, else the offline base map
            fig.add_tile(WMTSTileSource(url=self.backend.basemap_url), level="image")
        rend = fig.add_tile(WMTSTileSource(url=NO_TILES), level="image")
        rend.visible = False
        self._tiles[name or side] = rend
        label = Label(x=8, y=8, x_units="screen", y_units="screen", text="",
                      text_font_size="12px", text_color="#ffffff",
                      background_fill_color="#000000", background_fill_alpha=0.6)
        fig.add_layout(label)
        self._labels[name or side] = label
        return fig

    def url(self, side: str) -> str:
        """The tile URL template of the ``side`` chain ("" when none)."""
        chain = self.left if side == "left" else self.right
        return self.backend.register(chain) if chain is not None else ""

    @param.depends("left", "right", "left_label", "right_label", watch=True)
    @locked(lambda self: self.x_range)
    def _layers_changed(self) -> None:
        for side, names in (("left", ("left", "under")), ("right", ("right", "over"))):
            url = self.url(side)
            caption = self.left_label if side == "left" else self.right_label
            for n in names:
                rend = self._tiles[n]
                if url and rend.tile_source.url != url:
                    rend.tile_source.url = url
                rend.visible = bool(url)
                self._labels[n].text = caption
        self._captions.object = (
            f"◀ {html.escape(self.left_label or 'left')} &nbsp;|&nbsp; "
            f"{html.escape(self.right_label or 'right')} ▶")

    @param.depends("swipe", watch=True)
    def _swipe_changed(self) -> None:
        pct = round(100 * self.swipe, 2)
        self._over.styles = {**self._over.styles, "clip-path": f"inset(0 0 0 {pct}%)"}

    @param.depends("mode")
    def _layout(self) -> pn.viewable.Viewable:
        if self.mode == "Swipe":
            return pn.Column(self._stack, self._slider, self._captions,
                             sizing_mode="stretch_width")
        return self._side

    @locked(lambda self: self.x_range)
    def show(self, bbox: tuple) -> None:
        """Show W, S, E, N (WGS84) on both maps."""
        x, y = _ranges(bbox)
        self.x_range.update(start=x.start, end=x.end)
        self.y_range.update(start=y.start, end=y.end)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(pn.widgets.RadioButtonGroup.from_param(
            self.param.mode, button_type="primary", button_style="outline"),
            self._layout, sizing_mode="stretch_width")


def layer_chain(state: AppState, ids: list[str], key: str) -> Chain:
    """The display chain of scenes ``ids`` in preset ``key`` (or the main map's display
    steps on these scenes for :data:`CURRENT`)."""
    if not ids:
        raise InvalidInput("pick a scene for each side")
    coll = Collection(state.collection, catalog=state.backend.catalog).ids(list(ids))
    base = process(coll, mosaic="latest")
    if key == CURRENT:
        if state.chain is None:
            raise InvalidInput("nothing is displayed on the main map yet: pick a preset")
        return base.model_copy(update={"steps": state.chain.steps})
    p = preset(key)
    if p.single_band:
        return base.expression(p.expression).scale(p.vmin, p.vmax).colormap(
            p.colormap or "viridis")
    return base.bands(*p.bands).scale([p.vmin] * 3, [p.vmax] * 3)


class SplitPanel(pn.viewable.Viewer):
    """The Split tab: a scene and a display per side; the maps appear above the main map."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    show = param.Boolean(False, doc="Whether the split view is shown.", label="Show split view")
    left_scene = param.Selector(objects=[], allow_None=True, label="Left scene")
    right_scene = param.Selector(objects=[], allow_None=True, label="Right scene")
    left_display = param.Selector(objects=[CURRENT], default=CURRENT, label="Left display")
    right_display = param.Selector(objects=[CURRENT], default=CURRENT, label="Right display")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        # PAGE_HEIGHT px: with the mode buttons above and the main map below, the main map
        # stays in sight on a 720 px high window (the main area scrolls for the rest)
        self.view = SplitView(backend=self.state.backend, view=self.state.viewport,
                              height=PAGE_HEIGHT)
        self._toggle = pn.widgets.Toggle.from_param(self.param.show, button_type="primary",
                                                    sizing_mode="stretch_width")
        self._widgets = {
            name: pn.widgets.Select.from_param(getattr(self.param, name),
                                               sizing_mode="stretch_width")
            for name in ("left_scene", "left_display", "right_scene", "right_display")}
        self._note = pn.pane.Markdown("Compare two dates or two displays: pick a scene and a "
                                      "display per side, then show the split view (above "
                                      "the map). Panning or zooming one map moves both.",
                                      margin=(0, 10))
        self._main = pn.Column(self.view, visible=False, sizing_mode="stretch_width",
                               name="split-view")
        self._choices_changed()
        self.refresh()

    @param.depends("state.results", "state.presets", "state.selected", watch=True)
    def _choices_changed(self) -> None:
        frame = self.state.results
        scenes: dict[str, str] = {}
        if frame is not None and not frame.empty and "id" in frame:
            dates = frame["Date"] if "Date" in frame else frame["id"]
            for sid, when in zip(frame["id"], dates, strict=True):
                scenes[f"{str(when)[:10]} · {sid}"] = str(sid)
        displays = {"Same as the main map": CURRENT}
        displays.update({preset(k).label: k for k in self.state.presets})
        ids, keys = list(scenes.values()), list(displays.values())
        # what each side shows next, decided from what it shows now: a widget whose value
        # is not among its new options picks the first one itself (an event of its own,
        # which inside a batch of ours landed AFTER our choice: both sides showed one scene
        # while the right widget named another), so the choice is applied after the options
        sel = self.state.selected[0] if self.state.selected else (ids[0] if ids else None)
        left = self.left_scene if self.left_scene in ids else sel
        right = self.right_scene if self.right_scene in ids else \
            next((i for i in ids if i != left), left)
        shown = {f"{side}_display": d if (d := getattr(self, f"{side}_display")) in keys
                 else CURRENT for side in ("left", "right")}
        for side in ("left", "right"):  # dict objects: the widgets show the names
            self.param[f"{side}_scene"].objects = scenes
            self.param[f"{side}_display"].objects = displays
        self.param.update(left_scene=left, right_scene=right, **shown)

    @param.depends("show", "left_scene", "right_scene", "left_display", "right_display",
                   watch=True)
    def refresh(self) -> None:
        """Rebuild both sides' chains (only while the split view is shown)."""
        was_shown, self._was_shown = getattr(self, "_was_shown", False), self.show
        self._main.visible = self.show
        # the toggle says what it does and shows the state: outline while off, solid while on
        self._toggle.param.update(
            name="Hide split view (on)" if self.show else "Show split view (off)",
            button_style="solid" if self.show else "outline")
        if not self.show:
            return
        labels = {v: k for k, v in self.param.left_display.names.items()}
        changes: dict[str, Any] = {}
        for side in ("left", "right"):
            scene, key = getattr(self, f"{side}_scene"), getattr(self, f"{side}_display")
            try:
                chain = layer_chain(self.state, [scene] if scene else [], key)
                self.state.backend.register(chain)
            except EOXError as exc:
                self.state.fail(exc, f"Split view ({side})")
                continue
            changes[side] = chain
            changes[f"{side}_label"] = f"{scene} · {labels.get(key, key)}"
        self.view.param.update(**changes)
        target = self._target(opening=not was_shown)
        if target is not None:
            self.view.show(target)

    def _target(self, *, opening: bool) -> tuple | None:
        """Where the split maps go: on opening, what the main map shows (the user's view
        of now, not the place the split was last open at); else, when none of the two
        scenes is in the split maps' view any more (another scene picked), to the scenes."""
        if opening:
            return self.state.viewport
        boxes = [self.state.bounds[s] for s in {self.left_scene, self.right_scene}
                 if s in self.state.bounds]
        if not boxes:
            return None
        (w, e), (s, n) = to_lonlat([self.view.x_range.start, self.view.x_range.end],
                                   [self.view.y_range.start, self.view.y_range.end])
        if any(overlaps(b, (w, s, e, n)) for b in boxes):
            return None
        return union_box(boxes)

    def main_view(self) -> pn.viewable.Viewable:
        """The split maps, for the page's main area (hidden until shown)."""
        return self._main

    def __panel__(self) -> pn.viewable.Viewable:
        w = self._widgets
        return pn.Column(self._note, self._toggle, pn.pane.Markdown("**Left**", margin=(0, 10)),
                         w["left_scene"], w["left_display"],
                         pn.pane.Markdown("**Right**", margin=(0, 10)), w["right_scene"],
                         w["right_display"], sizing_mode="stretch_width")
