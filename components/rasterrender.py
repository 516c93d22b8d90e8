"""Reading and colouring a large raster for the screen: a GeoTIFF/COG or a Zarr store read
at the overview level matching the screen (:func:`engine.batch.open_for_screen`), put on the
screen's Web Mercator grid (Datashader ``Canvas.raster`` for EPSG:3857 rasters, a GDAL warp
for any other CRS) and coloured. No Panel or Bokeh here: :mod:`components.rasterlayer` draws
the result on the map.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.colors
import numpy as np
import rasterio
import rasterio.warp
import rasterio.windows
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import from_bounds

from components.presets import COMMON_COLORMAPS
from components.tilemath import to_lonlat
from engine.batch import open_for_screen
from engine.errors import DataUnavailable, InvalidInput
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


__all__ = ["MAX_HOVER_BANDS", "RasterSource", "Rendered", "check_raster_path", "colourize",
           "default_stretch", "palette", "render", "screen_grid", "to_screen"]
