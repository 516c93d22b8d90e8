"""The one raster grid value object: CRS, bounds, width and height.

A tile, an export, a timelapse frame, a batch run's output (and each of its blocks) and the
dashboard's screen are all a :class:`Grid`; the read pipeline
(:func:`engine.render.read`) puts scenes on one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import morecantile
import numpy as np
import rasterio.transform
import rasterio.warp
from affine import Affine
from rasterio.crs import CRS

from engine.errors import InvalidInput

WGS84 = CRS.from_epsg(4326)
WEB_MERCATOR = CRS.from_epsg(3857)
#: The tile matrix set of XYZ tiles.
TMS = morecantile.tms.get("WebMercatorQuad")

Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class Grid:
    """A pixel grid: CRS, bounds (left, bottom, right, top) and size in pixels (north up)."""

    crs: CRS
    bounds: Bounds
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        return rasterio.transform.from_bounds(*self.bounds, self.width, self.height)

    @property
    def resolution(self) -> float:
        """Pixel width in CRS units (grids are square-pixelled except screen ones)."""
        return (self.bounds[2] - self.bounds[0]) / self.width

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def window_bounds(self, row0: int, row1: int, col0: int, col1: int) -> Bounds:
        """Bounds of pixel rows row0..row1 and columns col0..col1 (ends excluded)."""
        left, _, _, top = self.bounds
        rx = self.resolution
        ry = (self.bounds[3] - self.bounds[1]) / self.height
        return (left + col0 * rx, top - row1 * ry, left + col1 * rx, top - row0 * ry)

    def window(self, row0: int, row1: int, col0: int, col1: int) -> Grid:
        """The sub-grid of rows row0..row1 and columns col0..col1 (ends excluded; they may
        reach outside the grid, e.g. for a halo)."""
        return Grid(self.crs, self.window_bounds(row0, row1, col0, col1), col1 - col0,
                    row1 - row0)

    def covering(self, extent: Sequence[float]) -> Grid | None:
        """The sub-grid of whole pixels covering ``extent`` (in the grid's CRS), clipped to
        the grid; None when they do not overlap (a map screen and a layer's extent)."""
        vx0, vy0, vx1, vy1 = self.bounds
        px, py = (vx1 - vx0) / self.width, (vy1 - vy0) / self.height
        c0 = max(0, math.floor((extent[0] - vx0) / px + 1e-9))
        c1 = min(self.width, math.ceil((extent[2] - vx0) / px - 1e-9))
        r0 = max(0, math.floor((vy1 - extent[3]) / py + 1e-9))  # rows from the top
        r1 = min(self.height, math.ceil((vy1 - extent[1]) / py - 1e-9))
        if c1 <= c0 or r1 <= r0:
            return None
        return Grid(self.crs, (vx0 + c0 * px, vy1 - r1 * py, vx0 + c1 * px, vy1 - r0 * py),
                    c1 - c0, r1 - r0)

    def wgs84(self) -> Bounds:
        """The grid's bounds in WGS84 (lon/lat)."""
        return to_wgs84(self.bounds, self.crs)

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates (y from top, x from left)."""
        left, bottom, right, top = self.bounds
        rx, ry = (right - left) / self.width, (top - bottom) / self.height
        return (top - (np.arange(self.height) + 0.5) * ry,
                left + (np.arange(self.width) + 0.5) * rx)

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def tile(cls, z: int, x: int, y: int, *, tilesize: int = 256) -> Grid:
        """The Web-Mercator grid of XYZ tile z/x/y; InvalidInput outside the tile matrix."""
        if not (0 <= z <= TMS.maxzoom):
            raise InvalidInput(f"zoom {z} is outside 0..{TMS.maxzoom}")
        n = 2 ** z
        if not (0 <= x < n and 0 <= y < n):
            raise InvalidInput(f"tile {z}/{x}/{y} is outside the grid: x and y must be in "
                               f"0..{n - 1} at zoom {z}")
        if not (16 <= tilesize <= 1024):
            raise InvalidInput(f"tilesize {tilesize} is outside 16..1024")
        bounds = TMS.xy_bounds(morecantile.Tile(x, y, z))
        return cls(TMS.rasterio_crs, tuple(bounds), tilesize, tilesize)

    @classmethod
    def from_bbox(cls, bbox: Sequence[float], width: int, height: int, *,
                  crs: Any = "EPSG:3857", bbox_crs: Any = WGS84) -> Grid:
        """``width`` x ``height`` pixels in ``crs`` over ``bbox`` (W, S, E, N in
        ``bbox_crs``, reprojected as a whole when the CRSs differ)."""
        if not (1 <= width <= 16384 and 1 <= height <= 16384):
            raise InvalidInput(f"image size {width}x{height} is outside 1..16384")
        w, s, e, n = (float(v) for v in bbox)
        src = CRS.from_user_input(bbox_crs)
        if not (w < e and s < n) or (src == WGS84 and not (
                -180 <= w and e <= 180 and -90 <= s and n <= 90)):
            raise InvalidInput(f"bbox {list(bbox)} is not W,S,E,N with W<E, S<N")
        dst = CRS.from_user_input(crs)
        bounds = ((w, s, e, n) if src == dst else
                  tuple(rasterio.warp.transform_bounds(src, dst, w, s, e, n, densify_pts=21)))
        return cls(dst, bounds, int(width), int(height))

    @classmethod
    def snapped(cls, bbox: Bounds, *, bbox_crs: CRS, crs: CRS, resolution: float) -> Grid:
        """The grid at ``resolution`` covering ``bbox``: taken as is when ``bbox_crs`` is the
        output CRS, else reprojected and snapped outward to multiples of the resolution
        (gdalwarp ``-tap``)."""
        if not (isinstance(resolution, int | float) and math.isfinite(resolution)
                and resolution > 0):
            raise InvalidInput(f"resolution must be a positive number of CRS units, got "
                               f"{resolution!r}")
        res = float(resolution)
        if bbox_crs == WGS84 and not (-180 <= bbox[0] and bbox[2] <= 180 and -90 <= bbox[1]
                                      and bbox[3] <= 90):
            raise InvalidInput(f"bbox {list(bbox)} is outside -180..180, -90..90 (lon/lat)")
        if bbox_crs == crs:
            w, s, e, n = bbox
        else:
            w, s, e, n = rasterio.warp.transform_bounds(bbox_crs, crs, *bbox, densify_pts=21)
            w, s = math.floor(w / res) * res, math.floor(s / res) * res
            e, n = math.ceil(e / res) * res, math.ceil(n / res) * res
        width = max(1, math.ceil((e - w) / res - 1e-6))
        height = max(1, math.ceil((n - s) / res - 1e-6))
        return cls(crs, (w, n - height * res, w + width * res, n), width, height)


def to_wgs84(bbox: Sequence[float], crs: Any) -> Bounds:
    """``bbox`` (W, S, E, N in ``crs``) as WGS84 bounds."""
    w, s, e, n = (float(v) for v in bbox)
    src = CRS.from_user_input(crs)
    if src == WGS84:
        return w, s, e, n
    return tuple(rasterio.warp.transform_bounds(src, WGS84, w, s, e, n, densify_pts=21))
