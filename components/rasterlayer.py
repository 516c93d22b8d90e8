"""Large raster layers: a GeoTIFF/COG or a Zarr store (a batch result, a DEM) drawn on the
map as one screen-sized image that is re-rendered on every pan/zoom.

Each redraw reads only the overview level matching the screen
(:func:`engine.batch.open_for_screen`), so its cost follows screen pixels, not raster size;
the read is put on the screen's Web Mercator grid (Datashader ``Canvas.raster`` for
EPSG:3857 rasters, a GDAL warp for any other CRS), coloured, and pushed into a Bokeh
``image_rgba`` glyph in place. Hover shows the values of that screen-resolution array.
HoloViews' dynamic ``rasterize`` is not used: its streams do not fire under bokeh-fastapi,
so the map's own range callbacks (via ``state.viewport``) drive the redraws.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import panel as pn
import param
import rasterio
from bokeh.models import ColumnDataSource, HoverTool

from components.map import MapView
from components.presets import COMMON_COLORMAPS
from components.rasterrender import (
    MAX_HOVER_BANDS,
    RasterSource,
    Rendered,
    check_raster_path,
    default_stretch,
    palette,
    render,
)
from components.session import run_locked
from components.state import AppState
from components.tilemath import to_mercator
from engine.errors import DataUnavailable, EOXError, InvalidInput

log = logging.getLogger(__name__)

_EMPTY = {"image": [], "x": [], "y": [], "dw": [], "dh": []}

# -- layers on a map --------------------------------------------------------------------------
@dataclass
class RasterLayer:
    """A raster on the map: its source, how it is coloured, its Bokeh objects and the last
    redraw (``renders`` counts redraws)."""

    name: str
    source: RasterSource
    band: int | None
    colormap: str
    vmin: float
    vmax: float
    cds: ColumnDataSource = field(default_factory=lambda: ColumnDataSource(dict(_EMPTY)))
    renderer: Any = None
    hover: Any = None
    renders: int = 0
    last: Rendered | None = None


class RasterLayers(pn.viewable.Viewer):
    """Large raster layers of one map: add by path, colour, zoom to, remove; each is redrawn
    at screen resolution when the view changes."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    map = param.ClassSelector(class_=MapView, default=None, allow_None=True,
                              doc="The map drawn on (None: layers render without a figure).")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.layers: dict[str, RasterLayer] = {}
        self._pending = False
        self._path = pn.widgets.TextInput(
            name="Raster path (GeoTIFF/COG or Zarr)", sizing_mode="stretch_width",
            placeholder="dem.tif, or a path inside the raster folders")
        self._path.param.watch(lambda e: self._locked(lambda: self.add(self._path.value)),
                               "enter_pressed")
        self._add = pn.widgets.Button(name="Add layer", button_type="primary", width=110)
        self._add.on_click(lambda e: self._locked(lambda: self.add(self._path.value)))
        self._message = pn.pane.Alert("", alert_type="danger", visible=False,
                                      sizing_mode="stretch_width", name="raster-message")
        self._which = pn.widgets.Select(name="Layer", options=[], sizing_mode="stretch_width")
        self._which.param.watch(lambda e: self._show_style(), "value")
        self._band = pn.widgets.Select(name="Band", options={}, width=140)
        self._colormap = pn.widgets.Select(
            name="Colormap", value="viridis", width=140,
            options=COMMON_COLORMAPS + sorted(set(matplotlib.colormaps) - set(COMMON_COLORMAPS)))
        self._vmin = pn.widgets.FloatInput(name="Min", width=95)
        self._vmax = pn.widgets.FloatInput(name="Max", width=95)
        for key, w in (("band", self._band), ("colormap", self._colormap),
                       ("vmin", self._vmin), ("vmax", self._vmax)):
            w.param.watch(lambda e, key=key: self._restyle(key, e.new), "value")
        self._zoom = pn.widgets.Button(name="Zoom to layer", width=120)
        self._zoom.on_click(lambda e: self._locked(lambda: self.zoom_to(self._which.value)))
        self._remove = pn.widgets.Button(name="Remove layer", width=120, button_type="light")
        self._remove.on_click(lambda e: self._locked(lambda: self.remove(self._which.value)))
        self._info = pn.pane.Markdown("", margin=(0, 10), name="raster-info")

    # -- adding ---------------------------------------------------------------------------------
    def add(self, path: str | Path, *, name: str | None = None, zoom: bool = True,
            band: int | None = None, rgb: bool = False, colormap: str | None = None,
            vmin: float | None = None, vmax: float | None = None,
            trusted: bool = False) -> RasterLayer | None:
        """Add the raster at ``path`` (checked against ``backend.raster_dirs`` unless
        ``trusted``: a file this process wrote); None, and a message, when refused.

        Shows ``band`` (default 1) through ``colormap``, or with ``rgb`` (default for
        rendered RGBA products) bands 1-3 as colours; vmin/vmax default to the 2nd-98th
        percentiles of the coarsest overview."""
        try:
            real = (Path(path).resolve() if trusted else
                    check_raster_path(str(path), allowed=self.state.backend.raster_dirs))
            source = RasterSource.open(real)
            if rgb or source.display:
                band = None
            elif band is None:
                band = 1
            elif not 1 <= band <= source.count:
                raise InvalidInput(f"band {band} is not in 1..{source.count}")
            if colormap is not None:
                palette(colormap)
            lo, hi = default_stretch(source, band) if vmin is None or vmax is None else (0, 0)
        except EOXError as exc:
            self._message.object = f"Raster layer: {exc}"
            self._message.visible = True
            self.state.fail(exc, "Raster layer")
            return None
        self._message.visible = False
        base, n = name or real.name, 2
        label = base
        while label in self.layers:
            label, n = f"{base} ({n})", n + 1
        layer = RasterLayer(name=label, source=source, band=band,
                            colormap=colormap or "viridis",
                            vmin=float(lo if vmin is None else vmin),
                            vmax=float(hi if vmax is None else vmax))
        self.layers[label] = layer
        if self.map is not None:
            self._draw(layer)
        self._which.options = list(self.layers)
        self._which.value = label
        self._show_style()
        self._info.object = self._describe()
        self.state.notify(f"Raster layer {label}: {source.width} x {source.height} px, "
                          f"{source.count} band(s), {len(source.overviews)} overview(s)",
                          "success")
        if zoom:
            self.zoom_to(label)
        self.refresh(label)
        return layer

    def _draw(self, layer: RasterLayer) -> None:
        fig = self.map.figure
        layer.renderer = fig.image_rgba("image", "x", "y", "dw", "dh", source=layer.cds,
                                        level="image", name=f"eox-raster-{layer.name}")
        names = layer.source.band_names[:MAX_HOVER_BANDS]
        tips = [(n, f"@v{i}{{0.[0000]}}") for i, n in enumerate(names)]
        layer.hover = HoverTool(renderers=[layer.renderer], tooltips=tips,
                                name=f"eox-raster-hover-{layer.name}",
                                description=f"Values of {layer.name}")
        fig.add_tools(layer.hover)
        self.map.add_glyph_layer(layer.name, layer.renderer)

    # -- redraws --------------------------------------------------------------------------------
    def view(self) -> tuple[tuple[float, float, float, float], tuple[int, int]] | None:
        """The Mercator extent and pixel size of the map (from the state's viewport)."""
        vp = self.state.viewport
        if vp is None:
            return None
        (x0, x1), (y0, y1) = to_mercator(np.array([vp[0], vp[2]]), np.array([vp[1], vp[3]]))
        w, h = self.state.map_size
        return (float(x0), float(y0), float(x1), float(y1)), (int(w), int(h))

    def _visible(self, name: str) -> bool:
        if self.map is None:
            return True
        return any(s.name == name and s.visible for s in self.map.layers)

    def refresh(self, name: str | None = None) -> int:
        """Redraw layer ``name`` (default every visible one) for the current view; returns
        the number redrawn. Errors become a message, never an exception."""
        current = self.view()
        if current is None:
            return 0
        view, size = current
        done = 0
        for layer in [self.layers[name]] if name else list(self.layers.values()):
            if not self._visible(layer.name):
                continue
            try:
                out = render(layer.source, view, size, band=layer.band,
                             colormap=layer.colormap, vmin=layer.vmin, vmax=layer.vmax)
            except EOXError as exc:
                self.state.fail(exc, f"Raster layer {layer.name}")
                continue
            except rasterio.errors.RasterioIOError as exc:
                self.state.fail(DataUnavailable(f"cannot read {layer.source.path}: {exc}"),
                                f"Raster layer {layer.name}")
                continue
            layer.last, layer.renders = out, layer.renders + 1
            if out is None:
                layer.cds.data = dict(_EMPTY)
            else:
                x0, y0, x1, y1 = out.bounds
                data = {"image": [out.image], "x": [x0], "y": [y0], "dw": [x1 - x0],
                        "dh": [y1 - y0]}
                for b in range(min(MAX_HOVER_BANDS, out.values.shape[0])):
                    data[f"v{b}"] = [np.ascontiguousarray(out.values[b][::-1])]
                layer.cds.data = data
            done += 1
        return done

    @param.depends("state.viewport", "state.map_size", watch=True)
    def _view_changed(self) -> None:
        if self.layers:
            self._schedule()

    @param.depends("map.layers", watch=True)
    def _layers_changed(self) -> None:
        for name in [n for n in self.layers if not self._listed(n)]:
            self._forget(name)  # removed from the map by someone else
        stale = [n for n, lay in self.layers.items() if self._visible(n) and lay.last is None]
        if stale:
            self._schedule()

    def _listed(self, name: str) -> bool:
        return self.map is None or any(s.name == name for s in self.map.layers)

    def _document(self) -> Any:
        """The served Bokeh document of the map, or None (tests, notebooks)."""
        doc = self.map.figure.document if self.map is not None else None
        return doc if doc is not None and doc.session_context is not None else None

    def _locked(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` (which edits Bokeh models) under the session's document lock."""
        run_locked(self._document(), fn)

    def _schedule(self) -> None:
        """Redraw once per browser message: a zoom moves x and y ranges in several events."""
        if self._document() is None:
            self.refresh()
            return
        if not self._pending:
            self._pending = True
            self._locked(self._tick)

    def _tick(self) -> None:
        self._pending = False
        self.refresh()

    # -- styling --------------------------------------------------------------------------------
    def restyle(self, name: str, **changes: Any) -> None:
        """Change ``band``, ``colormap``, ``vmin`` or ``vmax`` of a layer and redraw it."""
        layer = self.layers[name]
        if "colormap" in changes:
            try:
                palette(changes["colormap"])
            except InvalidInput as exc:
                self.state.fail(exc, "Raster layer")
                return
        for key, value in changes.items():
            setattr(layer, key, value)
        self.refresh(name)

    def _restyle(self, key: str, value: Any) -> None:
        """One style widget changed: change that of the layer shown in the widgets. The
        widgets being set from a layer (``_show_style``) show its own values: no change."""
        layer = self.layers.get(self._which.value)
        if layer is None or value is None:
            return
        value = (None if value == 0 else value) if key == "band" else \
            float(value) if key in ("vmin", "vmax") else value
        if getattr(layer, key) != value:
            self._locked(lambda: self.restyle(layer.name, **{key: value}))

    def _show_style(self) -> None:
        layer = self.layers.get(self._which.value)
        if layer is None:
            return
        opts = {f"{i + 1}: {n}": i + 1 for i, n in enumerate(layer.source.band_names)}
        if layer.source.count >= 3 or layer.source.display:
            opts = {"RGB composite": 0, **opts}
        self._band.options = opts
        self._band.value = 0 if layer.band is None else layer.band
        self._colormap.value = layer.colormap
        self._vmin.value, self._vmax.value = layer.vmin, layer.vmax

    # -- other actions --------------------------------------------------------------------------
    def zoom_to(self, name: str | None) -> None:
        """Show the whole layer ``name``."""
        layer = self.layers.get(name or "")
        if layer is not None:
            self.state.show_box(layer.source.wgs84_bounds())

    def remove(self, name: str | None) -> None:
        """Remove the layer ``name`` from the map and the list."""
        if name not in self.layers:
            return
        if self.map is not None:
            self.map.remove_layer(name)  # -> _layers_changed -> _forget
        self._forget(name)

    def _forget(self, name: str) -> None:
        layer = self.layers.pop(name, None)
        if layer is None:
            return
        if self.map is not None and layer.hover is not None:
            fig = self.map.figure
            fig.tools = [t for t in fig.tools if t is not layer.hover]
        self._which.options = list(self.layers)
        self._info.object = self._describe()

    def _describe(self) -> str:
        if not self.layers:
            folders = ", ".join(f"`{d}`" for d in self.state.backend.raster_dirs) or "none"
            return f"No raster layer. Paths are read from: {folders}."
        return "\n".join(
            f"* **{n}**: {lay.source.width} x {lay.source.height} px, "
            f"{lay.source.count} band(s), {len(lay.source.overviews)} overview(s)"
            for n, lay in self.layers.items())

    def __panel__(self) -> pn.viewable.Viewable:
        if not self._info.object:
            self._info.object = self._describe()
        return pn.Column(
            pn.pane.Markdown("**Large raster layers**", margin=(10, 10, 0, 10)),
            pn.Row(self._path, self._add, sizing_mode="stretch_width"), self._message,
            self._info, self._which, pn.Row(self._band, self._colormap),
            pn.Row(self._vmin, self._vmax), pn.Row(self._zoom, self._remove),
            sizing_mode="stretch_width")


__all__ = ["RasterLayer", "RasterLayers"]
