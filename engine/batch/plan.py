"""What a batch run computes: the output grid (area), the scenes, and the block layout.

A :class:`Plan` is small, picklable data shipped once per run to the Dask workers; the
block function (:mod:`engine.batch.blocks`) needs nothing else (no catalog access on
workers: scenes are resolved once, by the caller).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import rasterio.warp
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError

from engine.chain.model import Chain
from engine.errors import InvalidInput
from engine.render.renderer import Scene
from engine.security.gdal_paths import open_raster
from engine.storage import read_error

WGS84 = CRS.from_epsg(4326)

#: Default largest output, in grid cells x dates (about 45 000 x 45 000 px).
MAX_PIXELS = 2_000_000_000


@dataclass(frozen=True)
class Area:
    """The output grid: CRS, bounds (left, bottom, right, top), pixel size and shape."""

    crs: CRS
    bounds: tuple[float, float, float, float]
    resolution: float
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        left, _, _, top = self.bounds
        return Affine(self.resolution, 0.0, left, 0.0, -self.resolution, top)

    def window_bounds(self, row0: int, row1: int, col0: int, col1: int
                      ) -> tuple[float, float, float, float]:
        """Bounds of pixel rows row0..row1 and columns col0..col1 (ends excluded)."""
        left, _, _, top = self.bounds
        r = self.resolution
        return (left + col0 * r, top - row1 * r, left + col1 * r, top - row0 * r)

    def wgs84(self) -> tuple[float, float, float, float]:
        return tuple(rasterio.warp.transform_bounds(self.crs, WGS84, *self.bounds,
                                                    densify_pts=21))

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates (y from top, x from left)."""
        left, _, _, top = self.bounds
        r = self.resolution
        return (top - (np.arange(self.height) + 0.5) * r, left + (np.arange(self.width) + 0.5) * r)


def parse_bbox(bbox: str | Sequence[float]) -> tuple[float, float, float, float]:
    """``"W,S,E,N"`` or 4 numbers -> a tuple; InvalidInput when malformed or inverted."""
    if isinstance(bbox, str):
        parts = [p for p in bbox.replace(" ", "").split(",") if p]
    else:
        parts = list(bbox)
    try:
        w, s, e, n = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise InvalidInput(f"bbox must be 4 numbers W,S,E,N, got {bbox!r}") from None
    if not all(math.isfinite(v) for v in (w, s, e, n)) or not (w < e and s < n):
        raise InvalidInput(f"bbox {[w, s, e, n]} must be finite W,S,E,N with W<E and S<N")
    return w, s, e, n


def parse_crs(crs: Any, what: str = "crs") -> CRS:
    try:
        return CRS.from_user_input(crs)
    except (CRSError, TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} {crs!r} is not a CRS rasterio knows: {exc}") from None


def make_area(bbox: tuple[float, float, float, float], *, bbox_crs: CRS, crs: CRS,
              resolution: float) -> Area:
    """The grid covering ``bbox``: taken as is when ``bbox_crs`` is the output CRS, else
    reprojected and snapped outward to multiples of the resolution (gdalwarp ``-tap``)."""
    if not (isinstance(resolution, int | float) and math.isfinite(resolution) and resolution > 0):
        raise InvalidInput(f"resolution must be a positive number of CRS units, got {resolution!r}")
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
    return Area(crs, (w, n - height * res, w + width * res, n), res, width, height)


def date_groups(scenes: Sequence[Scene]) -> list[datetime | None]:
    """Dates of a time stack's layers, as the renderer groups scenes (one per UTC day)."""
    groups: OrderedDict[str, datetime | None] = OrderedDict()
    for s in scenes:
        groups.setdefault(s.datetime.date().isoformat() if s.datetime else "unknown",
                          s.datetime)
    return list(groups.values())


@dataclass(frozen=True)
class Output:
    """What every block returns: band names, dtype, nodata, and the time axis if any."""

    band_names: tuple[str, ...]
    dtype: str
    nodata: float | None
    display: bool
    dates: tuple[datetime | None, ...] | None = None

    @property
    def shape_prefix(self) -> tuple[int, ...]:
        n = len(self.band_names)
        return (len(self.dates), n) if self.dates is not None else (n,)


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs to compute any block of a run."""

    chain: Chain
    scenes: tuple[Scene, ...]
    read_names: tuple[str, ...]
    area: Area
    chunks: tuple[int, int]
    overlap: int = 0
    analytic: bool = False
    max_items: int = 200
    sandbox: dict[str, Any] = field(default_factory=dict)
    output: Output | None = None

    @property
    def block_rows(self) -> list[tuple[int, int]]:
        return _spans(self.area.height, self.chunks[0])

    @property
    def block_cols(self) -> list[tuple[int, int]]:
        return _spans(self.area.width, self.chunks[1])

    @property
    def nblocks(self) -> tuple[int, int]:
        return len(self.block_rows), len(self.block_cols)


def _spans(size: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, size)) for a in range(0, size, step)]


def default_grid(scene: Scene) -> tuple[CRS, float]:
    """CRS and pixel size of a scene's first band (the default output grid)."""
    started = time.monotonic()
    try:
        with open_raster(scene.hrefs[0]) as ds:
            return ds.crs, float(min(abs(ds.res[0]), abs(ds.res[1])))
    except RasterioError as exc:
        raise read_error(scene.hrefs[0], exc, what="open", started=started) from None


def check_size(area: Area, *, dates: int, max_pixels: int) -> None:
    """InvalidInput when the output is larger than ``max_pixels`` (cells x dates)."""
    total = area.width * area.height * max(1, dates)
    if total > max_pixels:
        what = f"{area.width} x {area.height} px" + (f" x {dates} dates" if dates > 1 else "")
        raise InvalidInput(
            f"the area is {what} = {total:,} pixels at resolution {area.resolution:g}, more "
            f"than the limit of {max_pixels:,}: use a smaller bbox or a coarser resolution")

