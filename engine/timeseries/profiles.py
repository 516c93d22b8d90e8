"""Index profiles: one value per scene of a collection, at a point or over a polygon.

A point profile reads exactly one pixel from each band file, in a thread pool, so 100 dates
take a fraction of a second; it never renders tiles. GeoTIFFs are read by
:mod:`engine.timeseries.geotiff` (header parsed in Python, only the start of the pixel's
block inflated: ~0.1 ms instead of ~2 ms through GDAL) once the first file of their kind
gave GDAL's answer; other files go through rasterio (1x1 window on cached open handles).
Cloud flags come from the scene's own mask band (Sentinel-2 SCL 3/8/9/10, Landsat Fmask
2/3/4, as ``mask(cloud=True)``); fill pixels (nodata) give no value.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pystac
import rasterio
import rasterio.features
import rasterio.warp
import rasterio.windows
from rasterio.windows import Window
from shapely.geometry import shape

from engine.chain.bands import (
    band_transform,
    check_bands,
    cloud_asset,
    collection_band_names,
    raster_band,
    resolve_asset,
)
from engine.chain.expression import ParsedExpression, parse_expression
from engine.chain.steps import FMASK_CLOUD_CLASSES, SCL_CLOUD_CLASSES
from engine.errors import ChainError, InvalidInput, NotFound
from engine.render.handles import HandleCache
from engine.timeseries.pixels import BandFile, FastPixels, read_like, read_pixel
from engine.timeutil import format_datetime, normalize_geometry, normalize_point

if TYPE_CHECKING:
    from engine.collection import Collection

#: NDVI by common names: resolves on Sentinel-2 (B08/B04) and on Landsat (nir/red) alike.
DEFAULT_EXPRESSION = "(nir-red)/(nir+red)"
#: Columns of a point profile, in order.
PROFILE_COLUMNS: tuple[str, ...] = ("date", "value", "cloud", "scene_cloud", "id")
#: Columns of a polygon profile: plus the clear pixels averaged and the cloudy fraction.
PROFILE_POLYGON_COLUMNS: tuple[str, ...] = (*PROFILE_COLUMNS, "count", "cloud_fraction")
#: Cloud-mask band (lower-case asset key) -> classes flagged cloudy/shadow/snow.
CLOUD_CLASSES: dict[str, tuple[int, ...]] = {"scl": SCL_CLOUD_CLASSES,
                                             "fmask": FMASK_CLOUD_CLASSES}
#: Most scenes one profile reads (a bound on work per request).
MAX_SCENES = 2000
#: Threads reading pixels (GDAL releases the GIL while it reads). Remote files wait on
#: storage latency (two ~20 ms requests per file), not on the CPU: 4 threads made a
#: 100-date profile over HTTP take 4.3 s (bench/remote.py).
THREADS = 16
#: Idle open datasets the profile readers keep (any thread reuses a file another opened,
#: so a second profile over the same scenes opens nothing).
HANDLES = 1024

_pool: ThreadPoolExecutor | None = None
_handles: HandleCache | None = None
_fast: FastPixels | None = None
_lock = threading.Lock()
_thread_state = threading.local()
log = logging.getLogger(__name__)


def _thread_env() -> None:
    """Keep one GDAL environment open for the life of a reader thread: rasterio otherwise
    sets one up and tears it down around every open (half the cost of a 1-pixel read)."""
    env = rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="TRUE")
    env.__enter__()
    _thread_state.env = env


def handle_pool() -> HandleCache:
    """The open datasets the profile readers of this process share."""
    return _shared()[1]


def _shared() -> tuple[ThreadPoolExecutor, HandleCache, FastPixels]:
    """The process-wide reader pool, its shared open-file cache and GeoTIFF header cache
    (created once)."""
    global _pool, _handles, _fast
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="eox-profile",
                                       initializer=_thread_env)
            _handles = HandleCache(size=HANDLES)
            _fast = FastPixels()
        assert _handles is not None and _fast is not None
        return _pool, _handles, _fast


@dataclass(frozen=True)
class _Scene:
    """One acquisition: the band files the expression reads and its cloud-mask file."""

    id: str
    datetime: datetime | None
    cloud_cover: float | None
    bands: dict[str, BandFile]
    cloud: BandFile | None
    classes: tuple[int, ...]


def profile(collection: Collection, lon: float | None = None, lat: float | None = None,
            expression: str = DEFAULT_EXPRESSION, *, geometry: Any = None,
            mask_clouds: bool = True, max_scenes: int = MAX_SCENES) -> pd.DataFrame:
    """The values of ``expression`` per scene of ``collection`` at a point or over a polygon.

    Args:
        collection: an engine Collection (its dates/filters apply; its spatial filter is
            replaced by the point or polygon).
        lon, lat: the WGS84 point (or give ``geometry``).
        expression: band math over band names or common names (one output).
        geometry: a WGS84 Polygon/MultiPolygon (GeoJSON, shapely...): the value is the mean
            over its clear pixels (pixel centres inside).
        mask_clouds: True: cloudy pixels give no value (they are still flagged ``cloud``).
        max_scenes: refuse queries finding more scenes than this.

    Returns:
        One row per scene, by date: ``date`` (UTC), ``value`` (NaN: fill, outside or masked
        cloud), ``cloud`` (the pixel is flagged by the mask band; for a polygon: no clear
        pixel), ``scene_cloud`` (eo:cloud_cover %), ``id``; a polygon adds ``count`` (clear
        pixels averaged) and ``cloud_fraction``. ``df.attrs`` holds the request.

    Raises:
        ChainError: malformed expression, or a band the collection lacks (lists its bands),
            or ``mask_clouds`` on scenes without a cloud-mask band.
        NotFound: no scene covers the point/polygon in the query's dates.
    """
    parsed = _expression(expression)
    catalog = collection.catalog
    known = collection_band_names(catalog.collection(collection.name))
    if known:
        check_bands(parsed.band_names, known, collection=collection.name)
    polygon = None
    if geometry is not None:
        if lon is not None or lat is not None:
            raise InvalidInput("give either lon/lat or geometry=, not both")
        polygon = shape(normalize_geometry(geometry))
        if polygon.geom_type == "Point":
            lon, lat, polygon = polygon.x, polygon.y, None
        elif polygon.geom_type not in ("Polygon", "MultiPolygon") or polygon.is_empty:
            raise InvalidInput(f"a profile geometry must be a Polygon or MultiPolygon, "
                               f"got {polygon.geom_type}")
    if polygon is None:
        if lon is None or lat is None:
            raise InvalidInput("give a point (lon, lat) or a polygon (geometry=...)")
        lon, lat = normalize_point(lon, lat)
        where = f"the point ({lon:g}, {lat:g})"
        narrowed = collection.filter_point(lon, lat)
    else:
        where = "the polygon"
        narrowed = collection.filter_geometry(polygon.__geo_interface__)
    items = narrowed.items()
    if not items:
        raise NotFound(_nothing_here(collection, where))
    if len(items) > max_scenes:
        raise InvalidInput(f"the profile would read {len(items)} scenes, more than the limit "
                           f"of {max_scenes}: narrow the dates (filter_date) or add filters")
    scenes = _scenes(items, parsed.band_names, mask_clouds=mask_clouds)
    pool, handles, fast = _shared()
    if polygon is None:
        pixels = list(pool.map(lambda s: _point_pixels(s, lon, lat, handles, fast), scenes))
        rows = _point_rows(scenes, pixels, parsed, mask_clouds)
        columns = PROFILE_COLUMNS
    else:
        geojson = polygon.__geo_interface__
        rows = list(pool.map(lambda s: _polygon_row(s, parsed, geojson, mask_clouds, handles),
                             scenes))
        columns = PROFILE_POLYGON_COLUMNS
        if all(r[5] is None for r in rows):  # no scene had a pixel centre inside
            raise InvalidInput("the polygon contains no pixel centre of any scene: draw a "
                               "larger polygon or ask for a point profile")
        rows = [(*r[:5], r[5] or 0, r[6]) for r in rows]
    df = pd.DataFrame(rows, columns=list(columns))
    df["date"] = pd.to_datetime(df["date"], utc=True)
    df["value"] = df["value"].astype(float)
    df["cloud"] = df["cloud"].astype(bool)
    df["scene_cloud"] = df["scene_cloud"].astype(float)
    if polygon is not None:
        df["count"] = df["count"].astype(int)
        df["cloud_fraction"] = df["cloud_fraction"].astype(float)
    df = df.sort_values(["date", "id"], kind="stable", ignore_index=True)
    df.attrs.update(collection=collection.name, expression=parsed.text, lon=lon, lat=lat,
                    geometry=None if polygon is None else polygon.__geo_interface__,
                    mask_clouds=bool(mask_clouds))
    return df


def clear_count(df: pd.DataFrame) -> int:
    """Rows with a value on a clear (not cloud-flagged) pixel."""
    return int((df["value"].notna() & ~df["cloud"]).sum())


def _expression(text: str) -> ParsedExpression:
    if not isinstance(text, str):
        raise ChainError(f"expression must be a string, got {type(text).__name__}")
    if ";" in text:
        raise ChainError(f"a profile takes one expression (one value per date), got {text!r}")
    parsed = parse_expression(text)
    if not parsed.band_names:
        raise ChainError(f"expression {text!r} reads no band")
    return parsed


def _nothing_here(collection: Collection, where: str) -> str:
    q = collection.query
    when = ""
    if q.start is not None or q.end is not None:
        lo = format_datetime(q.start) if q.start else "..."
        hi = format_datetime(q.end) if q.end else "..."
        when = f" between {lo} and {hi}"
    extent = ""
    coll = collection.catalog.collection(collection.name)
    boxes = coll.extent.spatial.bboxes if coll.extent and coll.extent.spatial else []
    if boxes and list(boxes[0]) != [-180.0, -90.0, 180.0, 90.0]:
        extent = " (its extent is " + ", ".join(f"{v:.4f}" for v in boxes[0]) + ")"
    hint = "; also relax the other filters (cloud cover...)" if q.filters or q.ids else ""
    return (f"no scene of collection {collection.name!r} covers {where}{when}: pick a place "
            f"inside the collection's extent{extent} or widen the dates{hint}")


def _nodata(asset: pystac.Asset) -> float | None:
    value = raster_band(asset).get("nodata")
    return float(value) if isinstance(value, int | float) else None


def _file(item: pystac.Item, key: str) -> BandFile:
    asset = item.assets[key]
    return BandFile(asset.get_absolute_href() or asset.href, _nodata(asset),
                 band_transform(item, key))


def _scenes(items: list[pystac.Item], bands: Sequence[str], *,
            mask_clouds: bool) -> list[_Scene]:
    """Group items into acquisitions (same instant and grid: a split 10 m/20 m ingest gives
    two items per date) and resolve every band and the cloud mask within the group."""
    groups: dict[tuple, list[pystac.Item]] = {}
    for item in items:
        p = item.properties
        key = (item.datetime, p.get("grid:code") or p.get("proj:code") or item.id)
        groups.setdefault(key, []).append(item)
    scenes = []
    for group in groups.values():
        files: dict[str, BandFile] = {}
        owners: list[pystac.Item] = []
        for name in bands:
            for item in group:
                try:
                    files[name] = _file(item, resolve_asset(item, name))
                    owners.append(item)
                    break
                except ChainError:
                    continue
            else:
                resolve_asset(group[0], name)  # raises ChainError listing the item's bands
        cloud, classes = None, ()
        for item in group:
            ckey = cloud_asset(item)
            if ckey is not None:
                cloud = _file(item, ckey)
                classes = _classes(item, ckey)
                break
        if cloud is None and mask_clouds:
            raise ChainError(f"scene {group[0].id!r} has no cloud-mask band (SCL or fmask) to "
                             "mask clouds with: ask with mask_clouds=False",
                             choices=list(group[0].assets))
        covers = [i.properties.get("eo:cloud_cover") for i in group]
        covers = [c for c in covers if isinstance(c, int | float)]
        main = owners[0]  # the item holding the first band names the scene
        scenes.append(_Scene(id=main.id, datetime=main.datetime,
                             cloud_cover=float(covers[0]) if covers else None,
                             bands=files, cloud=cloud, classes=classes))
    return scenes


def _classes(item: pystac.Item, key: str) -> tuple[int, ...]:
    low = key.lower()
    if low in CLOUD_CLASSES:
        return CLOUD_CLASSES[low]
    landsat = "landsat" in str(item.properties.get("constellation", "")).lower()
    return FMASK_CLOUD_CLASSES if landsat else SCL_CLOUD_CLASSES


def _point_pixels(scene: _Scene, lon: float, lat: float, handles: HandleCache,
                  fast: FastPixels) -> tuple[dict[str, Any], bool, bool]:
    """The scene's band values at the point, whether it is fill and whether it is cloudy."""
    values = {name: read_pixel(handles, fast, f, lon, lat) for name, f in scene.bands.items()}
    cloud = False
    fill = any(v is None for v in values.values())
    if scene.cloud is not None:
        c = read_pixel(handles, fast, scene.cloud, lon, lat)
        fill = fill or c is None
        cloud = c is not None and int(c) in scene.classes
    return values, fill, cloud


def _point_rows(scenes: list[_Scene], pixels: list[tuple[dict[str, Any], bool, bool]],
                expr: ParsedExpression, mask_clouds: bool) -> list[tuple]:
    """Profile rows: the expression is evaluated once over the scenes with a value (it is
    element-wise, so this equals one evaluation per scene, ~50 times faster)."""
    values = [math.nan] * len(scenes)
    use = [i for i, (_, fill, cloud) in enumerate(pixels)
           if not fill and not (cloud and mask_clouds)]
    if use:
        out = expr.evaluate({n: np.ma.array([pixels[i][0][n] for i in use], dtype=np.float64)
                             for n in scenes[use[0]].bands})
        if np.ma.asarray(out).shape == (len(use),):
            mask = np.ma.getmaskarray(out)
            for k, i in enumerate(use):
                values[i] = math.nan if mask[k] else float(out.data[k])
        else:  # not element-wise after all: one scene at a time
            for i in use:
                one = expr.evaluate({n: np.ma.array([v], dtype=np.float64)
                                     for n, v in pixels[i][0].items()})
                values[i] = math.nan if one[0] is np.ma.masked else float(one[0])
    return [(s.datetime, values[i], pixels[i][2], s.cloud_cover, s.id)
            for i, s in enumerate(scenes)]


def _polygon_row(scene: _Scene, expr: ParsedExpression, geometry: dict, mask_clouds: bool,
                 handles: HandleCache) -> tuple:
    ref = scene.bands[expr.band_names[0]]
    with handles.lend(ref.href) as ds:
        crs, transform, size = ds.crs, ds.transform, (ds.height, ds.width)
    geom = rasterio.warp.transform_geom("EPSG:4326", crs, geometry)
    full = Window(0, 0, size[1], size[0])
    try:
        win = rasterio.windows.from_bounds(*shape(geom).bounds, transform=transform)
        c0, r0 = math.floor(win.col_off), math.floor(win.row_off)
        c1 = math.ceil(win.col_off + win.width)
        r1 = math.ceil(win.row_off + win.height)
        win = Window(c0, r0, c1 - c0, r1 - r0).intersection(full)
        if win.width < 1 or win.height < 1:
            raise rasterio.errors.WindowError("empty window")
    except rasterio.errors.WindowError:  # the polygon misses the raster
        return (scene.datetime, math.nan, False, scene.cloud_cover, scene.id, None, math.nan)
    wtransform = rasterio.windows.transform(win, transform)
    inside = ~rasterio.features.geometry_mask(
        [geom], out_shape=(int(win.height), int(win.width)), transform=wtransform)
    n_inside = int(inside.sum())
    if n_inside == 0:
        return (scene.datetime, math.nan, False, scene.cloud_cover, scene.id, None, math.nan)
    arrays = {n: read_like(handles, f, transform, win, crs) for n, f in scene.bands.items()}
    valid = inside.copy()
    for a in arrays.values():
        valid &= ~np.ma.getmaskarray(a)
    cloudy = np.zeros_like(valid)
    if scene.cloud is not None:
        c = read_like(handles, scene.cloud, transform, win, crs)
        valid &= ~np.ma.getmaskarray(c)
        cloudy = valid & np.isin(np.asarray(c.data), scene.classes)
    use = valid & ~cloudy if mask_clouds else valid
    out = expr.evaluate(arrays)
    vals = np.asarray(out.data, dtype=np.float64)[use & ~np.ma.getmaskarray(out)]
    n_valid, n_cloudy = int(valid.sum()), int(cloudy.sum())
    value = float(vals.mean()) if vals.size else math.nan
    cloud_all = n_valid > 0 and n_cloudy == n_valid
    fraction = n_cloudy / n_valid if n_valid else math.nan
    return (scene.datetime, value, cloud_all, scene.cloud_cover, scene.id, int(vals.size),
            fraction)
