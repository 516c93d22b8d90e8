"""Reading band pixels for profiles: one pixel at a point (local GeoTIFFs by
:mod:`engine.timeseries.geotiff`, learned per kind of file from GDAL's first answer; other
files by rasterio on the shared handle pool) or a window on a reference grid."""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
import rasterio.windows
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from engine.errors import DataUnavailable
from engine.render.handles import HandleCache
from engine.storage import is_remote, read_error, signature
from engine.timeseries import geotiff

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BandFile:
    href: str
    nodata: float | None
    transform: tuple[float, float] | None = None  # raster:bands scale/offset (bands.py)


@lru_cache(maxsize=64)
def _transformer(crs_wkt: str) -> Transformer:
    return Transformer.from_crs("EPSG:4326", crs_wkt, always_xy=True)


@lru_cache(maxsize=256)
def _inverse(transform: tuple[float, ...]) -> tuple[float, ...]:
    """The inverse of an affine transform, as 6 coefficients (``~Affine`` costs ~30 us)."""
    return tuple((~Affine(*transform))[:6])


def _to_crs(crs: CRS, lon: float, lat: float) -> tuple[float, float]:
    """lon/lat in ``crs`` (transformers cached by the CRS's WKT)."""
    return _transformer(crs.to_wkt()).transform(lon, lat)


class FastPixels:
    """Pixels read by :mod:`engine.timeseries.geotiff` instead of GDAL, where that is known
    to give GDAL's answer: the first file of each layout *kind* is also opened with
    rasterio, and the kind is used only if its size, type, transform, nodata and pixel
    agree (the CRS is then GDAL's, for every file of the kind). Parsed headers are cached
    (LRU, checked against a ``stat`` signature)."""

    def __init__(self, *, size: int = 4096) -> None:
        self.size = size
        self._layouts: OrderedDict[str, tuple[tuple, geotiff.Layout | None]] = OrderedDict()
        self._kinds: dict[tuple, str | None] = {}  # kind -> CRS WKT, None: use GDAL
        self._lock = threading.Lock()

    def layout(self, path: str, sig: tuple) -> geotiff.Layout | None:
        with self._lock:
            hit = self._layouts.get(path)
            if hit is not None and hit[0] == sig:
                self._layouts.move_to_end(path)
                return hit[1]
        layout = geotiff.parse(path)
        with self._lock:
            self._layouts[path] = (sig, layout)
            while len(self._layouts) > self.size:
                self._layouts.popitem(last=False)
        return layout

    def crs_wkt(self, kind: tuple) -> str | None:
        """The CRS of files of ``kind`` as GDAL reads it; None: not validated (yet) or
        not readable here."""
        with self._lock:
            return self._kinds.get(kind)

    def validated(self, kind: tuple) -> bool:
        with self._lock:
            return kind in self._kinds

    def judge(self, layout: geotiff.Layout, path: str, ds: DatasetReader, col: int, row: int,
              value: Any) -> None:
        """Compare ``layout`` with the dataset GDAL opened and its ``value`` at col/row."""
        try:
            same = (ds.count >= 1 and (ds.width, ds.height) == (layout.width, layout.height)
                    and np.dtype(ds.dtypes[0]) == layout.dtype.newbyteorder("=")
                    and ds.transform.almost_equals(Affine(*layout.transform), precision=1e-9)
                    and _same(ds.nodata, layout.nodata) and ds.crs is not None
                    and _same(geotiff.read_pixel(path, layout, col, row), value))
        except geotiff.Unsupported:
            same = False
        if not same:
            log.info("profile: %s is read with GDAL (its layout is not handled here)", path)
        with self._lock:
            self._kinds[layout.kind] = ds.crs.to_wkt() if same else None

    def clear(self) -> None:
        with self._lock:
            self._layouts.clear()
            self._kinds.clear()


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(a == b or (math.isnan(a) and math.isnan(b)))


def read_pixel(handles: HandleCache, fast: FastPixels, f: BandFile, lon: float, lat: float
           ) -> float | None:
    """The value of the pixel containing lon/lat (scale/offset applied); None when
    outside, nodata or NaN."""
    value = _stored_pixel(handles, fast, f, lon, lat)
    if value is None or f.transform is None:
        return value
    return value * f.transform[0] + f.transform[1]


def _stored_pixel(handles: HandleCache, fast: FastPixels, f: BandFile, lon: float, lat: float
                  ) -> float | None:
    """The stored number of the pixel containing lon/lat; None when outside, nodata or
    NaN. Local GeoTIFFs are read by :mod:`engine.timeseries.geotiff`, others by GDAL."""
    sig = signature(f.href)
    layout = None if is_remote(f.href) else fast.layout(f.href, sig)
    value: Any = None
    if layout is not None and (wkt := fast.crs_wkt(layout.kind)) is not None:
        x, y = _transformer(wkt).transform(lon, lat)
        sa, sb, sc, sd, se, sf = _inverse(layout.transform)
        col, row = math.floor(x * sa + y * sb + sc), math.floor(x * sd + y * se + sf)
        if not (0 <= row < layout.height and 0 <= col < layout.width):
            return None
        try:
            value = geotiff.read_pixel(f.href, layout, col, row)
            nodata = layout.nodata if layout.nodata is not None else f.nodata
        except (geotiff.Unsupported, OSError):
            value = None  # a sparse or damaged block: GDAL says what it holds
    if value is None:
        try:
            with handles.lend(f.href) as ds:
                x, y = _to_crs(ds.crs, lon, lat)
                col, row = ~ds.transform @ (x, y)
                col, row = math.floor(col), math.floor(row)
                if not (0 <= row < ds.height and 0 <= col < ds.width):
                    return None
                value = ds.read(1, window=Window(col, row, 1, 1))[0, 0].item()
                nodata = ds.nodata if ds.nodata is not None else f.nodata
                if layout is not None and not fast.validated(layout.kind):
                    fast.judge(layout, f.href, ds, col, row, value)
        except RasterioError as exc:
            raise read_error(f.href, exc) from None
    if nodata is not None and (value == nodata or (math.isnan(nodata) and math.isnan(value))):
        return None
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_like(handles: HandleCache, f: BandFile, ref_transform, window: Window, crs: CRS
               ) -> np.ma.MaskedArray:
    """Band ``f`` on the grid of ``window`` of the reference band (nearest, boundless)."""
    try:
        with handles.lend(f.href) as ds:
            if ds.crs != crs:
                raise DataUnavailable(f"{f.href} is not in the CRS of the scene's other bands")
            nodata = ds.nodata if ds.nodata is not None else f.nodata
            h, w = int(window.height), int(window.width)
            if ds.transform == ref_transform:
                own = window
            else:
                bounds = rasterio.windows.bounds(window, ref_transform)
                own = rasterio.windows.from_bounds(*bounds, transform=ds.transform)
            data = ds.read(1, window=own, out_shape=(h, w), boundless=True,
                           fill_value=nodata if nodata is not None else 0)
    except RasterioError as exc:
        raise read_error(f.href, exc) from None
    mask = np.zeros(data.shape, bool) if nodata is None else (data == nodata)
    if np.issubdtype(data.dtype, np.floating):
        mask |= ~np.isfinite(data)
    if f.transform is not None:
        data = data.astype(np.float64) * f.transform[0] + f.transform[1]
    return np.ma.MaskedArray(data, mask=mask)
