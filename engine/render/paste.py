"""First-valid-pixel mosaics pasted scene by scene into the part of the grid each covers.

A zoomed-out tile over many scenes used to read every scene on the whole 256 x 256 grid
(plan, gather, masks, mosaic over 65k pixels each) although a scene covers a few pixels of
it. Here each scene is read only in the window of the grid its footprint covers (its WGS84
bbox projected into the grid), with the destination coordinates
sliced from the grid's own (so every pixel is the one the whole-grid read gives), and
pasted where the mosaic has no value yet; scenes whose window is empty or already full
are not read, and the loop stops once every pixel has a value (like rio-tiler's
``FirstMethod`` in ``mosaic_reader``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.models import ImageData

from engine.render.fastwarp import Grid, Plan, SourceCoords, _crs_key, _transformer, make_plan

#: (row_start, row_stop, col_start, col_stop) of a grid
Window = tuple[int, int, int, int]
#: Points per bbox edge projected to find a footprint (curved edges in the grid's CRS).
DENSIFY = 11
#: Web Mercator's latitude limit: bboxes are clipped to it before projecting.
MAX_LAT = 85.05112878


def footprint_windows(grid: Grid, bboxes: Sequence[Sequence[float]]) -> np.ndarray:
    """Per WGS84 bbox, the window of ``grid`` it covers (every pixel it touches), clipped:
    an ``(n, 4)`` int array of row start/stop, col start/stop (empty when stop <= start).
    A bbox that cannot be projected gets the whole grid.

    In Web Mercator (and WGS84) a bbox's edges stay straight, so its projected corners
    bound it exactly; a pixel outside has its centre at least half a pixel away, beyond
    the warper's 0.125 px error. In other CRSs the edges curve between the projected
    points: one pixel of margin."""
    b = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    full = np.tile([0, grid.height, 0, grid.width], (len(b), 1))
    if not len(b):
        return full.astype(np.intp)
    t = np.linspace(0.0, 1.0, DENSIFY)
    w, s, e, n = (b[:, i:i + 1] for i in range(4))
    s, n = np.clip(s, -MAX_LAT, MAX_LAT), np.clip(n, -MAX_LAT, MAX_LAT)
    lon = np.hstack([w + (e - w) * t, w + (e - w) * t, np.repeat(w, DENSIFY, 1),
                     np.repeat(e, DENSIFY, 1)])
    lat = np.hstack([np.repeat(s, DENSIFY, 1), np.repeat(n, DENSIFY, 1), s + (n - s) * t,
                     s + (n - s) * t])
    key = _crs_key(grid.crs)
    pad = 0 if key in ("EPSG:3857", "EPSG:4326") else 1
    if key == "EPSG:4326":
        x, y = lon, lat
    else:
        x, y = _transformer("EPSG:4326", _crs_key(grid.crs)).transform(lon, lat)
        x, y = np.asarray(x), np.asarray(y)
    gt = grid.transform
    with np.errstate(invalid="ignore", divide="ignore"):
        cols = (x - gt.c) / gt.a
        rows = (y - gt.f) / gt.e
        out = np.stack([np.floor(rows.min(1)) - pad, np.ceil(rows.max(1)) + pad,
                        np.floor(cols.min(1)) - pad, np.ceil(cols.max(1)) + pad], axis=1)
    bad = ~np.isfinite(out).all(axis=1)
    out[bad] = full[bad]
    out[:, 0:2] = np.clip(out[:, 0:2], 0, grid.height)
    out[:, 2:4] = np.clip(out[:, 2:4], 0, grid.width)
    return out.astype(np.intp)


def sub_grid(grid: Grid, window: Window) -> Grid:
    """The part of ``grid`` inside ``window`` (same CRS and pixel size)."""
    r0, r1, c0, c1 = window
    t = grid.transform
    left, top = t.c + c0 * t.a, t.f + r0 * t.e
    return Grid(grid.crs, (left, top + (r1 - r0) * t.e, left + (c1 - c0) * t.a, top),
                c1 - c0, r1 - r0)


class WindowCoords:
    """The destination coordinates of a window of a grid, sliced from the whole grid's
    (:class:`SourceCoords`), so a window's pixels are exactly the whole-grid read's.
    Overviews and previews are chosen on the whole grid, as a whole-grid read does."""

    def __init__(self, parent: SourceCoords, window: Window) -> None:
        self.parent = parent
        self.window = window
        self._plans: dict[tuple, Plan] = {}

    def get(self, crs: CRS) -> tuple[np.ndarray, np.ndarray]:
        r0, r1, c0, c1 = self.window
        x, y = self.parent.get(crs)
        return x[r0:r1, c0:c1], y[r0:r1, c0:c1]

    def ratio(self, ds: Any) -> float:
        return self.parent.ratio(ds)

    def plan(self, ds: Any) -> Plan:
        key = (_crs_key(ds.crs), tuple(ds.transform)[:6], ds.width, ds.height)
        hit = self._plans.get(key)
        if hit is None:
            hit = self._plans[key] = make_plan(ds, *self.get(ds.crs))
        return hit


def paste_first(scenes: Sequence[Any], windows: np.ndarray,
                read: Callable[[Any, Window], ImageData], shape: tuple[int, int], *,
                skip: tuple[type[Exception], ...] = (TileOutsideBounds,)) -> ImageData | None:
    """The first valid pixel of ``scenes`` (in order) on a grid of ``shape``: each scene
    read with ``read(scene, window)`` in its window and pasted where no earlier scene
    has a value; ``skip`` exceptions (no data there) leave a scene out. None when no
    scene has data. ``assets`` are the scenes that were read, as ``mosaic_reader`` does."""
    data: np.ndarray | None = None
    mask: np.ndarray | None = None
    used: list[Any] = []
    band_names: list[str] = []
    for scene, win in zip(scenes, windows, strict=True):
        r0, r1, c0, c1 = (int(v) for v in win)
        if r1 <= r0 or c1 <= c0:
            continue
        if mask is not None and not mask[:, r0:r1, c0:c1].any():
            continue  # every pixel it could give has a value already
        try:
            img = read(scene, (r0, r1, c0, c1))
        except skip:
            continue
        arr = img.array
        if data is None:
            data = np.zeros((arr.shape[0], *shape), dtype=arr.dtype)
            mask = np.ones((arr.shape[0], *shape), dtype=bool)
            band_names = list(img.band_names)
        assert mask is not None
        dst_m = mask[:, r0:r1, c0:c1]
        take = dst_m & ~np.ma.getmaskarray(arr)
        data[:, r0:r1, c0:c1][take] = np.ma.getdata(arr)[take]
        dst_m[take] = False
        used.append(scene)
        if not mask.any():
            break
    if data is None:
        return None
    return ImageData(np.ma.MaskedArray(data, mask=mask, copy=False), assets=used,
                     band_names=band_names,
                     metadata={"mosaic_method": "FirstMethod",
                               "mosaic_assets_count": len(scenes),
                               "mosaic_assets_used": len(used)})
