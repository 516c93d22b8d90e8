"""What a batch run computes: the output grid, the scenes, and the block layout.

A :class:`BatchPlan` is small, picklable data shipped once per run to the Dask workers; the
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

from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError

from engine.chain.model import Chain
from engine.errors import InvalidInput
from engine.render.grid import Grid
from engine.render.scenes import Scene
from engine.security.gdal_paths import open_raster
from engine.storage import read_error

#: Default largest output, in grid cells x dates (about 45 000 x 45 000 px).
MAX_PIXELS = 2_000_000_000


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
class BatchPlan:
    """Everything a worker needs to compute any block of a run."""

    chain: Chain
    scenes: tuple[Scene, ...]
    read_names: tuple[str, ...]
    grid: Grid
    chunks: tuple[int, int]
    overlap: int = 0
    analytic: bool = False
    max_items: int = 200
    sandbox: dict[str, Any] = field(default_factory=dict)
    output: Output | None = None

    @property
    def area(self) -> Grid:
        """The output grid under its former name (the dashboard's batch tab reads it)."""
        return self.grid

    @property
    def block_rows(self) -> list[tuple[int, int]]:
        return _spans(self.grid.height, self.chunks[0])

    @property
    def block_cols(self) -> list[tuple[int, int]]:
        return _spans(self.grid.width, self.chunks[1])

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


def check_size(grid: Grid, *, dates: int, max_pixels: int) -> None:
    """InvalidInput when the output is larger than ``max_pixels`` (cells x dates)."""
    total = grid.width * grid.height * max(1, dates)
    if total > max_pixels:
        what = f"{grid.width} x {grid.height} px" + (f" x {dates} dates" if dates > 1 else "")
        raise InvalidInput(
            f"the area is {what} = {total:,} pixels at resolution {grid.resolution:g}, more "
            f"than the limit of {max_pixels:,}: use a smaller bbox or a coarser resolution")

