"""Nearest-neighbour warping of a window straight from a (single-band) dataset into a grid.

GDAL's WarpedVRT (what rio-tiler uses per band) costs ~6 ms per 256 px tile; most of it
is setup. Here destination pixel centres are projected into the source CRS on a coarse
control grid, interpolated (exactness checked against a true projection of in-between
points, like GDAL's approximate transformer with a 0.125 px error), and source pixels are
gathered with numpy from the one window read. Overviews are used when zoomed out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.windows import Window

#: Control grid spacing (destination pixels) and the tolerated interpolation error
#: (source pixels) before falling back to projecting every pixel.
STEP = 16
MAX_ERROR = 0.125


@dataclass(frozen=True)
class Grid:
    """A destination grid: CRS, bounds (left, bottom, right, top) and size."""

    crs: CRS
    bounds: tuple[float, float, float, float]
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        return rasterio.transform.from_bounds(*self.bounds, self.width, self.height)


_KEYS: dict[int, tuple[CRS, str]] = {}


def _crs_key(crs: CRS) -> str:
    """``EPSG:n`` or the WKT; memoised per object for long-lived CRS objects (the
    preview cache shares one per CRS): hashing a CRS formats its WKT."""
    hit = _KEYS.get(id(crs))
    if hit is not None and hit[0] is crs:
        return hit[1]
    epsg = _epsg(crs)
    key = f"EPSG:{epsg}" if epsg else crs.to_wkt()
    if len(_KEYS) < 1024:
        _KEYS[id(crs)] = (crs, key)
    return key


_EPSG: dict[int, int | None] = {}


def _epsg(crs: CRS) -> int | None:
    """EPSG code of ``crs`` (memoised by object identity of its WKT hash)."""
    h = hash(crs)
    if h not in _EPSG:
        _EPSG[h] = crs.to_epsg()
    return _EPSG[h]


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


@lru_cache(maxsize=16)
def _interp_weights(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Left node index and weight of each position 0..n-1 between control nodes."""
    nodes = _nodes(n)
    pos = np.arange(n, dtype=np.float64)
    idx = np.clip(np.searchsorted(nodes, pos, side="right") - 1, 0, len(nodes) - 2)
    t = (pos - nodes[idx]) / (nodes[idx + 1] - nodes[idx])
    return idx, t


def _interp(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear interpolation of node values to every pixel (no BLAS: it spins threads)."""
    iy, ty = _interp_weights(height)
    ix, tx = _interp_weights(width)
    rows = values[iy] * (1 - ty)[:, None] + values[iy + 1] * ty[:, None]
    return rows[:, ix] * (1 - tx) + rows[:, ix + 1] * tx


def _nodes(n: int) -> np.ndarray:
    nodes = np.arange(0, n, STEP, dtype=np.float64)
    if nodes[-1] != n - 1:
        nodes = np.append(nodes, n - 1)
    return nodes


class SourceCoords:
    """Destination pixel centres of ``grid`` in a source CRS, computed once per CRS."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._plans: dict[tuple, Plan] = {}

    def plan(self, ds: rasterio.io.DatasetReader) -> Plan:
        """The gather plan for ``ds``'s grid (shared by bands on the same grid)."""
        key = (_crs_key(ds.crs), tuple(ds.transform)[:6], ds.width, ds.height)
        hit = self._plans.get(key)
        if hit is None:
            x, y = self.get(ds.crs)
            hit = self._plans[key] = make_plan(ds, x, y)
        return hit

    def ratio(self, ds: rasterio.io.DatasetReader) -> float:
        """Destination pixel size in ``ds`` pixels (to pick an overview)."""
        x, y = self.get(ds.crs)
        return pixel_ratio(x, y, ds.transform)

    def get(self, crs: CRS) -> tuple[np.ndarray, np.ndarray]:
        """(X, Y) arrays of shape (height, width) in ``crs`` (inf where unprojectable)."""
        key = _crs_key(crs)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._compute(crs)
        return hit

    def _compute(self, crs: CRS) -> tuple[np.ndarray, np.ndarray]:
        g = self.grid
        t = g.transform
        if _crs_key(crs) == _crs_key(g.crs):
            cols = np.arange(g.width) + 0.5
            rows = np.arange(g.height) + 0.5
            x = np.broadcast_to(t.c + t.a * cols, (g.height, g.width))
            y = np.broadcast_to((t.f + t.e * rows)[:, None], (g.height, g.width))
            return x, y
        tr = _transformer(_crs_key(g.crs), _crs_key(crs))
        ny, nx = _nodes(g.height), _nodes(g.width)
        cx, cy = np.meshgrid(nx + 0.5, ny + 0.5)
        gx, gy = tr.transform(t.c + t.a * cx, t.f + t.e * cy)
        gx, gy = np.asarray(gx), np.asarray(gy)
        if np.isfinite(gx).all() and np.isfinite(gy).all():
            x = _interp(gx, g.height, g.width)
            y = _interp(gy, g.height, g.width)
            if self._accurate(tr, x, y):
                return x, y
        cols, rows = np.meshgrid(np.arange(g.width) + 0.5, np.arange(g.height) + 0.5)
        x, y = tr.transform(t.c + t.a * cols, t.f + t.e * rows)
        return np.asarray(x), np.asarray(y)

    def _accurate(self, tr: Transformer, x: np.ndarray, y: np.ndarray) -> bool:
        """Check interpolated coords at cell midpoints against a true projection."""
        g = self.grid
        t = g.transform
        r = np.clip(np.arange(STEP // 2, g.height, STEP), 0, g.height - 1)
        c = np.clip(np.arange(STEP // 2, g.width, STEP), 0, g.width - 1)
        rr, cc = np.meshgrid(r, c, indexing="ij")
        ex, ey = tr.transform(t.c + t.a * (cc + 0.5), t.f + t.e * (rr + 0.5))
        err = np.hypot(np.asarray(ex) - x[rr, cc], np.asarray(ey) - y[rr, cc])
        if not err.size:
            return True
        return bool(np.isfinite(err).all()) and float(err.max()) < self._tolerance(x)

    def _tolerance(self, x: np.ndarray) -> float:
        # in source units: MAX_ERROR of a destination pixel (finer than any source pixel read)
        if x.shape[1] < 2:
            return math.inf
        step = np.nanmedian(np.abs(np.diff(x[:, : min(x.shape[1], 8)], axis=1)))
        return MAX_ERROR * float(step) if np.isfinite(step) and step > 0 else 0.0


def pick_overview(ds: rasterio.io.DatasetReader, ratio: float) -> int | None:
    """The overview index to read for ``ratio`` destination/source pixel size (None: full)."""
    best, best_f = None, 1
    for i, f in enumerate(ds.overviews(1)):
        if best_f < f <= ratio * 1.0001:
            best, best_f = i, f
    return best


def pixel_ratio(x: np.ndarray, y: np.ndarray, transform: Affine) -> float:
    """Destination pixel size in source pixels (from the centre of the coords)."""
    h, w = x.shape
    i, j = h // 2, min(w // 2, w - 2)
    if w < 2:
        return 1.0
    dx = math.hypot(x[i, j + 1] - x[i, j], y[i, j + 1] - y[i, j])
    res = math.hypot(transform.a, transform.d)
    return dx / res if res and math.isfinite(dx) else 1.0


@dataclass(frozen=True)
class Plan:
    """Where each destination pixel comes from in one source grid: a window and indices."""

    window: Window | None  # None: no destination pixel falls inside the source
    flat: np.ndarray | None  # flat index into the window, for pixels inside
    inside: np.ndarray | None  # (h, w) bool, None when every pixel is inside
    shape: tuple[int, int]


def make_plan(ds: rasterio.io.DatasetReader, x: np.ndarray, y: np.ndarray) -> Plan:
    """Nearest source pixel (the one containing each destination centre, as GDAL does)."""
    inv = ~ds.transform
    with np.errstate(invalid="ignore"):
        cols = np.floor(inv.a * x + inv.b * y + inv.c)
        rows = np.floor(inv.d * x + inv.e * y + inv.f)
        inside = (cols >= 0) & (cols < ds.width) & (rows >= 0) & (rows < ds.height)
    if not inside.any():
        return Plan(None, None, None, x.shape)
    full = bool(inside.all())
    ci = (cols if full else cols[inside]).astype(np.intp).ravel()
    ri = (rows if full else rows[inside]).astype(np.intp).ravel()
    c0, c1, r0, r1 = int(ci.min()), int(ci.max()), int(ri.min()), int(ri.max())
    width = c1 - c0 + 1
    flat = (ri - r0) * width + (ci - c0)
    return Plan(Window(c0, r0, width, r1 - r0 + 1), flat, None if full else inside, x.shape)


def read_nearest(ds: rasterio.io.DatasetReader, plan: Plan, *,
                 nodata: float | None = None) -> np.ma.MaskedArray:
    """Gather band 1 of ``ds`` following ``plan`` -> (1, h, w) masked array."""
    shape = plan.shape
    dtype = ds.dtypes[0]
    if plan.window is None:
        return np.ma.MaskedArray(np.zeros((1, *shape), dtype), mask=np.ones((1, *shape), bool))
    win = ds.read(1, window=plan.window)
    vals = win.ravel().take(plan.flat)
    if plan.inside is None:
        out = vals.reshape(shape)
        valid = None
    else:
        out = np.zeros(shape, dtype=dtype)
        out[plan.inside] = vals
        valid = plan.inside.copy()
    nd = ds.nodata if ds.nodata is not None else nodata
    flags = ds.mask_flag_enums[0]
    vvalid: np.ndarray | None = None
    if MaskFlags.per_dataset in flags or MaskFlags.alpha in flags:
        vvalid = ds.read_masks(1, window=plan.window).ravel().take(plan.flat) > 0
    elif nd is not None:
        vvalid = ~np.isnan(vals) if isinstance(nd, float) and math.isnan(nd) else vals != nd
    if np.issubdtype(out.dtype, np.floating):
        fin = np.isfinite(vals)
        vvalid = fin if vvalid is None else vvalid & fin
    if vvalid is not None:
        if valid is None:
            valid = vvalid.reshape(shape)
        else:
            valid[plan.inside] = vvalid
    mask = np.zeros((1, *shape), bool) if valid is None else ~valid[None]
    return np.ma.MaskedArray(out[None], mask=mask, copy=False)
