"""Local previews kept decoded in memory: a zoomed-out tile over hundreds of scenes reads
hundreds of small preview files, and opening one (GDAL open, CRS, header) costs more than
gathering its few pixels. Each preview is read whole once and kept, keyed by its path and
file signature (a rewritten preview is read again), in an LRU bounded in bytes.

:class:`ArrayDataset` offers the part of a rasterio dataset that
:mod:`engine.render.fastwarp` reads (grid, band 1, nodata, masks), so the nearest-
neighbour read path is the same for a cached preview and an open file.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from engine.errors import DataUnavailable
from engine.security.gdal_paths import check_gdal_path, open_raster


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Band 1 of a small raster in memory, read like a rasterio dataset (read-only)."""

    name: str
    array: np.ndarray  # (height, width)
    crs: CRS
    transform: Affine
    nodata: float | None
    valid: np.ndarray | None = None  # (height, width) bool: the file's own mask, if any

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def dtypes(self) -> tuple[str, ...]:
        return (str(self.array.dtype),)

    @property
    def res(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def mask_flag_enums(self) -> tuple[list[MaskFlags], ...]:
        return ([MaskFlags.per_dataset] if self.valid is not None else
                [MaskFlags.nodata] if self.nodata is not None else [MaskFlags.all_valid],)

    @property
    def nbytes(self) -> int:
        return self.array.nbytes + (self.valid.nbytes if self.valid is not None else 0) + 512

    def overviews(self, band: int) -> list[int]:
        return []

    def read(self, band: int, *, window: Window) -> np.ndarray:
        return self.array[_slices(window)]

    def read_masks(self, band: int, *, window: Window) -> np.ndarray:
        valid = self.valid if self.valid is not None else np.ones(self.array.shape, bool)
        return valid[_slices(window)].astype(np.uint8) * 255


def _slices(w: Window) -> tuple[slice, slice]:
    r, c = int(w.row_off), int(w.col_off)
    return slice(r, r + int(w.height)), slice(c, c + int(w.width))


_CRS: dict[str, CRS] = {}


def _shared(crs: CRS, key: str | None = None) -> CRS:
    """One CRS object per CRS, so the previews of a collection share it (the warper
    memoises per object; hashing a CRS formats its WKT each time)."""
    key = key or crs.to_wkt()
    if key not in _CRS and len(_CRS) < 1024:
        _CRS[key] = crs
    return _CRS.get(key, crs)


def sidecar_path(preview: str | Path) -> Path:
    """The raw copy of a preview GeoTIFF: one JSON line (grid, dtype) then the pixels."""
    return Path(preview).with_suffix(".raw")


def write_raw(path: Path, data: np.ndarray, *, crs: CRS, transform: Affine,
              nodata: float | None) -> None:
    """Write the raw copy of a preview (atomically: a partial file, then a rename)."""
    epsg = crs.to_epsg()
    meta = {"dtype": str(data.dtype), "shape": list(data.shape), "transform": list(transform)[:6],
            "crs": f"EPSG:{epsg}" if epsg else crs.to_wkt(), "nodata": nodata}
    partial = path.with_suffix(".raw-partial")
    partial.write_bytes(json.dumps(meta).encode() + b"\n" + np.ascontiguousarray(data).tobytes())
    partial.replace(path)


def _load_raw(path: str, raw: bytes) -> ArrayDataset | None:
    """The preview from its raw copy's bytes; None when they are not a whole copy."""
    end = raw.find(b"\n", 0, 4096)
    try:
        meta = json.loads(raw[:end]) if end > 0 else None
        dtype, (h, w) = np.dtype(meta["dtype"]), meta["shape"]
        if len(raw) - end - 1 != h * w * dtype.itemsize:
            return None
        crs = _CRS.get(meta["crs"]) or _shared(CRS.from_user_input(meta["crs"]), meta["crs"])
        nodata = None if meta["nodata"] is None else float(meta["nodata"])
        return ArrayDataset(path, np.frombuffer(raw, dtype, offset=end + 1).reshape(h, w), crs,
                            Affine(*meta["transform"]), nodata)
    except (TypeError, ValueError, KeyError):
        return None


def load(path: str) -> ArrayDataset:
    """Read band 1 of ``path`` whole, from its raw copy when there is a whole one
    (DataUnavailable if it cannot be read)."""
    check_gdal_path(path, what="preview file", error=DataUnavailable)
    try:
        raw = sidecar_path(path).read_bytes()
    except OSError:
        raw = b""
    if raw and (ds := _load_raw(path, raw)) is not None:
        return ds
    try:
        with open_raster(path) as ds:
            flags = ds.mask_flag_enums[0]
            valid = (ds.read_masks(1) > 0 if MaskFlags.per_dataset in flags
                     or MaskFlags.alpha in flags else None)
            return ArrayDataset(path, ds.read(1), _shared(ds.crs), ds.transform, ds.nodata,
                                valid)
    except RasterioError as exc:
        raise DataUnavailable(f"cannot read preview {path}: {exc}") from None


class PreviewCache:
    """``get(path)`` -> :class:`ArrayDataset`, at most ``max_bytes`` kept (LRU); thread-safe.
    ``max_bytes=0`` keeps nothing (every ``get`` reads the file)."""

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[tuple[int, int, int], ArrayDataset]] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def get(self, path: str) -> ArrayDataset:
        try:  # previews are local files
            st = os.stat(path)
        except OSError as exc:
            raise DataUnavailable(f"preview file is missing: {path} ({exc.strerror})") from None
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._entries.get(path)
            if hit is not None and hit[0] == sig:
                self._entries.move_to_end(path)
                self.hits += 1
                return hit[1]
        ds = load(path)
        with self._lock:
            self.misses += 1
            old = self._entries.pop(path, None)
            if old is not None:
                self._bytes -= old[1].nbytes
            if ds.nbytes <= self.max_bytes:
                self._entries[path] = (sig, ds)
                self._bytes += ds.nbytes
                while self._bytes > self.max_bytes:
                    self._bytes -= self._entries.popitem(last=False)[1][1].nbytes
        return ds

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes,
                    "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses}
