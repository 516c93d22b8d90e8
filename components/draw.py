"""Draw tab: points, lines, polygons and boxes drawn and edited on the map, listed in a table,
kept for the session (``state.drawings``) and exported/imported as GeoJSON.

Bokeh's own edit tools (PolyDrawTool, PolyEditTool, PointDrawTool, BoxEditTool) draw into
data sources in Mercator metres; every change the browser sends is turned into WGS84
GeoJSON features in ``state.drawings``, which the Measure and Extract tabs read.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import (
    BoxEditTool,
    ColumnDataSource,
    CustomJS,
    PanTool,
    PointDrawTool,
    PolyDrawTool,
    PolyEditTool,
)

from components.map import MapView, to_lonlat, to_mercator
from components.session import locked
from components.state import AppState
from engine.errors import EOXError
from engine.vector import parse_geojson

log = logging.getLogger(__name__)

COLOUR = "#ff4081"
#: What each drawing mode does; "pan" gives the mouse back to the map.
MODES: dict[str, str] = {"Pan / zoom": "pan", "Polygon": "polygon", "Line": "line",
                         "Point": "point", "Box": "box", "Edit vertices": "edit"}
HELP = {
    "pan": "Drag to pan, scroll to zoom. Pick a shape to draw.",
    "polygon": "Double-click (or click and hold) to place the first vertex, click to add "
               "vertices, double-click on the last one to finish (Esc also finishes). Drag a "
               "polygon to move it; click it and press Backspace to delete it.",
    "line": "Double-click (or click and hold) to start, click to add vertices, double-click "
            "on the last one to finish (Esc also finishes).",
    "point": "Click to add a point; drag a point to move it.",
    "box": "Shift+drag draws a box (or click and hold, move, click and hold). Drag a box to "
           "move it.",
    "edit": "Double-click (or click and hold) a polygon or line to show its vertices, then "
            "drag them; click a vertex and press Backspace to remove it.",
}
# Bokeh's PolyDrawTool/PolyEditTool start, finish and show vertices on a *press* (a click
# held 300 ms); a double-click does nothing in them. Users double-click, so a double-click
# on the map does the press's work for the active polygon/line/edit tool. While drawing, the
# double-click's first click has already placed the last vertex: finish as Esc does (drop
# the vertex that follows the mouse) rather than as a press (which would repeat it).
_DOUBLE_CLICK_JS = """
for (const tool of tools) {
  if (!tool.active) { continue; }
  const view = Bokeh.index.find_one(tool);
  if (view == null) { return; }
  if (view._drawing && tool.type === "PolyDrawTool" && typeof view._remove === "function") {
    view._remove();
    view._drawing = false;
  } else if (typeof view._press === "function") {
    view._press({type: "press", sx: cb_obj.sx, sy: cb_obj.sy, x: cb_obj.x, y: cb_obj.y,
                 modifiers: cb_obj.modifiers ?? {shift: false, ctrl: false, alt: false}});
  }
}
"""
_ACTIVATE_JS = """
const key = modes[cb_obj.labels[cb_obj.active]];
for (let i = 0; i < tools.length; i++) { tools[i].active = keys[i] === key; }
if (key === "pan" && pan) { pan.active = true; }
"""
KIND_LABEL = {"polygon": "Polygon", "box": "Box", "line": "Line", "point": "Point"}


def _empty(kind: str) -> dict[str, list]:
    if kind == "point":
        return {"x": [], "y": []}
    if kind == "box":
        return {"x": [], "y": [], "width": [], "height": []}
    return {"xs": [], "ys": []}


def _lonlat(xs: Any, ys: Any) -> list[list[float]]:
    lon, lat = to_lonlat(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float))
    return [[round(float(a), 7), round(float(b), 7)] for a, b in zip(np.atleast_1d(lon),
                                                                      np.atleast_1d(lat),
                                                                      strict=True)]


def _distinct(coords: list[list[float]]) -> list[list[float]]:
    """Finite vertices without consecutive repeats (a shape being drawn repeats the vertex
    that follows the mouse)."""
    out: list[list[float]] = []
    for c in coords:
        if all(np.isfinite(c)) and (not out or c != out[-1]):
            out.append(c)
    return out


def _ring(coords: list[list[float]]) -> list[list[float]]:
    return coords + [coords[0]] if coords and coords[0] != coords[-1] else coords


def features_from_sources(data: dict[str, dict[str, list]]) -> list[dict]:
    """GeoJSON features (WGS84) of the drawing sources' data (Mercator), in a stable order.

    Unfinished shapes (a polygon of fewer than 3 vertices, a line of 1) are left out.
    """
    features: list[dict] = []
    count = {k: 0 for k in KIND_LABEL}

    def add(kind: str, geometry: dict) -> None:
        count[kind] += 1
        fid = f"{kind}-{count[kind]}"
        features.append({"type": "Feature", "id": fid, "geometry": geometry, "properties": {
            "id": fid, "kind": kind, "name": f"{KIND_LABEL[kind]} {count[kind]}"}})

    poly = data.get("polygon") or {}
    for xs, ys in zip(poly.get("xs", []), poly.get("ys", []), strict=False):
        coords = _distinct(_lonlat(xs, ys))
        if len(coords) > 3 and coords[0] == coords[-1]:
            coords = coords[:-1]
        if len(coords) >= 3:
            add("polygon", {"type": "Polygon", "coordinates": [_ring(coords)]})
    box = data.get("box") or {}
    for x, y, w, h in zip(box.get("x", []), box.get("y", []), box.get("width", []),
                          box.get("height", []), strict=False):
        if w and h:
            (west, east), (south, north) = to_lonlat(np.array([x - w / 2, x + w / 2]),
                                                     np.array([y - h / 2, y + h / 2]))
            w_, s_, e_, n_ = (round(float(v), 7) for v in (west, south, east, north))
            add("box", {"type": "Polygon", "coordinates": [[[w_, s_], [e_, s_], [e_, n_],
                                                            [w_, n_], [w_, s_]]]})
    line = data.get("line") or {}
    for xs, ys in zip(line.get("xs", []), line.get("ys", []), strict=False):
        coords = _distinct(_lonlat(xs, ys))
        if len(coords) >= 2:
            add("line", {"type": "LineString", "coordinates": coords})
    pts = data.get("point") or {}
    for x, y in zip(pts.get("x", []), pts.get("y", []), strict=False):
        add("point", {"type": "Point", "coordinates": _lonlat([x], [y])[0]})
    return features


def sources_from_features(features: list[dict]) -> tuple[dict[str, dict[str, list]], list[str]]:
    """The drawing sources' data (Mercator) for GeoJSON features, and notes on what a
    drawing cannot hold (holes dropped, multi-geometries split into parts)."""
    data = {k: _empty(k) for k in KIND_LABEL}
    notes: list[str] = []

    def merc(coords: list) -> tuple[list[float], list[float]]:
        arr = np.asarray(coords, dtype=float)[:, :2]
        x, y = to_mercator(arr[:, 0], arr[:, 1])
        return [float(v) for v in x], [float(v) for v in y]

    for f in features:
        geom = f.get("geometry") or {}
        kind = (f.get("properties") or {}).get("kind")
        gtype, coords = geom.get("type"), geom.get("coordinates")
        parts = coords if gtype and gtype.startswith("Multi") else [coords]
        if gtype and gtype.startswith("Multi") and len(parts) > 1:
            notes.append(f"a {gtype} was split into {len(parts)} shapes")
        base = (gtype or "").removeprefix("Multi")
        for part in parts:
            if base == "Polygon":
                if len(part) > 1:
                    notes.append("polygon holes are not kept in drawings (use the Overlay tab)")
                xs, ys = merc(part[0][:-1] if part[0][0] == part[0][-1] else part[0])
                if kind == "box" and len(xs) == 4:
                    data["box"]["x"].append((min(xs) + max(xs)) / 2)
                    data["box"]["y"].append((min(ys) + max(ys)) / 2)
                    data["box"]["width"].append(max(xs) - min(xs))
                    data["box"]["height"].append(max(ys) - min(ys))
                else:
                    data["polygon"]["xs"].append(xs)
                    data["polygon"]["ys"].append(ys)
            elif base == "LineString":
                xs, ys = merc(part)
                data["line"]["xs"].append(xs)
                data["line"]["ys"].append(ys)
            elif base == "Point":
                xs, ys = merc([part])
                data["point"]["x"].append(xs[0])
                data["point"]["y"].append(ys[0])
            else:
                notes.append(f"a {gtype} cannot be drawn and was left out")
    return data, list(dict.fromkeys(notes))


class DrawPanel(pn.viewable.Viewer):
    """The Draw tab: a drawing mode picker, the list of shapes, GeoJSON export and import."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    map = param.ClassSelector(class_=MapView, default=None, allow_None=True,
                              doc="The map drawn on (None: a table-only panel, for tests).")
    mode = param.Selector(objects=list(MODES), default="Pan / zoom",
                          doc="What a click/drag on the map does.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.sources = {k: ColumnDataSource(_empty(k), name=f"eox-draw-src-{k}")
                        for k in KIND_LABEL}
        for src in self.sources.values():
            src.on_change("data", self._on_data)
        self._tools: dict[str, Any] = {}
        if self.map is not None:
            self._attach(self.map.figure)
        self._mode = pn.widgets.RadioButtonGroup.from_param(
            self.param.mode, button_type="primary", button_style="outline",
            sizing_mode="stretch_width", name="")
        self._help = pn.pane.Markdown(HELP["pan"], margin=(0, 10))
        if self._tools:  # activate the tool in the browser at once (BokehJS ``tool.active``)
            pan = next((t for t in self._fig.tools if isinstance(t, PanTool)), None)
            self._mode.jscallback(value=_ACTIVATE_JS, args={
                "tools": list(self._tools.values()), "keys": list(self._tools),
                "modes": MODES, "pan": pan})
        self._table = pn.widgets.Tabulator(
            self._frame(), show_index=False, disabled=True, selectable="checkbox",
            height=220, sizing_mode="stretch_width", name="drawings")
        self._delete = pn.widgets.Button(name="Delete selected", button_type="light", width=130)
        self._delete.on_click(lambda e: self.delete(self._selected_ids()))
        self._clear = pn.widgets.Button(name="Clear all", button_type="light", width=100)
        self._clear.on_click(lambda e: self.clear())
        self._download = pn.widgets.FileDownload(
            callback=self._export_file, filename="drawings.geojson", button_type="success",
            label="Download GeoJSON", sizing_mode="stretch_width")
        self._upload = pn.widgets.FileInput(accept=".geojson,.json", multiple=False,
                                            sizing_mode="stretch_width", name="Import GeoJSON")
        self._upload.param.watch(self._on_upload, "value")
        if self.state.drawings:
            self._state_changed()

    # -- map --------------------------------------------------------------------------------
    def _attach(self, fig: Any) -> None:
        """Add the shapes' renderers and the edit tools to the map's figure."""
        s = self.sources
        poly = fig.patches("xs", "ys", source=s["polygon"], fill_color=COLOUR, fill_alpha=0.2,
                           line_color=COLOUR, line_width=2, name="eox-draw-polygons")
        box = fig.rect("x", "y", "width", "height", source=s["box"], fill_color=COLOUR,
                       fill_alpha=0.12, line_color=COLOUR, line_width=2,
                       line_dash="dashed", name="eox-draw-boxes")
        line = fig.multi_line("xs", "ys", source=s["line"], line_color=COLOUR, line_width=3,
                              name="eox-draw-lines")
        pts = fig.scatter("x", "y", source=s["point"], size=10, fill_color=COLOUR,
                          line_color="white", name="eox-draw-points")
        vertices = ColumnDataSource({"x": [], "y": []})
        vert = fig.scatter("x", "y", source=vertices, size=9, fill_color="white",
                           line_color=COLOUR, name="eox-draw-vertices")
        self._tools = {
            "polygon": PolyDrawTool(renderers=[poly], empty_value="", name="eox-draw-polygon",
                                    description="Draw polygons"),
            "line": PolyDrawTool(renderers=[line], empty_value="", name="eox-draw-line",
                                 description="Draw lines"),
            "point": PointDrawTool(renderers=[pts], empty_value="", name="eox-draw-point",
                                   description="Draw points"),
            "box": BoxEditTool(renderers=[box], empty_value="", name="eox-draw-box",
                               description="Draw boxes (shift+drag)"),
            "edit": PolyEditTool(renderers=[poly, line], vertex_renderer=vert,
                                 name="eox-draw-edit", description="Edit vertices"),
        }
        fig.add_tools(*self._tools.values())
        double = [self._tools[k] for k in ("polygon", "line", "edit")]
        fig.js_on_event("doubletap", CustomJS(args={"tools": double}, code=_DOUBLE_CLICK_JS))
        self._fig = fig

    @param.depends("mode", watch=True)
    def _mode_changed(self) -> None:
        key = MODES[self.mode]
        self._help.object = HELP[key]
        if self._tools:
            self._activate(key)

    @locked(lambda self: self._fig)
    def _activate(self, key: str) -> None:
        toolbar = self._fig.toolbar
        if key == "pan":
            toolbar.active_multi = None
            pan = next((t for t in self._fig.tools if isinstance(t, PanTool)), None)
            if pan is not None:
                toolbar.active_drag = pan
        else:
            toolbar.active_multi = self._tools[key]

    # -- sources <-> state ------------------------------------------------------------------
    # Sources and ``state.drawings`` describe the same shapes: each side is rewritten only
    # when it differs from the other, so a change on one side never comes back to it.
    def _on_data(self, attr: str, old: Any, new: Any) -> None:
        self.sync()

    def _drawn(self) -> list[dict]:
        return features_from_sources({k: dict(s.data) for k, s in self.sources.items()})

    def sync(self) -> None:
        """Rebuild ``state.drawings`` from the drawing sources (after a browser edit)."""
        feats = self._drawn()
        if feats != self.state.drawings:
            self.state.drawings = feats
        self._table.value = self._frame()

    @param.depends("state.drawings", watch=True)
    def _state_changed(self) -> None:
        if self._drawn() != self.state.drawings:  # set elsewhere (a link, another tab)
            self.load(self.state.drawings, replace=True)

    @locked(lambda self: getattr(self, "_fig", None))
    def load(self, features: list[dict], *, replace: bool = False) -> None:
        """Draw ``features`` (GeoJSON, WGS84), after the current shapes unless ``replace``."""
        current = [] if replace else list(self.state.drawings)
        data, notes = sources_from_features(current + list(features))
        # each source written syncs the state; its watchers see only the last, whole set
        with param.parameterized.batch_call_watchers(self.state):
            for kind, src in self.sources.items():
                src.data = data[kind]
            self.sync()
        for note in notes:
            self.state.notify(f"Draw: {note}", "warning")

    def delete(self, ids: list[str]) -> None:
        """Remove the shapes with these feature ids."""
        if not ids:
            self.state.notify("Draw: tick the shapes to delete in the table first", "warning")
            return
        self.load([f for f in self.state.drawings if f["id"] not in ids], replace=True)

    def clear(self) -> None:
        """Remove every shape."""
        self.load([], replace=True)

    # -- table, export, import ----------------------------------------------------------------
    def _frame(self) -> pd.DataFrame:
        rows = [{"Name": f["properties"]["name"], "Kind": f["properties"]["kind"],
                 "Vertices": _vertices(f["geometry"]), "id": f["id"]}
                for f in (self.state.drawings or [])]
        return pd.DataFrame(rows, columns=["Name", "Kind", "Vertices", "id"])

    def _selected_ids(self) -> list[str]:
        frame = self._table.value
        return [str(frame.iloc[i]["id"]) for i in self._table.selection if i < len(frame)]

    def geojson(self) -> dict:
        """The drawn shapes as a GeoJSON FeatureCollection (WGS84)."""
        return {"type": "FeatureCollection", "features": list(self.state.drawings)}

    def _export_file(self) -> io.StringIO:
        return io.StringIO(json.dumps(self.geojson(), indent=1))

    def import_geojson(self, text: str | bytes) -> int:
        """Add the features of a GeoJSON text; returns how many were added (0 on error)."""
        try:
            fc = parse_geojson(text)
        except EOXError as exc:
            self.state.fail(exc, "Import GeoJSON")
            return 0
        before = len(self.state.drawings)
        feats = [{**f, "properties": {**(f.get("properties") or {}),
                                      "kind": _kind_of(f)}} for f in fc["features"]]
        self.load(feats)
        added = len(self.state.drawings) - before
        self.state.notify(f"Imported {added} shape(s)", "success")
        return added

    def _on_upload(self, event: Any) -> None:
        if event.new:
            self.import_geojson(event.new)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            self._mode, self._help, self._table,
            pn.Row(self._delete, self._clear),
            self._download, pn.pane.Markdown("**Import GeoJSON**", margin=(5, 10, 0, 10)),
            self._upload, sizing_mode="stretch_width",
        )


def _vertices(geometry: dict) -> int:
    coords = geometry.get("coordinates")
    if geometry.get("type") == "Point":
        return 1
    if geometry.get("type") == "Polygon":
        return max(0, len(coords[0]) - 1)
    return len(coords or [])


def _kind_of(feature: dict) -> str:
    kind = (feature.get("properties") or {}).get("kind")
    if kind in KIND_LABEL:
        return kind
    gtype = (feature.get("geometry") or {}).get("type", "").removeprefix("Multi")
    return {"Polygon": "polygon", "LineString": "line", "Point": "point"}.get(gtype, "polygon")
