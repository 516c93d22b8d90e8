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
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pystac
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
from engine.errors import ChainError, DataUnavailable, InvalidInput, NotFound
from engine.render.handles import HandleCache
from engine.storage import is_remote, read_error, signature
from engine.timeseries import geotiff
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
_fast: _FastPixels | None = None
_lock = threading.Lock()
_thread_state = threading.local()
log = logging.getLogger(__name__)


def _thread_env() -> None:
    """Keep one GDAL environment open for the life of a reader thread: rasterio otherwise
    sets one up and tears it down around every open (half the cost of a 1-pixel read)."""
    env = rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR")
    env.__enter__()
    _thread_state.env = env


def handle_pool() -> HandleCache:
    """The open datasets the profile readers of this process share."""
    return _shared()[1]


def _shared() -> tuple[ThreadPoolExecutor, HandleCache, _FastPixels]:
    """The process-wide reader pool, its shared open-file cache and GeoTIFF header cache
    (created once)."""
    global _pool, _handles, _fast
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="eox-profile",
                                       initializer=_thread_env)
            _handles = HandleCache(size=HANDLES)
            _fast = _FastPixels()
        assert _handles is not None and _fast is not None
        return _pool, _handles, _fast


@dataclass(frozen=True)
class _File:
    href: str
    nodata: float | None
    transform: tuple[float, float] | None = None  # raster:bands scale/offset (bands.py)


@dataclass(frozen=True)
class _Scene:
    """One acquisition: the band files the expression reads and its cloud-mask file."""

    id: str
    datetime: datetime | None
    cloud_cover: float | None
    bands: dict[str, _File]
    cloud: _File | None
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


def _file(item: pystac.Item, key: str) -> _File:
    asset = item.assets[key]
    return _File(asset.get_absolute_href() or asset.href, _nodata(asset),
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
        files: dict[str, _File] = {}
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


class _FastPixels:
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


def _pixel(handles: HandleCache, fast: _FastPixels, f: _File, lon: float, lat: float
           ) -> float | None:
    """The value of the pixel containing lon/lat (scale/offset applied); None when
    outside, nodata or NaN."""
    value = _stored_pixel(handles, fast, f, lon, lat)
    if value is None or f.transform is None:
        return value
    return value * f.transform[0] + f.transform[1]


def _stored_pixel(handles: HandleCache, fast: _FastPixels, f: _File, lon: float, lat: float
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


def _point_pixels(scene: _Scene, lon: float, lat: float, handles: HandleCache,
                  fast: _FastPixels) -> tuple[dict[str, Any], bool, bool]:
    """The scene's band values at the point, whether it is fill and whether it is cloudy."""
    values = {name: _pixel(handles, fast, f, lon, lat) for name, f in scene.bands.items()}
    cloud = False
    fill = any(v is None for v in values.values())
    if scene.cloud is not None:
        c = _pixel(handles, fast, scene.cloud, lon, lat)
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


def _read_like(handles: HandleCache, f: _File, ref_transform, window: Window, crs: CRS
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
    arrays = {n: _read_like(handles, f, transform, win, crs) for n, f in scene.bands.items()}
    valid = inside.copy()
    for a in arrays.values():
        valid &= ~np.ma.getmaskarray(a)
    cloudy = np.zeros_like(valid)
    if scene.cloud is not None:
        c = _read_like(handles, scene.cloud, transform, win, crs)
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
