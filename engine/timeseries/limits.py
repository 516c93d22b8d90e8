"""How much a polygon profile may read, checked before any pixel is read (the service and
the Profile tab refuse the same polygons with the same message)."""

from __future__ import annotations

import math
import time
from typing import Any

import rasterio
import rasterio.warp
from rasterio.errors import RasterioError
from shapely.geometry import shape

from engine.chain.bands import resolve_asset
from engine.chain.expression import parse_expression
from engine.collection import Collection
from engine.errors import ChainError, InvalidInput
from engine.security.gdal_paths import open_raster
from engine.storage import read_error

#: Largest polygon bounding box per scene, in pixels of the expression's first band.
MAX_PROFILE_PIXELS = 1_000_000
#: Largest total read of a polygon profile: bounding box pixels x scenes.
MAX_PROFILE_READS = 100_000_000


def check_polygon_size(coll: Collection, geometry: dict[str, Any], expression: str, *,
                       max_pixels: int = MAX_PROFILE_PIXELS,
                       max_reads: int = MAX_PROFILE_READS) -> None:
    """Raise InvalidInput naming the size and the limit when the polygon's bounding box, on
    the grid of the expression's first band, is too many pixels per scene or over all the
    scenes of ``coll``. Bad geometries, expressions and empty queries are left to
    ``profile()``, which says what is wrong with them."""
    narrowed = coll.filter_geometry(geometry)  # InvalidQuery: invalid/empty geometry
    item = narrowed.first()
    if item is None:
        return  # profile() says no scene covers it
    try:
        key = resolve_asset(item, parse_expression(expression).band_names[0])
    except (ChainError, IndexError):
        return  # profile() says what is wrong with the expression
    asset = item.assets[key]
    href = asset.get_absolute_href() or asset.href
    started = time.monotonic()
    try:
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="TRUE"), open_raster(href) as ds:
            crs, (res_x, res_y) = ds.crs, ds.res
    except RasterioError as exc:
        raise read_error(href, exc, what="open", started=started) from None
    try:
        w, s, e, n = shape(rasterio.warp.transform_geom("EPSG:4326", crs, geometry)).bounds
    except (RasterioError, ValueError):
        w = s = e = n = math.nan
    if not all(math.isfinite(v) for v in (w, s, e, n)):
        raise InvalidInput(f"the polygon is too large: it cannot be projected to the "
                           f"scenes' grid ({crs}); draw a smaller polygon")
    cols = math.ceil((e - w) / res_x) + 1
    rows = math.ceil((n - s) / res_y) + 1
    pixels = cols * rows
    unit = "m" if crs.is_projected else "°"
    if pixels > max_pixels:
        raise InvalidInput(
            f"the polygon is too large: its bounding box spans {cols:,} x {rows:,} = "
            f"{pixels:,} pixels of {res_x:g} {unit} per scene, more than the limit of "
            f"{max_pixels:,} pixels: draw a smaller polygon (or profile a point)")
    scenes = narrowed.count()
    if pixels * scenes > max_reads:
        raise InvalidInput(
            f"the polygon profile is too large: {pixels:,} pixels x {scenes} scenes = "
            f"{pixels * scenes:,} pixels to read, more than the limit of {max_reads:,}: "
            f"narrow the dates, lower max_cloud or draw a smaller polygon")


__all__ = ["MAX_PROFILE_PIXELS", "MAX_PROFILE_READS", "check_polygon_size"]
