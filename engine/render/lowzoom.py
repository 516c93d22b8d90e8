"""Zoomed-out mosaics over many scenes in one vectorised pass over their tiny levels.

At z6 a tile covers hundreds of scenes, each a few pixels of it, and each read from its
32 px tiny level (:mod:`engine.render.previews`). Read scene by scene (choose the file,
borrow it, plan, gather, mask, paste) that costs ~3 ms of Python per scene and band,
seconds per viewport, whatever the I/O. Here the tiny levels live in one :class:`Atlas`
(every tiny level loaded once, concatenated into one flat array with per-level grid,
nodata and dtype columns) and a tile is one numpy computation per band: every pixel of
every scene's footprint window is mapped into that scene's tiny level with the same
arithmetic as :func:`engine.render.fastwarp.make_plan`, and the first valid value in mosaic
order wins, as in :func:`engine.render.paste.paste_first`. The result is the per-scene
path's, pixel for pixel (tested); any case it does not cover (cloud masks, mixed dtypes
or scale/offset, levels not coarse enough, a scene without a tiny level) returns
:data:`NOT_HANDLED` and the caller reads scene by scene.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from rio_tiler.models import ImageData

from engine.errors import DataUnavailable
from engine.render import previewcache
from engine.render.fastwarp import SourceCoords, crs_key
from engine.render.grid import Grid
from engine.render.paste import footprint_windows
from engine.render.previewcache import ArrayDataset
from engine.render.previews import TINY_SIZE

#: Returned when a group of scenes is not for this path (the caller reads scene by scene).
NOT_HANDLED: Final = object()
#: Fewer scenes than this are read scene by scene (nothing to gain).
MIN_SCENES = 8
#: The largest footprint window (pixels a side) taken: a coarse-enough 32 px level covers
#: at most ~32 (more for a skewed bbox); bigger means zoomed in.
_MAX_SIDE = 48


def tiny_name(preview: str) -> str:
    """The tiny level of a preview's path (string form of ``previews.tiny_path``)."""
    dot = preview.rfind(".")
    return (preview[:dot] if dot > preview.rfind("/") else preview) + ".tiny.raw"


class _Column:
    """An append-only numpy array: views of its first ``n`` values stay valid while it
    grows (growth copies into a new buffer; old views keep the old one)."""

    def __init__(self, dtype: Any, capacity: int = 1024) -> None:
        self.buf = np.empty(capacity, dtype)
        self.n = 0

    def extend(self, values: np.ndarray) -> int:
        """Append ``values``; returns the position of the first."""
        start, end = self.n, self.n + len(values)
        if end > len(self.buf):
            grown = np.empty(max(end, 2 * len(self.buf)), self.buf.dtype)
            grown[:start] = self.buf[:start]
            self.buf = grown
        self.buf[start:end] = values
        self.n = end
        return start

    def view(self) -> np.ndarray:
        return self.buf[:self.n]


#: Per-level columns: name and dtype.
_COLUMNS = (("offset", np.intp), ("w", np.intp), ("h", np.intp), ("ia", float), ("ib", float),
            ("ic", float), ("id", float), ("ie", float), ("if", float), ("res", float),
            ("crs", np.intp), ("has_nd", bool), ("nd", float), ("dtype", np.intp))


class Atlas:
    """Tiny levels loaded so far: pixels in one append-only array per dtype, one row per
    level in append-only columns (grid, nodata, CRS, dtype). Thread-safe: :meth:`lookup`
    returns rows with a snapshot they are valid in. Bounded by ``max_bytes`` of pixels
    (full: it starts over); forgotten by :meth:`clear` (after an ingest)."""

    def __init__(self, max_bytes: int = 128 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._loading = threading.Lock()
        self._missing: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        self._index: dict[str, int] = {}
        self._pixels: dict[str, _Column] = {}
        self._dtypes: dict[str, int] = {}
        self._cols = {name: _Column(dt) for name, dt in _COLUMNS}
        self._crs: dict[str, int] = {}
        self._crs_objs: list[Any] = []
        self._bytes = 0

    def clear(self) -> None:
        with self._lock:
            self._missing = set()
            self._reset()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def lookup(self, paths: Sequence[str]) -> tuple[np.ndarray, dict] | None:
        """(row of each path, snapshot) loading the levels not yet in; None when a path
        has no tiny level or they do not fit. The snapshot: ``pixels`` per dtype name,
        the per-level columns (``crs``: a code), ``crs_objs`` by code and ``dtypes`` (names
        by code)."""
        with self._lock:
            if any(p in self._missing for p in paths):
                return None
            if all(p in self._index for p in paths):
                return self._found(paths)
        with self._loading:  # one loader at a time: concurrent tiles share their scenes
            return self._load(paths)

    def _found(self, paths: Sequence[str]) -> tuple[np.ndarray, dict]:
        rows = np.fromiter((self._index[p] for p in paths), np.intp, len(paths))
        snap = {"pixels": {d: c.view() for d, c in self._pixels.items()},
                "crs_objs": list(self._crs_objs), "dtypes": list(self._dtypes),
                **{name: c.view() for name, c in self._cols.items()}}
        return rows, snap

    def _load(self, paths: Sequence[str]) -> tuple[np.ndarray, dict] | None:
        with self._lock:
            todo = [p for p in dict.fromkeys(paths)
                    if p not in self._index and p not in self._missing]
        loaded: list[tuple[str, ArrayDataset | None]] = []
        for p in todo:
            try:
                loaded.append((p, previewcache.load(p)))
            except DataUnavailable:
                loaded.append((p, None))
        need = sum(ds.array.nbytes for _, ds in loaded if ds is not None)
        if need > self.max_bytes:
            return None  # this group alone does not fit: read scene by scene
        with self._lock:
            if self._bytes + need > self.max_bytes:
                self._reset()  # full: start over (snapshots handed out stay valid)
                have = {p for p, _ in loaded}
                loaded += [(p, None) for p in dict.fromkeys(paths) if p not in have]
            rows: list[tuple] = []
            for p, ds in loaded:
                if p in self._index or p in self._missing:
                    continue
                if ds is None:
                    try:  # a level dropped by the reset above: read it again
                        ds = previewcache.load(p)
                    except DataUnavailable:
                        ds = None
                if ds is None or ds.valid is not None:  # no level, or a mask of its own
                    self._missing.add(p)
                    continue
                rows.append(self._add(p, ds))
            if rows:  # one append per column
                for i, (name, dt) in enumerate(_COLUMNS):
                    self._cols[name].extend(np.array([r[i] for r in rows], dt))
            if any(p in self._missing for p in paths):
                return None
            return self._found(paths)

    def _add(self, path: str, ds: ArrayDataset) -> tuple:
        """Store the level's pixels; its column values (the caller appends them)."""
        key = crs_key(ds.crs)
        if key not in self._crs:
            self._crs[key] = len(self._crs_objs)
            self._crs_objs.append(ds.crs)
        dtype = str(ds.array.dtype)
        if dtype not in self._dtypes:
            self._dtypes[dtype] = len(self._dtypes)
            self._pixels[dtype] = _Column(ds.array.dtype, 2**16)
        offset = self._pixels[dtype].extend(ds.array.ravel())
        inv, t = ~ds.transform, ds.transform
        self._index[path] = len(self._index)
        self._bytes += ds.array.nbytes
        return (offset, ds.width, ds.height, inv.a, inv.b, inv.c, inv.d, inv.e, inv.f,
                math.hypot(t.a, t.d), self._crs[key], ds.nodata is not None,
                0.0 if ds.nodata is None else ds.nodata, self._dtypes[dtype])


#: Most scenes one tile mosaics in one pass (beyond the per-tile cap of scene-by-scene reads).
MAX_ONE_PASS_SCENES = 5000


def one_pass_fits(chain: Any, scenes: Sequence[Any], grid: Grid) -> bool:
    """Whether a tile over ``scenes`` is for :func:`paste_tiny`, from their bboxes only (no
    read): a first-valid mosaic without cloud masks, every scene with previews, at most
    :data:`MAX_ONE_PASS_SCENES`, each covering few enough tile pixels that its tiny level is
    what the per-scene read would choose. The cap of scene-by-scene reads does not apply
    to such a tile (``paste_tiny`` may still decline - e.g. tiny levels missing - and the
    tile is then capped as usual)."""
    src = chain.source
    if src.times or src.mosaic in ("median", "max") or chain.cloud_masks() or not (
            MIN_SCENES <= len(scenes) <= MAX_ONE_PASS_SCENES):
        return False
    if not all(s.has_previews for s in scenes):
        return False
    w = footprint_windows(grid, [s.bbox for s in scenes])
    return int(max((w[:, 1] - w[:, 0]).max(), (w[:, 3] - w[:, 2]).max())) <= TINY_SIZE + 2


def paste_tiny(scenes: Sequence[Any], names: Sequence[str], grid: Grid, coords: SourceCoords,
               atlas: Atlas) -> Any:
    """The first-valid-pixel mosaic of ``scenes`` (Scene records, in order) on ``grid``
    from their tiny levels, as an ImageData of the ``names`` bands (no cloud masks: the
    caller checks); None when no scene has data; :data:`NOT_HANDLED` when this group is
    not for this path."""
    if len(scenes) < MIN_SCENES or any(
            not s.has_previews or len(s.previews) != len(names) for s in scenes):
        return NOT_HANDLED
    transforms = {tuple(s.transforms) if any(s.transforms) else None for s in scenes}
    if len(transforms) > 1 and None in transforms:
        return NOT_HANDLED  # some scaled, some not: the per-scene path's dtype rules
    windows = footprint_windows(grid, [s.bbox for s in scenes])
    nonempty = (windows[:, 1] > windows[:, 0]) & (windows[:, 3] > windows[:, 2])
    order = np.flatnonzero(nonempty)
    if not len(order):
        return None
    if int((windows[order, 1] - windows[order, 0]).max()) > _MAX_SIDE or int(
            (windows[order, 3] - windows[order, 2]).max()) > _MAX_SIDE:
        return NOT_HANDLED  # zoomed in: a tiny level cannot be coarse enough here
    per_band = [[tiny_name(scenes[i].previews[b]) for i in order] for b in range(len(names))]
    found = atlas.lookup([p for paths in per_band for p in paths])
    if found is None:
        return NOT_HANDLED
    all_rows, cols = found
    rows_of = np.split(all_rows, len(names))
    kinds = np.unique(cols["dtype"][all_rows])
    if len(kinds) != 1:
        return NOT_HANDLED  # levels of different dtypes: the per-scene path's casting rules
    flat = cols["pixels"][cols["dtypes"][int(kinds[0])]]
    crs_objs = cols["crs_objs"]
    # every level must be coarse enough (the per-scene path's choice, per CRS and res)
    for b in range(len(names)):
        r = rows_of[b]
        for ci, res in {(int(c), float(v)) for c, v in zip(cols["crs"][r], cols["res"][r],
                                                            strict=True)}:
            x, y = coords.get(crs_objs[ci])
            if _ratio(x, y, res) < 1.0 - 1e-6:
                return NOT_HANDLED

    win = windows[order]
    heights, widths = win[:, 1] - win[:, 0], win[:, 3] - win[:, 2]
    counts = heights * widths
    which = np.repeat(np.arange(len(order)), counts)  # position in `order` per entry
    local = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    rr = win[which, 0] + local // widths[which]
    cc = win[which, 2] + local % widths[which]
    dest = rr * grid.width + cc
    scene_t = _scene_transforms(scenes, order, len(names))

    shape = grid.shape
    out_data, out_mask, winners = [], [], np.zeros(len(order), bool)
    for b in range(len(names)):
        r = rows_of[b][which]
        crs_of = cols["crs"][r]
        x = np.empty(len(r))
        y = np.empty(len(r))
        for ci in np.unique(crs_of):
            sel = crs_of == ci
            gx, gy = coords.get(crs_objs[int(ci)])
            x[sel], y[sel] = gx[rr[sel], cc[sel]], gy[rr[sel], cc[sel]]
        with np.errstate(invalid="ignore"):
            c = np.floor(cols["ia"][r] * x + cols["ib"][r] * y + cols["ic"][r])
            ro = np.floor(cols["id"][r] * x + cols["ie"][r] * y + cols["if"][r])
            w, h = cols["w"][r], cols["h"][r]
            inside = (c >= 0) & (c < w) & (ro >= 0) & (ro < h)
        e = np.flatnonzero(inside)
        vals = flat[cols["offset"][r[e]] + ro[e].astype(np.intp) * w[e] + c[e].astype(np.intp)]
        # the level's own nodata, else the scene's (raster:bands), as the per-scene read
        own = cols["has_nd"][r[e]]
        sc_has, sc_nd = _scene_nodata(scenes, order, b)
        has_nd = own | sc_has[which[e]]
        nd = np.where(own, cols["nd"][r[e]], sc_nd[which[e]])
        valid = _valid(vals, has_nd, nd)
        e, vals = e[valid], vals[valid]
        band_out = np.zeros(shape, vals.dtype if scene_t is None else np.float32)
        band_mask = np.ones(shape, bool)
        if len(e):
            first_dest, first = np.unique(dest[e], return_index=True)  # first in scene order
            won = e[first]
            v = vals[first]
            if scene_t is not None:
                mul, add = scene_t[which[won], b, 0], scene_t[which[won], b, 1]
                v = v.astype(np.float32) * mul + add
            band_out.ravel()[first_dest] = v
            band_mask.ravel()[first_dest] = False
            winners[which[won]] = True
        out_data.append(band_out)
        out_mask.append(band_mask)
    if not winners.any():
        return None
    used = [scenes[i] for i in order[winners]]
    return ImageData(np.ma.MaskedArray(np.stack(out_data), mask=np.stack(out_mask), copy=False),
                     assets=used, band_names=list(names),
                     metadata={"mosaic_method": "FirstMethod",
                               "mosaic_assets_count": len(scenes),
                               "mosaic_assets_used": len(used)})


def _ratio(x: np.ndarray, y: np.ndarray, res: float) -> float:
    """:func:`engine.render.fastwarp.pixel_ratio` for a level of pixel size ``res``."""
    h, w = x.shape
    i, j = h // 2, min(w // 2, w - 2)
    if w < 2:
        return 1.0
    dx = math.hypot(x[i, j + 1] - x[i, j], y[i, j + 1] - y[i, j])
    return dx / res if res and math.isfinite(dx) else 1.0


def _valid(vals: np.ndarray, has_nd: np.ndarray, nd: np.ndarray) -> np.ndarray:
    """Valid values (:func:`engine.render.fastwarp.read_nearest`): not the nodata value
    (compared as numpy compares a Python float with the values: in their float dtype, by
    value for integers; NaN nodata: not NaN), and finite for floats."""
    if np.issubdtype(vals.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            same = vals == nd.astype(vals.dtype)
        return np.isfinite(vals) & ~(has_nd & same)
    return ~(has_nd & (vals == nd))


def _scene_nodata(scenes: Sequence[Any], order: np.ndarray, band: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per scene in ``order``: whether band ``band`` has a catalog nodata, and its value."""
    values = [scenes[i].nodata[band] if band < len(scenes[i].nodata) else None for i in order]
    return (np.array([v is not None for v in values], bool),
            np.array([0.0 if v is None else float(v) for v in values], float))


def _scene_transforms(scenes: Sequence[Any], order: np.ndarray, nbands: int) -> np.ndarray | None:
    """Per scene in ``order`` and band, (mul, add) as float32; None when none is scaled."""
    if not any(any(scenes[i].transforms) for i in order):
        return None
    t = np.zeros((len(order), nbands, 2), np.float32)
    t[:, :, 0] = 1.0
    for k, i in enumerate(order):
        for b, tb in enumerate(scenes[i].transforms[:nbands]):
            if tb is not None:
                t[k, b] = (np.float32(tb[0]), np.float32(tb[1]))
    return t
