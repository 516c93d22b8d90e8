"""The map: Web Mercator plot with the basemap and scene tile layers, footprints, streams.

HoloViews draws the footprints (Datashader, so thousands of scenes stay fast), the selection,
the search point/box and owns the streams (view range, click, box). The tile layers are
Bokeh tile renderers added once per plot, so a new chain only changes a URL in the browser.
"""

from __future__ import annotations

import math
from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import (
    CustomJS,
    Label,
    Range1d,
    ScaleBar,
    WMTSTileSource,
)

from components.layers import LAYER_NAMES, LayerSpec
from components.state import AppState

R = 6378137.0
#: Up to this many footprints are drawn as vectors; more are rasterized with Datashader.
VECTOR_MAX = 1000
FOOTPRINT_COLOUR = "#ffd54f"
WORLD = 2 * math.pi * R


def to_mercator(lon: Any, lat: Any) -> tuple[Any, Any]:
    """WGS84 degrees -> Web Mercator metres (numpy-friendly)."""
    lat = np.clip(lat, -85.05, 85.05)
    x = np.radians(lon) * R
    y = np.log(np.tan(np.pi / 4 + np.radians(lat) / 2)) * R
    return x, y


def to_lonlat(x: Any, y: Any) -> tuple[Any, Any]:
    """Web Mercator metres -> WGS84 degrees."""
    return np.degrees(np.asarray(x) / R), np.degrees(np.arctan(np.sinh(np.asarray(y) / R)))


def _rings(geometry: dict) -> list[list[list[float]]]:
    kind, coords = geometry.get("type"), geometry.get("coordinates") or []
    if kind == "Polygon":
        return [coords[0]] if coords else []
    if kind == "MultiPolygon":
        return [poly[0] for poly in coords if poly]
    return []


_READOUT_JS = """
const lon = cb_obj.x / 6378137 * 180 / Math.PI;
const lat = Math.atan(Math.sinh(cb_obj.y / 6378137)) * 180 / Math.PI;
label.text = `lon ${lon.toFixed(5)}  lat ${lat.toFixed(5)}`;
"""

# The scale bar measures a range in true metres: Mercator metres times cos(latitude).
_SCALE_JS = """
const yc = (y.start + y.end) / 2;
const k = Math.cos(Math.atan(Math.sinh(yc / 6378137)));
r.start = x.start * k; r.end = x.end * k;
"""


class MapView(pn.viewable.Viewer):
    """The map of a session; reports the view to ``state.viewport``, obeys ``view_request``."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    layers = param.List(default=[], item_type=LayerSpec, doc="Tile layers, bottom first.")
    height = param.Integer(640, doc="Map height in pixels.")

    def __init__(self, **params: Any) -> None:
        self._figure: Any = None
        self._tiles: dict[str, Any] = {}
        super().__init__(**params)
        if not self.layers:
            names = [n for n in LAYER_NAMES if n != "basemap" or self.state.backend.basemap]
            self.layers = [LayerSpec(name=n) for n in names]
        self._size = (900, self.height)
        if self.state.viewport is None and self.state.view_request is not None:
            self._report(self._initial_extent())
        self._pane = pn.pane.HoloViews(self._overlay(), sizing_mode="stretch_both",
                                       min_height=self.height, linked_axes=False)

    # -- elements ---------------------------------------------------------------------
    def _outline_frame(self, footprints: dict) -> pd.DataFrame:
        """Footprint outlines in Mercator, one NaN-separated x/y table (fast to draw)."""
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        for geom in footprints.values():
            for ring in _rings(geom):
                arr = np.asarray(ring, dtype=float)
                x, y = to_mercator(arr[:, 0], arr[:, 1])
                xs += [x, np.array([np.nan])]
                ys += [y, np.array([np.nan])]
        if not xs:
            return pd.DataFrame({"x": np.array([], float), "y": np.array([], float)})
        return pd.DataFrame({"x": np.concatenate(xs), "y": np.concatenate(ys)})

    def _outlines(self, footprints: dict) -> hv.Path:
        """Vector outlines when there are few footprints (many are rasterized instead)."""
        frame = self._outline_frame(footprints if len(footprints) <= VECTOR_MAX else {})
        return hv.Path(frame, ["x", "y"]).opts(color=FOOTPRINT_COLOUR, line_width=1.2)

    def _outline_raster(self, footprints: dict, x_range: Any = None, y_range: Any = None,
                        width: Any = None, height: Any = None, **_: Any) -> hv.RGB:
        """Thousands of outlines through Datashader, re-rasterized for each view."""
        if len(footprints) <= VECTOR_MAX or not x_range or not y_range:
            return hv.RGB(np.zeros((2, 2, 4), dtype=np.uint8), bounds=(0, 0, 1, 1))
        import datashader as ds
        import datashader.transfer_functions as tf

        w, h = int(width or self._size[0]), int(height or self._size[1])
        canvas = ds.Canvas(plot_width=max(w, 10), plot_height=max(h, 10),
                           x_range=tuple(x_range), y_range=tuple(y_range))
        agg = canvas.line(self._outline_frame(footprints), "x", "y", agg=ds.count())
        img = tf.spread(tf.shade(agg, cmap=[FOOTPRINT_COLOUR], min_alpha=200), px=1)
        rgba = np.flipud(np.asarray(img.data).view(np.uint8).reshape((*img.shape, 4)))
        return hv.RGB(rgba, bounds=(x_range[0], y_range[0], x_range[1], y_range[1]),
                      vdims=["R", "G", "B", "A"])

    def _selection(self, selected: list, footprints: dict) -> hv.Polygons:
        polys = []
        for sid in selected:
            geom = footprints.get(sid)
            for ring in _rings(geom or {}):
                arr = np.asarray(ring, dtype=float)
                x, y = to_mercator(arr[:, 0], arr[:, 1])
                polys.append({"x": x, "y": y, "id": sid})
        return hv.Polygons(polys, vdims=["id"]).opts(
            fill_alpha=0.0, line_color="#00e5ff", line_width=2.5)

    def _search_marks(self, point: tuple | None, bbox: tuple | None) -> hv.Overlay:
        px, py = ([], []) if point is None else to_mercator(np.array([point[0]]),
                                                              np.array([point[1]]))
        pts = hv.Points((px, py)).opts(color="#ff3d00", size=11, marker="circle_cross",
                                       tools=["box_select"])
        rects = []
        if bbox is not None:
            (x0, x1), (y0, y1) = to_mercator(np.array([bbox[0], bbox[2]]),
                                             np.array([bbox[1], bbox[3]]))
            rects = [(x0, y0, x1, y1)]
        box = hv.Rectangles(rects).opts(fill_alpha=0.05, line_color="#ff3d00",
                                        line_dash="dashed", line_width=2)
        return pts * box

    def _overlay(self) -> hv.Overlay:
        s = self.state
        outlines = hv.DynamicMap(self._outlines,
                                 streams=[hv.streams.Params(s, ["footprints"])])
        shaded = hv.DynamicMap(self._outline_raster, streams=[
            hv.streams.Params(s, ["footprints"]), hv.streams.RangeXY(),
            hv.streams.PlotSize()])
        selection = hv.DynamicMap(self._selection,
                                  streams=[hv.streams.Params(s, ["selected", "footprints"])])
        marks = hv.DynamicMap(self._search_marks,
                              streams=[hv.streams.Params(s, ["point", "bbox"])])
        self._plot_size = hv.streams.PlotSize(source=marks)
        self._plot_size.add_subscriber(self._on_size)
        x0, y0, x1, y1 = self._initial_extent()
        return (shaded * outlines * selection * marks).opts(
            hv.opts.Overlay(
                xlim=(x0, x1), ylim=(y0, y1), xaxis=None, yaxis=None, responsive=True,
                min_height=self.height, hooks=[self._hook], active_tools=["wheel_zoom", "pan"],
                tools=["tap"], bgcolor="#1b2230", show_grid=False, toolbar="above",
                default_tools=["pan", "wheel_zoom", "box_zoom", "reset"],
            ),
            hv.opts.RGB(xaxis=None, yaxis=None),
        )

    def _initial_extent(self) -> tuple[float, float, float, float]:
        s = self.state
        view = s.view_request or s.viewport or (-20.0, 30.0, 40.0, 65.0)
        return self._fit(view)

    def _fit(self, bbox: tuple) -> tuple[float, float, float, float]:
        """Mercator ranges showing ``bbox`` with square pixels at the current plot size."""
        (x0, x1), (y0, y1) = to_mercator(np.array([bbox[0], bbox[2]]),
                                         np.array([bbox[1], bbox[3]]))
        w, h = self._size
        dx, dy = max(x1 - x0, 1.0) * 1.05, max(y1 - y0, 1.0) * 1.05
        if dx / dy < w / h:
            dx = dy * w / h
        else:
            dy = dx * h / w
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return cx - dx / 2, cy - dy / 2, cx + dx / 2, cy + dy / 2

    # -- bokeh: tile layers, readout, scale bar -----------------------------------------
    def _hook(self, plot: Any, element: Any) -> None:
        fig = plot.state
        if fig is self._figure:
            return
        self._figure = fig
        self._tiles = {}
        for spec in self.layers:
            if spec.name == "footprints":
                continue
            url = self._layer_url(spec.name)
            source = WMTSTileSource(url=url or "about:blank#{Z}{X}{Y}")
            rend = fig.add_tile(source, level="image")
            rend.name = f"eox-{spec.name}"
            self._tiles[spec.name] = rend
        self._apply_layers()
        label = Label(x=8, y=8, x_units="screen", y_units="screen", text="lon –  lat –",
                      text_font_size="12px", text_color="#ffffff",
                      background_fill_color="#000000", background_fill_alpha=0.55,
                      name="eox-readout")
        fig.add_layout(label)
        fig.js_on_event("mousemove", CustomJS(args={"label": label}, code=_READOUT_JS))
        true_range = Range1d(0, 1)
        fig.add_layout(ScaleBar(range=true_range, unit="m", location="bottom_right",
                                bar_length=150, bar_length_units="screen",
                                background_fill_alpha=0.7, name="eox-scalebar"))
        update = CustomJS(args={"x": fig.x_range, "y": fig.y_range, "r": true_range},
                          code=_SCALE_JS)
        for rng in (fig.x_range, fig.y_range):
            rng.js_on_change("start", update)
            rng.js_on_change("end", update)
        # Bokeh callbacks rather than HoloViews streams: under bokeh-fastapi only these fire.
        fig.x_range.on_change("end", self._on_bokeh_range)
        fig.y_range.on_change("end", self._on_bokeh_range)
        fig.on_event("tap", lambda e: self._on_tap(x=e.x, y=e.y))
        fig.on_event("selectiongeometry", self._on_selection_geometry)
        k = math.cos(math.atan(math.sinh((fig.y_range.start + fig.y_range.end) / 2 / R)))
        true_range.update(start=fig.x_range.start * k, end=fig.x_range.end * k)

    def _layer_url(self, name: str) -> str:
        if name == "basemap":
            return self.state.backend.basemap or ""
        return self.state.tile_url

    def _apply_layers(self) -> None:
        """Push URLs, visibility, opacity and order to the Bokeh tile renderers."""
        if self._figure is None:
            return
        for spec in self.layers:
            if spec.name == "footprints":
                for rend in self._figure.renderers:
                    if type(getattr(rend, "glyph", None)).__name__ == "ImageRGBA":
                        rend.visible, rend.glyph.global_alpha = spec.visible, spec.opacity
                continue
            rend = self._tiles.get(spec.name)
            if rend is None:
                continue
            url = self._layer_url(spec.name)
            if url and rend.tile_source.url != url:
                rend.tile_source.url = url
            rend.visible = bool(url) and spec.visible
            rend.alpha = spec.opacity * (self.state.opacity if spec.name == "scenes" else 1.0)
        ours = [self._tiles[s.name] for s in self.layers if s.name in self._tiles]
        others = [r for r in self._figure.renderers if r not in ours]
        order = ours + others
        if list(self._figure.renderers) != order:
            self._figure.renderers = order

    @param.depends("layers", "state.tile_url", "state.opacity", watch=True)
    def _layers_changed(self) -> None:
        self._apply_layers()

    # -- streams -> state ----------------------------------------------------------------
    def _on_bokeh_range(self, attr: str, old: Any, new: Any) -> None:
        fig = self._figure
        self._on_range(x_range=(fig.x_range.start, fig.x_range.end),
                       y_range=(fig.y_range.start, fig.y_range.end))

    def _on_selection_geometry(self, event: Any) -> None:
        geom = event.geometry or {}
        if geom.get("type") == "rect" and event.final:
            self._on_box(bounds=(geom["x0"], geom["y0"], geom["x1"], geom["y1"]))

    def _on_range(self, x_range: Any = None, y_range: Any = None, **_: Any) -> None:
        if not x_range or not y_range or None in (*x_range, *y_range):
            return
        lons, lats = to_lonlat(np.array(x_range), np.array(y_range))
        self.state.viewport = (float(lons[0]), float(lats[0]), float(lons[1]), float(lats[1]))

    def _on_size(self, width: Any = None, height: Any = None, **_: Any) -> None:
        if width and height:
            self._size = (int(width), int(height))

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

    # -- state -> view -------------------------------------------------------------------
    @param.depends("state.view_request", watch=True)
    def _zoom(self) -> None:
        req = self.state.view_request
        if req is None:
            return
        x0, y0, x1, y1 = self._fit(req)
        if self._figure is not None:
            self._figure.x_range.update(start=x0, end=x1)
            self._figure.y_range.update(start=y0, end=y1)
        self._report((x0, y0, x1, y1))

    def _report(self, extent: tuple) -> None:
        x0, y0, x1, y1 = extent
        lons, lats = to_lonlat(np.array([x0, x1]), np.array([y0, y1]))
        self.state.viewport = (float(lons[0]), float(lats[0]), float(lons[1]), float(lats[1]))

    def __panel__(self) -> pn.viewable.Viewable:
        return self._pane
