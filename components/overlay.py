"""Overlay tab: vector files (GeoJSON, GeoPackage, zipped Shapefile, KML) drawn over the
imagery, reprojected to WGS84 by :func:`engine.vector.read_vector`, styled per layer, with
the features' attributes on hover.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool

from components.map import MapView, to_mercator
from components.session import locked
from components.state import AppState
from engine.errors import EOXError
from engine.paths import user_path
from engine.vector import FORMATS, VectorLayer, read_vector
from engine.vectorfiles import check_vector_name

#: Edits of the map's models run with the session's document lock.
_MAP = locked(lambda self: self.map.figure if self.map is not None else None)

log = logging.getLogger(__name__)

PALETTE = ("#00e676", "#ffea00", "#2979ff", "#ff9100", "#d500f9", "#00e5ff")
#: Most attributes listed in the hover tooltip.
MAX_TOOLTIP = 15


def _merc(coords: Any) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(coords, dtype=float).reshape(-1, len(coords[0]) if len(coords) else 2)
    return to_mercator(arr[:, 0], arr[:, 1])


def layer_sources(layer: VectorLayer) -> dict[str, dict[str, list]]:
    """Bokeh source data (Mercator) per geometry kind: polygons (with holes), lines, points;
    attribute ``i`` of the layer is column ``p{i}`` (hover tooltips)."""
    names = layer.property_names()
    out: dict[str, dict[str, list]] = {
        "polygons": {"xs": [], "ys": []}, "lines": {"xs": [], "ys": []},
        "points": {"x": [], "y": []}}
    for d in out.values():
        d.update({f"p{i}": [] for i in range(len(names))})

    def add(kind: str, props: dict, **geo: Any) -> None:
        for key, value in geo.items():
            out[kind][key].append(value)
        for i, n in enumerate(names):
            v = props.get(n)
            out[kind][f"p{i}"].append("" if v is None else str(v))

    def add_geometry(geom: dict, props: dict) -> None:
        t, c = geom.get("type"), geom.get("coordinates")
        if t == "Polygon":
            rings = [_merc(r) for r in c]
            add("polygons", props, xs=[[r[0] for r in rings]], ys=[[r[1] for r in rings]])
        elif t == "MultiPolygon":
            polys = [[_merc(r) for r in poly] for poly in c]
            add("polygons", props, xs=[[r[0] for r in p] for p in polys],
                ys=[[r[1] for r in p] for p in polys])
        elif t == "LineString":
            x, y = _merc(c)
            add("lines", props, xs=x, ys=y)
        elif t == "MultiLineString":
            for part in c:
                x, y = _merc(part)
                add("lines", props, xs=x, ys=y)
        elif t == "Point":
            x, y = _merc([c])
            add("points", props, x=float(x[0]), y=float(y[0]))
        elif t == "MultiPoint":
            for p in c:
                x, y = _merc([p])
                add("points", props, x=float(x[0]), y=float(y[0]))
        elif t == "GeometryCollection":
            for g in geom.get("geometries", []):
                add_geometry(g, props)

    for f in layer.features["features"]:
        add_geometry(f["geometry"], f.get("properties") or {})
    return out


def overlay_layer(name: str) -> str:
    """The layer list's name of overlay ``name``."""
    return f"Overlay: {name}"


def feature_label(feature: dict, index: int) -> str:
    """A feature's name for a person: its first text attribute ("Field 12"), else its
    position ("feature 3")."""
    for value in (feature.get("properties") or {}).values():
        if isinstance(value, str) and value.strip():
            return value.strip()[:40]
    return f"feature {index + 1}"


@dataclass
class Overlay:
    """A loaded layer, its style and (once on a map) its renderers and hover tool."""

    layer: VectorLayer
    colour: str
    line_width: float = 2.0
    fill_alpha: float = 0.25
    visible: bool = True
    renderers: dict[str, Any] = field(default_factory=dict)
    hover: Any = None


class OverlayPanel(pn.viewable.Viewer):
    """The Overlay tab: load vector files by upload or path, style them, remove them."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    map = param.ClassSelector(class_=MapView, default=None, allow_None=True,
                              doc="The map drawn on (None: no drawing, for tests).")
    allow_paths = param.Boolean(True, doc="Whether files can be loaded by server path.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.overlays: dict[str, Overlay] = {}
        accept = ",".join(FORMATS)
        self._upload = pn.widgets.FileInput(accept=accept, sizing_mode="stretch_width",
                                            name="Upload a vector file")
        self._upload.param.watch(self._on_upload, "value")
        self._path = pn.widgets.TextInput(name="Or a file path on the server",
                                          placeholder="/data/fields.gpkg",
                                          sizing_mode="stretch_width",
                                          visible=self.allow_paths)
        self._load = pn.widgets.Button(name="Load file", width=100, visible=self.allow_paths)
        self._load.on_click(lambda e: self.load_path(self._path.value))
        self._crs = pn.widgets.TextInput(name="CRS, if the file declares none",
                                         placeholder="e.g. EPSG:32633", width=200)
        self._which = pn.widgets.Select(name="Layer", options=[], sizing_mode="stretch_width")
        self._colour = pn.widgets.ColorPicker(name="Colour", value=PALETTE[0], width=80)
        self._width = pn.widgets.FloatSlider(name="Line width", start=0.5, end=8, step=0.5,
                                             value=2.0, width=150)
        self._alpha = pn.widgets.FloatSlider(name="Fill opacity", start=0, end=1, step=0.05,
                                             value=0.25, width=150)
        self._visible = pn.widgets.Checkbox(name="Visible", value=True)
        for key, w in (("colour", self._colour), ("line_width", self._width),
                       ("fill_alpha", self._alpha), ("visible", self._visible)):
            w.param.watch(lambda e, key=key: self._restyle(key, e.new), "value")
        self._which.param.watch(lambda e: self._show_style(), "value")
        self._zoom = pn.widgets.Button(name="Zoom to layer", width=120)
        self._zoom.on_click(lambda e: self.zoom_to(self._which.value))
        self._remove = pn.widgets.Button(name="Remove layer", width=120, button_type="light")
        self._remove.on_click(lambda e: self.remove(self._which.value))
        self._info = pn.pane.Markdown("", margin=(0, 10), name="overlay-info")
        self._feature = pn.widgets.Select(name="Area feature", options={},
                                          sizing_mode="stretch_width")
        self._use = pn.widgets.Button(name="Use as area (Extract, Profile, Statistics)",
                                      width=300,
                                      description="Add this feature to the drawn shapes: "
                                      "the Extract, Profile and Stretch (statistics) tabs "
                                      "then offer it as an area")
        self._use.on_click(lambda e: self.use_as_area(self._which.value, self._feature.value))
        self._which.param.watch(lambda e: self._list_features(), "value")
        if self.map is not None:
            self.map.param.watch(self._layers_changed, "layers")

    # -- loading ------------------------------------------------------------------------------
    def _on_upload(self, event: Any) -> None:
        if event.new:
            self.load_bytes(event.new, self._upload.filename or "upload.geojson")

    def load_bytes(self, data: bytes, filename: str) -> Overlay | None:
        """Load an uploaded file; None (and a message) when it cannot be read."""
        return self._add(lambda: read_vector(data, filename=filename,
                                             crs=self._crs.value.strip() or None))

    def load_path(self, path: str) -> Overlay | None:
        """Load a file from the server's disk; None (and a message) when it cannot be read."""
        if not self.allow_paths:
            self.state.notify("Overlay: loading server paths is disabled here", "error")
            return None
        if not (path or "").strip():
            self.state.notify("Overlay: type a file path first", "warning")
            return None
        # only inside the configured folders (EOX_RASTER_DIRS), like raster layers
        return self._add(lambda: read_vector(
            user_path(check_vector_name(path), allowed=self.state.backend.raster_dirs,
                      what="vector file"),
            crs=self._crs.value.strip() or None))

    def _add(self, read: Any) -> Overlay | None:
        try:
            layer = read()
        except EOXError as exc:
            self.state.fail(exc, "Overlay")
            return None
        name, n = layer.name, 2
        while name in self.overlays:
            name, n = f"{layer.name} ({n})", n + 1
        ov = Overlay(layer=layer, colour=PALETTE[len(self.overlays) % len(PALETTE)],
                     line_width=float(self._width.value), fill_alpha=float(self._alpha.value))
        self.overlays[name] = ov
        if self.map is not None:
            self._draw(name, ov)
        self._which.options = list(self.overlays)
        self._which.value = name
        self._show_style()
        text = (f"Loaded {layer.count} feature(s) from {name} ({layer.source_crs} -> "
                "WGS84)")
        if layer.notes:
            text += ": " + "; ".join(layer.notes[:3])
        self.state.notify(text, "warning" if layer.notes else "success")
        self._info.object = self._describe()
        self.zoom_to(name)
        return ov

    # -- drawing ------------------------------------------------------------------------------
    @_MAP
    def _draw(self, name: str, ov: Overlay) -> None:
        fig = self.map.figure
        data = layer_sources(ov.layer)
        c = ov.colour
        r = {}
        if data["polygons"]["xs"]:
            r["polygons"] = fig.multi_polygons(
                "xs", "ys", source=ColumnDataSource(data["polygons"]), fill_color=c,
                fill_alpha=ov.fill_alpha, line_color=c, line_width=ov.line_width,
                name=f"eox-overlay-{name}-polygons")
        if data["lines"]["xs"]:
            r["lines"] = fig.multi_line("xs", "ys", source=ColumnDataSource(data["lines"]),
                                        line_color=c, line_width=ov.line_width,
                                        name=f"eox-overlay-{name}-lines")
        if data["points"]["x"]:
            r["points"] = fig.scatter("x", "y", source=ColumnDataSource(data["points"]),
                                      size=8, fill_color=c, line_color="#000000",
                                      name=f"eox-overlay-{name}-points")
        names = ov.layer.property_names()[:MAX_TOOLTIP]
        tips = [("layer", name)] + [(n, f"@p{i}") for i, n in enumerate(names)]
        ov.hover = HoverTool(renderers=list(r.values()), tooltips=tips,
                             name=f"eox-overlay-hover-{name}",
                             description=f"Attributes of {name}")
        fig.add_tools(ov.hover)
        ov.renderers = r
        # in the layer list too: visibility, order, and removal (which removes it here)
        self.map.add_glyph_layer(overlay_layer(name), list(r.values()),
                                 on_remove=lambda: self.remove(name))

    def _restyle(self, key: str, value: Any) -> None:
        """One style widget changed: change that of the layer shown in the widgets. The
        widgets being set from a layer (``_show_style``) show its own values: no change."""
        ov = self.overlays.get(self._which.value)
        if ov is None:
            return
        value = float(value) if key in ("line_width", "fill_alpha") else \
            bool(value) if key == "visible" else value
        if getattr(ov, key) != value:
            setattr(ov, key, value)
            self._apply_style(ov)

    @_MAP
    def _apply_style(self, ov: Overlay) -> None:
        for kind, rend in ov.renderers.items():
            g = rend.glyph
            if kind == "polygons":
                g.update(fill_color=ov.colour, fill_alpha=ov.fill_alpha, line_color=ov.colour,
                         line_width=ov.line_width)
            elif kind == "lines":
                g.update(line_color=ov.colour, line_width=ov.line_width)
            else:
                g.update(fill_color=ov.colour)
            rend.visible = ov.visible
        if self.map is not None:  # the layer list's checkbox says the same
            self.map.layers = [replace(s, visible=ov.visible) if s.name == overlay_layer(
                self._which.value) else s for s in self.map.layers]

    def _layers_changed(self, event: Any) -> None:
        """A layer list checkbox: the Overlay tab's Visible follows."""
        shown = {s.name: s.visible for s in event.new}
        for name, ov in self.overlays.items():
            if shown.get(overlay_layer(name), ov.visible) != ov.visible:
                ov.visible = shown[overlay_layer(name)]
                if name == self._which.value:
                    self._show_style()

    def _show_style(self) -> None:
        ov = self.overlays.get(self._which.value)
        if ov is None:
            return
        self._colour.value, self._width.value = ov.colour, ov.line_width
        self._alpha.value, self._visible.value = ov.fill_alpha, ov.visible

    @_MAP
    def _unplot(self, ov: Overlay) -> None:
        fig = self.map.figure
        fig.renderers = [r for r in fig.renderers if r not in ov.renderers.values()]
        fig.tools = [t for t in fig.tools if t is not ov.hover]

    def zoom_to(self, name: str | None) -> None:
        """Show the whole layer ``name``."""
        ov = self.overlays.get(name or "")
        if ov is None:
            return
        w, s, e, n = ov.layer.bounds
        pad = max(e - w, n - s, 0.002) * 0.05
        self.state.show_box((w - pad, s - pad, e + pad, n + pad))

    def remove(self, name: str | None) -> None:
        """Remove the layer ``name`` from the map and the list."""
        ov = self.overlays.pop(name or "", None)
        if ov is None:
            return
        if self.map is not None:
            self._unplot(ov)
            self.map.remove_layer(overlay_layer(name))  # the layer list's row
        self._which.options = list(self.overlays)
        self._info.object = self._describe()

    # -- a feature as an area -----------------------------------------------------------------
    def _list_features(self) -> None:
        ov = self.overlays.get(self._which.value)
        options: dict[str, int] = {}
        for i, f in enumerate(ov.layer.features["features"] if ov else []):
            if (f.get("geometry") or {}).get("type") in ("Polygon", "MultiPolygon"):
                options[f"{i + 1}: {feature_label(f, i)}"] = i
        self._feature.param.update(options=options, value=next(iter(options.values()), None))
        self._use.disabled = not options

    def use_as_area(self, layer: str | None, index: int | None) -> str | None:
        """Add polygon feature ``index`` of overlay ``layer`` to ``state.drawings`` (as a
        drawn polygon named "layer: label"), so the Extract and Profile tabs offer it.
        Returns its drawing id (None and a message when it is not a polygon)."""
        ov = self.overlays.get(layer or "")
        feats = ov.layer.features["features"] if ov else []
        if index is None or not 0 <= index < len(feats):
            self.state.notify("Overlay: load a layer and pick one of its polygons first",
                              "warning")
            return None
        feature = feats[index]
        if (feature.get("geometry") or {}).get("type") not in ("Polygon", "MultiPolygon"):
            self.state.notify("Overlay: only a polygon feature can be an area", "warning")
            return None
        taken = {f["id"] for f in self.state.drawings}
        n = 1 + sum(1 for i in taken if str(i).startswith("overlay-"))
        while f"overlay-{n}" in taken:
            n += 1
        fid, name = f"overlay-{n}", f"{layer}: {feature_label(feature, index)}"
        self.state.drawings = [*self.state.drawings, {
            "type": "Feature", "id": fid, "geometry": feature["geometry"],
            "properties": {"id": fid, "kind": "polygon", "name": name}}]
        self.state.notify(f"'{name}' is now an area in the Extract, Profile and Stretch "
                          "(statistics) tabs", "success")
        return fid

    def _describe(self) -> str:
        if not self.overlays:
            return "No layer loaded. Formats: GeoJSON, GeoPackage, zipped Shapefile, KML."
        return "\n".join(f"* **{n}**: {ov.layer.count} feature(s), from {ov.layer.source_crs}"
                         for n, ov in self.overlays.items())

    def __panel__(self) -> pn.viewable.Viewable:
        if not self._info.object:
            self._info.object = self._describe()
        return pn.Column(
            self._upload, pn.Row(self._path, self._load, sizing_mode="stretch_width"),
            self._crs, self._info, self._which,
            pn.Row(self._colour, self._width, self._alpha), self._visible,
            pn.Row(self._zoom, self._remove), self._feature, self._use,
            sizing_mode="stretch_width",
        )
