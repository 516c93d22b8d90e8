"""Large rasters on screen: read only the overview level that matches the viewport.

A 10980 px scene shown in a 1024 px wide map needs ~1/10 of its pixels; reading the
matching overview (GDAL picks it from ``out_shape``) instead of full resolution keeps a
Datashader/HoloViews ``rasterize`` redraw well under 100 ms.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import rasterio
import rasterio.warp
import rasterio.windows
import xarray as xr
from affine import Affine
from rasterio.enums import Resampling

from engine.batch.plan import parse_bbox, parse_crs
from engine.errors import DataUnavailable, InvalidInput
from engine.security.gdal_paths import open_raster


def open_for_screen(path: str | os.PathLike[str], bbox: str | Sequence[float] | None,
                    width: int, height: int, *, bbox_crs: str | None = None,
                    bands: Sequence[int] | None = None,
                    resampling: str = "nearest") -> xr.DataArray:
    """The part of a raster inside ``bbox`` at about screen resolution, as (band, y, x).

    Args:
        path: a GeoTIFF/COG (with overviews for speed).
        bbox: W,S,E,N in ``bbox_crs`` (default: the raster's CRS); None = whole raster.
        width, height: the viewport in screen pixels; the read is at most this size and
            never finer than the data.
        bands: 1-based band indexes (default all).

    Returns:
        float32 where the raster is float or has nodata (NaN = no data), else its dtype;
        coords x/y are pixel centres in the raster's CRS; attrs crs, transform, nodata,
        ``overview_factor`` (1 = full resolution).
    """
    if not (1 <= width <= 16384 and 1 <= height <= 16384):
        raise InvalidInput(f"viewport {width}x{height} is outside 1..16384")
    try:
        resample = Resampling[resampling]
    except KeyError:
        raise InvalidInput(f"unknown resampling {resampling!r}",
                           choices=[r.name for r in Resampling]) from None
    try:
        ds = open_raster(str(path), what="raster file")
    except rasterio.errors.RasterioIOError as exc:
        raise DataUnavailable(f"cannot open {path}: {exc}") from None
    with ds:
        indexes = list(bands) if bands else list(range(1, ds.count + 1))
        if bbox is None:
            window = rasterio.windows.Window(0, 0, ds.width, ds.height)
        else:
            box = parse_bbox(bbox)
            if bbox_crs is not None and parse_crs(bbox_crs, "bbox_crs") != ds.crs:
                box = rasterio.warp.transform_bounds(parse_crs(bbox_crs, "bbox_crs"), ds.crs,
                                                     *box, densify_pts=21)
            window = rasterio.windows.from_bounds(*box, transform=ds.transform)
            window = window.intersection(rasterio.windows.Window(0, 0, ds.width, ds.height))
            window = window.round_offsets(op="floor").round_lengths(op="ceil")
        if window.width < 1 or window.height < 1:
            raise DataUnavailable(f"the bbox does not overlap {path}")
        factor = max(1.0, window.width / width, window.height / height)
        out_w = max(1, min(int(window.width), math.ceil(window.width / factor)))
        out_h = max(1, min(int(window.height), math.ceil(window.height / factor)))
        masked = ds.nodata is not None or np.dtype(ds.dtypes[0]).kind == "f"
        data = ds.read(indexes, window=window, out_shape=(len(indexes), out_h, out_w),
                       resampling=resample, masked=masked)
        wt = ds.window_transform(window)
        sx, sy = window.width / out_w, window.height / out_h
        transform = wt @ Affine.scale(sx, sy)
        if masked:
            data = np.ma.filled(data.astype(np.float32), np.nan)
        x = transform.c + (np.arange(out_w) + 0.5) * transform.a
        y = transform.f + (np.arange(out_h) + 0.5) * transform.e
        attrs = {"crs": ds.crs.to_string() if ds.crs else None,
                 "transform": tuple(transform)[:6], "nodata": ds.nodata,
                 "overview_factor": float(factor)}
        names = [ds.descriptions[i - 1] or str(i) for i in indexes]
    return xr.DataArray(data, dims=("band", "y", "x"), coords={"band": names, "y": y, "x": x},
                        attrs=attrs, name=os.path.basename(os.fspath(path)))
