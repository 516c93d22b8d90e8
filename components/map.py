"""The map: a Web Mercator Bokeh figure with the basemap and scene tile layers, footprints,
the selection and the search point/box.

Plain Bokeh models (no HoloViews plot) so a session's map is built in a few tens of
milliseconds: every state change only edits a data source or a tile URL in the browser.
Thousands of footprints are rasterized with Datashader for the visible range.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.core.property.descriptors import UnsetValueError
from bokeh.events import RangesUpdate, SelectionGeometry, Tap
from bokeh.models import (
    BoxSelectTool,
    BoxZoomTool,
    ColumnDataSource,
    PanTool,
    Range1d,
    ResetTool,
    TapTool,
    WheelZoomTool,
    WMTSTileSource,
)
from bokeh.plotting import figure

from components.layerspec import FUNCTION_LAYER, LAYER_NAMES, LayerSpec
from components.mapfigure import (
    FOOTPRINT_COLOUR,
    VECTOR_MAX,
    add_readout_and_scale,
    outline_frame,
    outline_raster,
    rings,
)
from components.session import locked, run_locked
from components.state import AppState
from components.tilemath import GUESS_SIZE, fit, to_lonlat, to_mercator

#: URL of a tile layer with nothing to show (the layer is hidden, so never requested).
NO_TILES = "data:,"

#: The figure whose document edits of the map's models are locked on.
_FIGURE = locked(lambda self: self._figure)


class MapView(pn.viewable.Viewer):
    """The map of a session; reports the view to ``state.viewport``, obeys ``view_request``."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    layers = param.List(default=[], item_type=LayerSpec, doc="Tile layers, bottom first.")
    height = param.Integer(640, doc="Minimum map height in pixels.")

    def __init__(self, **params: Any) -> None:
        if not params.get("layers"):
            params["layers"] = [LayerSpec(name=n) for n in LAYER_NAMES]
        super().__init__(**params)
        self._size = GUESS_SIZE
        self._target: tuple | None = None  # the box last fitted, until the user moves away
        self._set_x: tuple[float, float] | None = None
        self._outline_data = outline_frame({})
        self._figure = self._build()
        self._tiles: dict[str, Any] = {}
        self._extra_urls: dict[str, str] = {}  # add_tile_layer: name -> XYZ template
        self._adding: set[str] = set()  # add_tile_layer: renderers not added yet
        self._glyphs: dict[str, list] = {}  # add_glyph_layer: name -> renderers (rasters...)
        self._on_remove: dict[str, Any] = {}  # layers the layer list can remove: callbacks
        self._footprints_changed()
        self._selection_changed()
        self._marks_changed()
        self._apply_layers()
        self._pick_changed()
        if self.state.function_layer:  # from a shared link
            self._function_layer_changed()
        if self.state.viewport is None or self.state.view_request is not None:
            self._zoom()
        self._pane = pn.pane.Bokeh(self._figure, sizing_mode="stretch_both",
                                   min_height=self.height)

    # -- the figure -----------------------------------------------------------------------
    def _build(self) -> Any:
        x0, y0, x1, y1 = self._fit(self.state.view_request or self.state.viewport
                                   or (-20.0, 30.0, 40.0, 65.0))
        self._pan, self._box_select = PanTool(), BoxSelectTool(renderers=[])
        tools = [self._pan, WheelZoomTool(), BoxZoomTool(match_aspect=True), self._box_select,
                 TapTool(renderers=[]), ResetTool()]
        fig = figure(x_range=Range1d(x0, x1), y_range=Range1d(y0, y1), tools=tools,
                     active_drag=self._pan, active_scroll=tools[1], sizing_mode="stretch_both",
                     min_height=self.height, x_axis_type=None, y_axis_type=None,
                     background_fill_color="#1b2230", toolbar_location="above",
                     border_fill_alpha=0.0, outline_line_color=None, name="eox-map")
        fig.grid.visible = False
        fig.toolbar.logo = None
        self._src_outline = ColumnDataSource({"x": [], "y": []})
        self._outline = fig.line("x", "y", source=self._src_outline, color=FOOTPRINT_COLOUR,
                                 line_width=1.2, name="eox-footprints")
        self._src_raster = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        self._raster = fig.image_rgba("image", "x", "y", "dw", "dh", source=self._src_raster,
                                      name="eox-footprints-raster")
        self._src_selection = ColumnDataSource({"xs": [], "ys": [], "id": []})
        fig.patches("xs", "ys", source=self._src_selection, fill_alpha=0.0,
                    line_color="#00e5ff", line_width=2.5, name="eox-selection")
        self._src_point = ColumnDataSource({"x": [], "y": []})
        fig.scatter("x", "y", source=self._src_point, color="#ff3d00", size=11,
                    marker="circle_cross", name="eox-point")
        self._src_box = ColumnDataSource({"left": [], "right": [], "top": [], "bottom": []})
        fig.quad("left", "right", "top", "bottom", source=self._src_box, fill_alpha=0.05,
                 fill_color="#ff3d00", line_color="#ff3d00", line_dash="dashed", line_width=2,
                 name="eox-box")

        add_readout_and_scale(fig)

        fig.x_range.on_change("end", self._on_bokeh_range)
        fig.y_range.on_change("end", self._on_bokeh_range)
        fig.on_change("inner_width", self._on_plot_size)
        fig.on_change("inner_height", self._on_plot_size)
        fig.on_event(Tap, lambda e: self._on_tap(x=e.x, y=e.y))
        fig.on_event(SelectionGeometry, self._on_selection_geometry)
        fig.on_event(RangesUpdate, self._on_ranges_settled)
        return fig

    def _fit(self, bbox: tuple) -> tuple[float, float, float, float]:
        """Mercator ranges showing ``bbox`` with square pixels at the current plot size.

        While that size is a guess, a link's view (a zero-height box) gets half the height:
        the browser then grows the height to its aspect and keeps the width (the zoom),
        whereas a too tall guess would make it widen the view instead.
        """
        x0, y0, x1, y1 = fit(bbox, self._size)
        if bbox[1] == bbox[3] and self._size is GUESS_SIZE:
            cy, dy = (y0 + y1) / 2, (y1 - y0) / 4
            y0, y1 = cy - dy, cy + dy
        return x0, y0, x1, y1

    # -- layers -----------------------------------------------------------------------------
    def _layer_url(self, name: str) -> str:
        if name == "basemap":  # EOX_BASEMAP, else the service's offline base map
            return self.state.backend.basemap_url
        if name in self._extra_urls:
            return self._extra_urls[name]
        return self.state.tile_url

    def add_tile_layer(self, name: str, url: str) -> None:
        """Show an XYZ template ({X}/{Y}/{Z}) as a named layer on top, or re-point it."""
        self._extra_urls[name] = url
        if name in self._tiles or name in self._adding:
            self._apply_layers()
            return
        self._adding.add(name)

        def add() -> None:
            self._adding.discard(name)
            rend = self._figure.add_tile(WMTSTileSource(url=NO_TILES), level="image")
            rend.name, rend.visible = f"eox-{name}", False
            self._tiles[name] = rend
            self.layers = [*self.layers, LayerSpec(name=name)]

        run_locked(self._figure.document, add, action="adding a map layer")

    def add_glyph_layer(self, name: str, renderer: Any, *, on_remove: Any = None) -> None:
        """List a renderer (or a list of them) a component drew on the figure (a large raster,
        an overlay) as a named layer on top: the layer list then sets its visibility, opacity
        (``global_alpha``, where the glyph has one) and order; with ``on_remove`` (called
        after ``remove_layer(name)``) the layer list can also remove it."""
        self._glyphs[name] = list(renderer) if isinstance(renderer, list | tuple) else [renderer]
        if on_remove is not None:
            self._on_remove[name] = on_remove
        self.layers = [*[s for s in self.layers if s.name != name], LayerSpec(name=name)]

    def add_video(self, source: Any, bounds: Any = None, *, name: str | None = None,
                  fps: float | None = None, opacity: float = 1.0) -> Any:
        """Lay an MP4 or GIF (as ``export_video`` writes) on the map over ``bounds``
        (W, S, E, N in WGS84; read from the file's metadata when None), as a named layer on
        top (re-adding a name replaces it).

        Returns the ``components.videolayer.VideoLayer``: show it (its player) on the page,
        the player animates the frames in the browser.
        """
        from dataclasses import replace
        from pathlib import Path

        from components.videolayer import VideoLayer
        from engine.errors import InvalidInput

        if not (isinstance(opacity, int | float) and 0 <= opacity <= 1):
            raise InvalidInput(f"opacity must be in 0..1, got {opacity!r}")
        if name is None:
            name = f"Video {Path(source).stem}" if isinstance(source, str | Path) else "Video"
        layer = VideoLayer(map=self, source=source, bounds=bounds, fps=fps, name=name)
        if any(s.name == name for s in self.layers):
            self.remove_layer(name)
        self.add_glyph_layer(name, layer.renderer)
        self.layers = [replace(s, opacity=float(opacity)) if s.name == name else s
                       for s in self.layers]
        return layer

    def removable(self, name: str) -> bool:
        """Whether the layer list may remove layer ``name`` (added with ``on_remove``)."""
        return name in self._on_remove

    def remove_layer(self, name: str) -> None:
        """Remove a layer added by ``add_glyph_layer`` or ``add_tile_layer``."""
        rends = self._glyphs.pop(name, None) or (
            [self._tiles.pop(name)] if name in self._tiles else [])
        self._extra_urls.pop(name, None)
        self.layers = [s for s in self.layers if s.name != name]
        if rends:
            run_locked(self._figure.document, lambda: setattr(
                self._figure, "renderers", [r for r in self._figure.renderers
                                            if all(r is not x for x in rends)]))
        done = self._on_remove.pop(name, None)
        if done is not None:
            done()

    @_FIGURE
    def _apply_layers(self) -> None:
        """Push URLs, visibility, opacity and order to the Bokeh tile renderers."""
        fig = self._figure
        for spec in self.layers:
            if spec.name == "footprints":
                for rend in (self._outline, self._raster):
                    rend.visible = spec.visible
                self._outline.glyph.line_alpha = spec.opacity
                self._raster.glyph.global_alpha = spec.opacity
                continue
            if spec.name in self._glyphs:
                for rend in self._glyphs[spec.name]:
                    rend.visible = spec.visible
                    if hasattr(rend.glyph, "global_alpha"):
                        rend.glyph.global_alpha = spec.opacity
                continue
            url = self._layer_url(spec.name)
            rend = self._tiles.get(spec.name)
            if rend is None:
                if not url:  # no tile layer until it has tiles: Bokeh never reports a map
                    continue  # with an empty one as drawn, so onload would never run
                rend = self._figure.add_tile(WMTSTileSource(url=url), level="image")
                rend.name = f"eox-{spec.name}"
                self._tiles[spec.name] = rend
            if url and rend.tile_source.url != url:
                rend.tile_source.url = url
            rend.visible = bool(url) and spec.visible
            rend.alpha = spec.opacity * (self.state.opacity if spec.name == "scenes" else 1.0)
        ours = [r for s in self.layers
                for r in ([self._tiles[s.name]] if s.name in self._tiles
                          else self._glyphs.get(s.name, []))]
        order = ours + [r for r in fig.renderers if r not in ours]
        if list(fig.renderers) != order:
            fig.renderers = order

    @param.depends("state.function_layer", watch=True)
    def _function_layer_changed(self) -> None:
        chain_id = self.state.function_layer
        if chain_id:
            self.add_tile_layer(FUNCTION_LAYER, self.state.backend.map_tile_url(chain_id))
        else:
            self.remove_layer(FUNCTION_LAYER)

    @param.depends("layers", "state.tile_url", "state.opacity", watch=True)
    def _layers_changed(self) -> None:
        self._apply_layers()

    # -- state -> sources -----------------------------------------------------------------
    @param.depends("state.footprints", watch=True)
    @_FIGURE
    def _footprints_changed(self) -> None:
        footprints = self.state.footprints or {}
        many = len(footprints) > VECTOR_MAX
        self._outline_data = outline_frame(footprints)
        if many:
            self._src_outline.data = {"x": [], "y": []}
            self._rasterize()
        else:
            self._src_outline.data = {"x": self._outline_data["x"].to_numpy(),
                                      "y": self._outline_data["y"].to_numpy()}
            self._src_raster.data = {"image": [], "x": [], "y": [], "dw": [], "dh": []}

    @_FIGURE
    def _rasterize(self) -> None:
        fig = self._figure
        xr, yr = (fig.x_range.start, fig.x_range.end), (fig.y_range.start, fig.y_range.end)
        img = outline_raster(self._outline_data, xr, yr, self._size)
        self._src_raster.data = {"image": [img], "x": [xr[0]], "y": [yr[0]],
                                 "dw": [xr[1] - xr[0]], "dh": [yr[1] - yr[0]]}

    @param.depends("state.selected", "state.footprints", watch=True)
    @_FIGURE
    def _selection_changed(self) -> None:
        xs, ys, ids = [], [], []
        for sid in self.state.selected:
            for ring in rings(self.state.footprints.get(sid) or {}):
                arr = np.asarray(ring, dtype=float)
                x, y = to_mercator(arr[:, 0], arr[:, 1])
                xs.append(x); ys.append(y); ids.append(sid)
        self._src_selection.data = {"xs": xs, "ys": ys, "id": ids}

    @param.depends("state.point", "state.bbox", watch=True)
    @_FIGURE
    def _marks_changed(self) -> None:
        point, bbox = self.state.point, self.state.bbox
        if point is None:
            self._src_point.data = {"x": [], "y": []}
        else:
            x, y = to_mercator(np.array([point[0]]), np.array([point[1]]))
            self._src_point.data = {"x": x, "y": y}
        if bbox is None:
            self._src_box.data = {"left": [], "right": [], "top": [], "bottom": []}
        else:
            (x0, x1), (y0, y1) = to_mercator(np.array([bbox[0], bbox[2]]),
                                             np.array([bbox[1], bbox[3]]))
            self._src_box.data = {"left": [x0], "right": [x1], "top": [y1], "bottom": [y0]}

    @param.depends("state.pick", watch=True)
    @_FIGURE
    def _pick_changed(self) -> None:
        """Dragging draws the search box in "box" mode, pans otherwise."""
        self._figure.toolbar.active_drag = (self._box_select if self.state.pick == "box"
                                            else self._pan)

    # -- browser -> state -------------------------------------------------------------------
    def _on_bokeh_range(self, attr: str, old: Any, new: Any) -> None:
        fig = self._figure
        self._on_range(x_range=(fig.x_range.start, fig.x_range.end),
                       y_range=(fig.y_range.start, fig.y_range.end))

    def _on_ranges_settled(self, event: Any) -> None:
        if len(self.state.footprints or {}) > VECTOR_MAX:
            self._rasterize()

    def _on_plot_size(self, attr: str, old: Any, new: Any) -> None:
        try:
            w, h = self._figure.inner_width, self._figure.inner_height
        except UnsetValueError:  # the browser reports one before the other
            return
        if not (w and h and w > 0 and h > 0) or (w, h) == self._size:
            return
        self._size = (int(w), int(h))
        self.state.map_size = self._size
        fig = self._figure
        untouched = self._set_x is not None and np.allclose(
            self._set_x, (fig.x_range.start, fig.x_range.end), rtol=0, atol=1e-3)
        if untouched and self._target is not None and self._target[1] != self._target[3]:
            self._show(self._target)  # refit the box now the real size is known

    def _on_selection_geometry(self, event: Any) -> None:
        geom = event.geometry or {}
        if geom.get("type") == "rect" and event.final:
            self._on_box(bounds=(geom["x0"], geom["y0"], geom["x1"], geom["y1"]))

    def _on_range(self, x_range: Any = None, y_range: Any = None, **_: Any) -> None:
        if not x_range or not y_range or None in (*x_range, *y_range):
            return
        lons, lats = to_lonlat(np.array(x_range), np.array(y_range))
        self.state.viewport = (float(lons[0]), float(lats[0]), float(lons[1]), float(lats[1]))

    def _on_tap(self, x: Any = None, y: Any = None, **_: Any) -> None:
        if x is None or y is None or self.state.pick != "point":
            return
        lon, lat = to_lonlat(x, y)
        self.state.param.update(point=(round(float(lon), 5), round(float(lat), 5)), bbox=None,
                                place="")

    def _on_box(self, bounds: Any = None, **_: Any) -> None:
        if bounds is None or self.state.pick != "box":
            return
        x0, y0, x1, y1 = bounds
        (w, e), (s, n) = to_lonlat(np.array([x0, x1]), np.array([y0, y1]))
        self.state.param.update(
            bbox=tuple(round(float(v), 5) for v in (w, s, e, n)), point=None, place="")

    # -- state -> view ------------------------------------------------------------------------
    @param.depends("state.view_request", watch=True)
    def _zoom(self) -> None:
        req = self.state.view_request
        if req is None:
            req = self.state.viewport or (-20.0, 30.0, 40.0, 65.0)
        self._show(req)

    @_FIGURE
    def _show(self, bbox: tuple) -> None:
        x0, y0, x1, y1 = self._fit(bbox)
        self._target, self._set_x = tuple(bbox), (x0, x1)
        self._figure.x_range.update(start=x0, end=x1)
        self._figure.y_range.update(start=y0, end=y1)
        self._on_range(x_range=(x0, x1), y_range=(y0, y1))

    @property
    def figure(self) -> Any:
        """The Bokeh figure (for tools that add their own renderers)."""
        return self._figure

    def __panel__(self) -> pn.viewable.Viewable:
        return self._pane
