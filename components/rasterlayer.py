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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.colors
import numpy as np
import panel as pn
import param
import rasterio
import rasterio.warp
import rasterio.windows
import xarray as xr
from affine import Affine
from bokeh.models import ColumnDataSource, HoverTool
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import from_bounds

from components.display import COMMON_COLORMAPS
from components.map import MapView
from components.session import run_locked
from components.state import AppState
from components.tilemath import to_lonlat, to_mercator
from engine.batch import open_for_screen
from engine.errors import DataUnavailable, EOXError, InvalidInput
from engine.paths import user_path
from engine.render.grid import Grid

log = logging.getLogger(__name__)

MERCATOR = CRS.from_epsg(3857)
#: Mercator y where the projection ends (85.05 degrees).
MERC_MAX = 20037508.342789244
#: Bands listed in the hover tooltip.
MAX_HOVER_BANDS = 4
#: Side of the whole-raster preview that default stretches are computed from.
PREVIEW = 256
_EMPTY = {"image": [], "x": [], "y": [], "dw": [], "dh": []}


# -- paths ------------------------------------------------------------------------------------
def check_raster_path(text: str, *, allowed: tuple[Path, ...] | list[Path]) -> Path:
    """The real path of a raster the user may open (see ``engine.paths.user_path``)."""
    if not (text or "").strip():
        raise InvalidInput("type the path of a GeoTIFF/COG or a Zarr store")
    return user_path(text, allowed=allowed, what="raster")


# -- sources ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RasterSource:
    """What a layer reads: a GDAL raster (GeoTIFF/COG) or a Zarr store written by
    ``engine.batch.to_zarr`` (variable ``result``, last date of a time stack)."""

    path: Path
    kind: str  # "gdal" or "zarr"
    crs: CRS
    bounds: tuple[float, float, float, float]  # native CRS
    width: int
    height: int
    band_names: tuple[str, ...]
    dtype: str
    display: bool  # uint8 colour planes with an alpha band (a rendered product)
    overviews: tuple[int, ...] = ()
    transform: tuple[float, ...] = ()

    @classmethod
    def open(cls, path: Path) -> RasterSource:
        """Describe ``path``; InvalidInput when it is not a georeferenced raster."""
        if path.is_dir():
            if path.suffix.lower() != ".zarr" and not (path / "zarr.json").exists() \
                    and not (path / ".zgroup").exists():
                raise InvalidInput(f"{path} is a folder, not a raster or a Zarr store")
            return cls._open_zarr(path)
        try:
            ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError:
            raise InvalidInput(f"{path.name} is not a raster GDAL can read "
                               "(GeoTIFF/COG expected)") from None
        with ds:
            if ds.crs is None or ds.transform.is_identity:
                raise InvalidInput(f"{path.name} has no georeferencing (CRS and transform)")
            display = (ds.dtypes[0] == "uint8" and ds.count in (2, 4)
                       and ds.colorinterp[-1] == ColorInterp.alpha)
            return cls(path=path, kind="gdal", crs=ds.crs, bounds=tuple(ds.bounds),
                       width=ds.width, height=ds.height,
                       band_names=tuple(d or str(i + 1) for i, d in enumerate(ds.descriptions)),
                       dtype=ds.dtypes[0], display=display,
                       overviews=tuple(ds.overviews(1)), transform=tuple(ds.transform)[:6])

    @classmethod
    def _open_zarr(cls, path: Path) -> RasterSource:
        try:
            with xr.open_zarr(path, consolidated=None) as ds:
                var = ds["result"]
                wkt = ds["spatial_ref"].attrs["crs_wkt"]
                t = Affine(*var.attrs["transform"][:6])
                names = tuple(str(b) for b in var["band"].values)
                dtype, kind = str(var.dtype), var.attrs.get("kind")
                h, w = var.sizes["y"], var.sizes["x"]
        except (OSError, KeyError, ValueError) as exc:
            raise InvalidInput(f"{path.name} is not a Zarr store written by a batch run "
                               f"(variable 'result' with a spatial_ref): {exc}") from None
        left, top = t.c, t.f
        bounds = (left, top + h * t.e, left + w * t.a, top)
        return cls(path=path, kind="zarr", crs=CRS.from_wkt(wkt), bounds=bounds, width=w,
                   height=h, band_names=names, dtype=dtype,
                   display=kind == "display" and dtype == "uint8" and names[-1] == "alpha",
                   transform=tuple(t)[:6])

    @property
    def count(self) -> int:
        return len(self.band_names)

    def mercator_bounds(self) -> tuple[float, float, float, float]:
        """Bounds in Web Mercator (clipped where the projection ends)."""
        b = rasterio.warp.transform_bounds(self.crs, MERCATOR, *self.bounds, densify_pts=21)
        return (max(b[0], -MERC_MAX), max(b[1], -MERC_MAX), min(b[2], MERC_MAX),
                min(b[3], MERC_MAX))

    def wgs84_bounds(self) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = self.mercator_bounds()
        (w, e), (s, n) = to_lonlat(np.array([x0, x1]), np.array([y0, y1]))
        return float(w), float(s), float(e), float(n)

    def read(self, bbox: tuple[float, float, float, float] | None, width: int, height: int,
             *, bbox_crs: CRS | None = None) -> xr.DataArray:
        """(band, y, x) float32 (NaN = no data) inside ``bbox`` at about ``width`` x
        ``height`` pixels, from the matching overview; attrs crs, transform, overview_factor."""
        if self.kind == "gdal":
            arr = open_for_screen(self.path, bbox, width, height, bbox_crs=bbox_crs)
            return arr.astype(np.float32, copy=False)
        return self._read_zarr(bbox, width, height, bbox_crs=bbox_crs)

    def _read_zarr(self, bbox: Any, width: int, height: int, *,
                   bbox_crs: CRS | None) -> xr.DataArray:
        """Zarr has no overviews: every ``step``-th pixel of the window (nearest)."""
        t = Affine(*self.transform)
        if bbox is None:
            r0, r1, c0, c1 = 0, self.height, 0, self.width
        else:
            if bbox_crs is not None and bbox_crs != self.crs:
                bbox = rasterio.warp.transform_bounds(bbox_crs, self.crs, *bbox, densify_pts=21)
            win = rasterio.windows.from_bounds(*bbox, transform=t)
            c0, r0 = max(0, math.floor(win.col_off)), max(0, math.floor(win.row_off))
            c1 = min(self.width, math.ceil(win.col_off + win.width))
            r1 = min(self.height, math.ceil(win.row_off + win.height))
            if c1 <= c0 or r1 <= r0:
                raise DataUnavailable(f"the bbox does not overlap {self.path}")
        step = max(1, math.floor(max((c1 - c0) / width, (r1 - r0) / height)))
        with xr.open_zarr(self.path, consolidated=None) as ds:
            var = ds["result"]
            if "time" in var.dims:
                var = var.isel(time=-1)
            data = var.isel(y=slice(r0, r1, step), x=slice(c0, c1, step)).values
        data = data.astype(np.float32, copy=False)
        transform = t @ Affine.translation(c0, r0) @ Affine.scale(step)
        return xr.DataArray(data, dims=("band", "y", "x"),
                            attrs={"crs": self.crs.to_string(),
                                   "transform": tuple(transform)[:6],
                                   "overview_factor": float(step)})


# -- rendering --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rendered:
    """One redraw: packed RGBA (bottom row first, as Bokeh draws), the values (band, row, col;
    top row first) on the screen grid, its Mercator bounds and what was read."""

    image: np.ndarray
    values: np.ndarray
    bounds: tuple[float, float, float, float]
    read_shape: tuple[int, int]
    overview_factor: float
    seconds: float


def screen_grid(view: tuple[float, float, float, float], size: tuple[int, int],
                extent: tuple[float, float, float, float]) -> Grid | None:
    """The part of the screen (Mercator ``view`` at ``size`` pixels) covering ``extent``,
    snapped outward to whole screen pixels, or None off screen."""
    return Grid(MERCATOR, view, *size).covering(extent)


def to_screen(arr: xr.DataArray, bounds: tuple[float, float, float, float], width: int,
              height: int) -> np.ndarray:
    """``arr`` (band, y, x, attrs crs/transform) on the screen grid: (band, row, col) float32,
    top row first, NaN outside the raster; nearest neighbour, so values stay values."""
    crs = CRS.from_user_input(arr.attrs["crs"])
    if crs == MERCATOR:
        import datashader as ds

        canvas = ds.Canvas(plot_width=width, plot_height=height,
                           x_range=(bounds[0], bounds[2]), y_range=(bounds[1], bounds[3]))
        t = Affine(*arr.attrs["transform"])
        ny, nx = arr.sizes["y"], arr.sizes["x"]
        coords = {"y": t.f + (np.arange(ny) + 0.5) * t.e, "x": t.c + (np.arange(nx) + 0.5) * t.a}
        bands = []
        for b in range(arr.sizes["band"]):
            out = canvas.raster(xr.DataArray(arr.values[b], dims=("y", "x"), coords=coords),
                                upsample_method="nearest", downsample_method="first",
                                nan_value=np.nan)
            up = out["y"].values[0] < out["y"].values[-1]  # keeps the source's orientation
            bands.append(out.values[::-1] if up else out.values)
        return np.stack(bands).astype(np.float32, copy=False)
    dst = np.full((arr.sizes["band"], height, width), np.nan, np.float32)
    rasterio.warp.reproject(
        arr.values, dst, src_transform=Affine(*arr.attrs["transform"]), src_crs=crs,
        src_nodata=np.nan, dst_transform=from_bounds(*bounds, width, height),
        dst_crs=MERCATOR, dst_nodata=np.nan, resampling=Resampling.nearest)
    return dst


def palette(name: str) -> np.ndarray:
    """256 RGBA colours of a matplotlib colormap packed as uint32 (little-endian RGBA)."""
    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise InvalidInput(f"unknown colormap {name!r}", choices=COMMON_COLORMAPS) from None
    rgba = (cmap(np.linspace(0, 1, 256)) * 255).round().astype(np.uint8)
    return rgba.view(np.uint32).reshape(256)


def _scale(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Values -> 0..255 bins (linear between vmin and vmax, clipped); NaN -> 0."""
    span = (vmax - vmin) or 1.0
    idx = np.clip((values - vmin) * (255.0 / span), 0, 255)
    return np.nan_to_num(idx, nan=0.0).astype(np.uint8)


def colourize(values: np.ndarray, *, band: int | None, display: bool, colormap: str,
              vmin: float, vmax: float) -> np.ndarray:
    """(band, row, col) values -> packed RGBA (row, col): one ``band`` (1-based) through
    ``colormap`` between vmin and vmax, or (``band`` None) an RGB composite of the first
    three bands, stretched unless ``display`` (uint8 colours with an alpha band)."""
    if band is not None:
        v = values[band - 1]
        out = palette(colormap)[_scale(v, vmin, vmax)]
        out[~np.isfinite(v)] = 0
        return out
    n = values.shape[0]
    if display:
        colour = values[: max(1, n - 1)]
        alpha = np.nan_to_num(values[-1], nan=0).astype(np.uint8)
        planes = [np.nan_to_num(c, nan=0).astype(np.uint8) for c in colour]
    else:
        colour = values[:3]
        alpha = np.where(np.all(np.isfinite(colour), axis=0), 255, 0).astype(np.uint8)
        planes = [_scale(c, vmin, vmax) for c in colour]
    if len(planes) == 1:
        planes = planes * 3
    rgba = np.stack([*planes[:3], alpha], axis=-1)
    return np.ascontiguousarray(rgba).view(np.uint32)[..., 0]


def render(source: RasterSource, view: tuple[float, float, float, float],
           size: tuple[int, int], *, band: int | None, colormap: str, vmin: float,
           vmax: float) -> Rendered | None:
    """Draw ``source`` for the Mercator ``view`` at ``size`` screen pixels (None: the raster
    is not in view). Reads at most the screen's pixels, from the matching overview."""
    t0 = time.perf_counter()
    grid = screen_grid(view, size, source.mercator_bounds())
    if grid is None:
        return None
    bounds, w, h = grid.bounds, grid.width, grid.height
    try:
        arr = source.read(bounds, w, h, bbox_crs=MERCATOR)
    except DataUnavailable:  # the reprojected box only grazes the raster
        return None
    values = to_screen(arr, bounds, w, h)
    image = colourize(values, band=band, display=source.display, colormap=colormap,
                      vmin=vmin, vmax=vmax)[::-1]
    return Rendered(image=np.ascontiguousarray(image), values=values, bounds=bounds,
                    read_shape=(arr.sizes["y"], arr.sizes["x"]),
                    overview_factor=float(arr.attrs.get("overview_factor", 1.0)),
                    seconds=time.perf_counter() - t0)


def default_stretch(source: RasterSource, band: int | None) -> tuple[float, float]:
    """2nd-98th percentile of a whole-raster preview (read from the coarsest overview)."""
    if source.display:
        return 0.0, 255.0
    arr = source.read(None, PREVIEW, PREVIEW).values
    v = arr[(band or 1) - 1] if band is not None else arr[:3]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.percentile(v, [2, 98]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


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
        self._styling = False
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
        for w in (self._band, self._colormap, self._vmin, self._vmax):
            w.param.watch(lambda e: self._restyle(), "value")
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

    def _restyle(self) -> None:
        layer = self.layers.get(self._which.value)
        if layer is None or self._styling or self._vmin.value is None \
                or self._vmax.value is None:
            return
        band = self._band.value
        self._locked(lambda: self.restyle(layer.name, band=None if band == 0 else band,
                                          colormap=self._colormap.value,
                                          vmin=float(self._vmin.value),
                                          vmax=float(self._vmax.value)))

    def _show_style(self) -> None:
        layer = self.layers.get(self._which.value)
        if layer is None:
            return
        self._styling = True  # never restyle the layer from half-updated widgets
        try:
            opts = {f"{i + 1}: {n}": i + 1 for i, n in enumerate(layer.source.band_names)}
            if layer.source.count >= 3 or layer.source.display:
                opts = {"RGB composite": 0, **opts}
            self._band.options = opts
            self._band.value = 0 if layer.band is None else layer.band
            self._colormap.value = layer.colormap
            self._vmin.value, self._vmax.value = layer.vmin, layer.vmax
        finally:
            self._styling = False

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


__all__ = ["RasterLayer", "RasterLayers", "RasterSource", "Rendered", "check_raster_path",
           "colourize", "default_stretch", "palette", "render", "screen_grid", "to_screen"]
