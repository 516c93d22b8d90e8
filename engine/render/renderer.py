"""Render chains: Web-Mercator tiles, point values, statistics and tilejson info.

For a tile, the scenes the chain's source finds (cached per source) are filtered to the
tile, each scene's bands are read for exactly the tile window through rio-tiler (overviews,
resampling, nodata, reprojection), cloud masks are applied per scene, scenes are mosaicked
with rio-tiler pixel-selection methods (or stacked by date), and the chain's steps run.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import morecantile
import numpy as np
import rasterio
import rasterio.env
import rasterio.features
import rasterio.warp
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rio_tiler import reader as rio_reader
from rio_tiler.errors import EmptyMosaicError, PointOutsideBounds, TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.models import ImageData
from rio_tiler.mosaic import mosaic_reader
from rio_tiler.mosaic.methods.base import MosaicMethodBase
from rio_tiler.mosaic.methods.defaults import FirstMethod, HighestMethod, MedianMethod
from shapely.geometry import shape

from engine.catalog.base import Catalog
from engine.chain.bands import band_transform, cloud_asset, raster_band, resolve_asset
from engine.chain.budget import check_read_cost
from engine.chain.expression import parse_expression
from engine.chain.model import Chain
from engine.chain.raster import Raster, TimeStack
from engine.chain.steps import RGBA_NAMES, Mask
from engine.errors import ChainError, DataUnavailable, InvalidInput
from engine.render.bandpool import map_bands
from engine.render.cap import tile_cap
from engine.render.encode import encode as _encode
from engine.render.fastwarp import Grid, SourceCoords, pick_overview, read_nearest
from engine.render.handles import HandleCache
from engine.render.paste import WindowCoords, footprint_windows, paste_first, sub_grid
from engine.render.previewcache import ArrayDataset, PreviewCache
from engine.render.previews import PREVIEW_FIELD
from engine.storage import configure_gdal, read_error

log = logging.getLogger(__name__)

WGS84 = CRS.from_epsg(4326)
PERCENTILES: tuple[int, ...] = (2, 5, 25, 50, 75, 95, 98)
#: Histogram bins of ``statistics`` by default, and the most a caller may ask for.
HISTOGRAM_BINS = 64
MAX_HISTOGRAM_BINS = 1024


class _EmptyRead(TileOutsideBounds):
    """A scene had no valid pixel in the window (skipped by the mosaic)."""


@dataclass(frozen=True)
class Scene:
    """One item reduced to what reading needs: band files, nodata, cloud band, sort keys."""

    id: str
    datetime: datetime | None
    cloud_cover: float | None
    bbox: tuple[float, float, float, float]
    hrefs: tuple[str, ...]
    nodata: tuple[float | None, ...]
    cloud_href: str | None = None
    cloud_name: str | None = None
    #: per band, ``(mul, add)`` from ``raster:bands`` scale/offset, or None (as stored)
    transforms: tuple[tuple[float, float] | None, ...] = ()
    #: per band, the local low-resolution preview (``eox:preview``), or None
    previews: tuple[str | None, ...] = ()
    cloud_preview: str | None = None

    @property
    def has_previews(self) -> bool:
        return bool(self.previews) and all(self.previews) and (
            self.cloud_href is None or self.cloud_preview is not None)


@dataclass
class SceneSet:
    """The scenes of a source, in mosaic order, with their WGS84 bboxes as an array."""

    scenes: list[Scene]
    band_names: tuple[str, ...]
    bboxes: np.ndarray = field(init=False)
    created: float = field(default_factory=time.monotonic)
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        self.bboxes = (np.array([s.bbox for s in self.scenes], dtype=float)
                       if self.scenes else np.zeros((0, 4)))
        h = hashlib.sha256(repr(self.band_names).encode())
        for s in self.scenes:  # what an ingest changes: ids, dates, files, in mosaic order
            h.update(repr((s.id, s.datetime, s.hrefs, s.nodata, s.cloud_href, s.transforms,
                           s.previews)).encode())
        self.fingerprint = h.hexdigest()[:16]

    def intersecting(self, bbox: Sequence[float]) -> list[Scene]:
        """Scenes whose bbox overlaps ``bbox`` (WGS84), in order."""
        if not self.scenes:
            return []
        b = self.bboxes
        hit = (b[:, 0] <= bbox[2]) & (b[:, 2] >= bbox[0]) & (b[:, 1] <= bbox[3]) & (
            b[:, 3] >= bbox[1])
        return [self.scenes[i] for i in np.flatnonzero(hit)]


class MaxIndexMethod(MosaicMethodBase):
    """Per pixel, keep the scene where an index expression (e.g. NDVI) is highest."""

    def __init__(self, expression: str, band_names: Sequence[str]) -> None:
        super().__init__()
        self.expression = parse_expression(expression)
        self.band_names = list(band_names)
        self.best: np.ndarray | None = None

    def feed(self, array: np.ma.MaskedArray) -> None:
        score = self.expression.evaluate(dict(zip(self.band_names, array, strict=True)))
        score = np.ma.filled(score, -np.inf)
        if self.mosaic is None:
            self.mosaic, self.best = array, score
            return
        take = score > self.best
        mask = np.where(take, np.ma.getmaskarray(array), np.ma.getmaskarray(self.mosaic))
        self.mosaic = np.ma.MaskedArray(np.where(take, array.data, self.mosaic.data), mask=mask)
        self.best = np.maximum(score, self.best)


def _to_utc_date(d: datetime | None) -> str:
    return d.date().isoformat() if d else "unknown"


def _dates(chain: Chain, scenes: Sequence[Scene]) -> int:
    """Layers a read stacks: the scenes' dates for a time stack, else one mosaic."""
    return len({_to_utc_date(s.datetime) for s in scenes}) if chain.source.times else 1


class TileRenderer:
    """Render chains against a catalog; thread-safe, one per process.

    Args:
        catalog: the catalog the chains' sources query.
        max_items: most scenes read for one tile / point / statistics request.
        max_preview_items: most scenes mosaicked in one tile when every scene there has
                a local preview (zoomed out: cheap local reads); the tile's metadata says
                how many scenes were left out (``scenes``).
        handle_cache: idle open datasets kept for reuse, shared by the threads (a dataset is
                lent to one thread at a time; 0 reopens files every time).
        preview_cache_mb: local previews kept decoded in memory (MiB).
        scene_cache: source query results kept (LRU), each for ``scene_ttl`` seconds.
        resampling: resampling within a CRS (overviews); reproject: across CRSs.
    """

    def __init__(self, catalog: Catalog, *, max_items: int = 50, max_preview_items: int = 500,
                 handle_cache: int = 256, preview_cache_mb: int = 256,
                 scene_cache: int = 256, scene_ttl: float = 300.0,
                 resampling: str = "nearest", reproject: str = "nearest",
                 png_level: int = 1, max_stat_size: int = 1024) -> None:
        self.catalog = catalog
        self.max_items = max_items
        self.max_preview_items = max_preview_items
        self.handles = HandleCache(size=handle_cache)
        self.previews = PreviewCache(preview_cache_mb * 2**20)
        self.scene_cache_size = scene_cache
        self.scene_ttl = scene_ttl
        self.resampling = resampling
        self.reproject = reproject
        self.png_level = png_level
        self.max_stat_size = max_stat_size
        self.tms = morecantile.tms.get("WebMercatorQuad")
        self._scenes: OrderedDict[str, SceneSet] = OrderedDict()
        self._lock = threading.Lock()
        configure_gdal()

    # -- scenes ---------------------------------------------------------------------------
    def invalidate(self) -> None:
        """Forget cached query results (call after the catalog changed)."""
        with self._lock:
            self._scenes.clear()

    def scenes(self, chain: Chain) -> SceneSet:
        """The scenes of the chain's source, band files resolved, in mosaic order (cached)."""
        read = self._read_names(chain)
        cloud = bool(chain.cloud_masks())
        # hashed: a source's JSON can be ~1 MB (an intersects polygon), the cache holds 256
        key = hashlib.sha256(f"{chain.source.model_dump_json()}|{','.join(read)}|{cloud}"
                             .encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._scenes.get(key)
            if hit is not None and now - hit.created < self.scene_ttl:
                self._scenes.move_to_end(key)
                return hit
        sset = self._build_scenes(chain, read, cloud)
        with self._lock:
            self._scenes[key] = sset
            while len(self._scenes) > self.scene_cache_size:
                self._scenes.popitem(last=False)
        return sset

    def fingerprint(self, chain: Chain) -> str:
        """A short hash of the scenes the chain reads (ids, dates, files) and of the read
        options: it changes when an ingest changes what a tile shows, so caches of
        rendered tiles key on it (valid as long as the scene cache: ``scene_ttl``)."""
        options = f"{self.max_items}|{self.max_preview_items}|{self.resampling}|{self.reproject}|{self.png_level}"
        return hashlib.sha256(f"{self.scenes(chain).fingerprint}|{options}".encode()
                              ).hexdigest()[:16]

    def _read_names(self, chain: Chain) -> tuple[str, ...]:
        names = list(chain.read_bands())
        if chain.source.mosaic_expression:
            for n in parse_expression(chain.source.mosaic_expression).band_names:
                if n not in names:
                    names.append(n)
        return tuple(names)

    def _build_scenes(self, chain: Chain, read: tuple[str, ...], cloud: bool) -> SceneSet:
        src = chain.source
        collection = self.catalog.collection(src.collection)  # UnknownCollection
        items = self.catalog.search(src.to_query())
        constellation = str((collection.summaries.to_dict() if collection.summaries else {})
                            .get("constellation", ""))
        scenes = []
        for item in items:
            hrefs, nodata, transforms, previews = [], [], [], []
            for name in read:
                key = resolve_asset(item, name)
                asset = item.assets[key]
                hrefs.append(asset.get_absolute_href() or asset.href)
                previews.append(asset.extra_fields.get(PREVIEW_FIELD))
                transforms.append(band_transform(item, key))
                nodata.append(raster_band(asset).get("nodata"))
            cloud_href = cloud_name = cloud_preview = None
            if cloud:
                ckey = cloud_asset(item)
                if ckey is None:
                    raise ChainError(f"mask(cloud=True): item {item.id!r} has no cloud-mask "
                                     "band (SCL or fmask)", choices=list(item.assets))
                cloud_href = item.assets[ckey].get_absolute_href() or item.assets[ckey].href
                cloud_preview = item.assets[ckey].extra_fields.get(PREVIEW_FIELD)
                is_landsat = ckey.lower() == "fmask" or "landsat" in (
                    str(item.properties.get("constellation", "")) + constellation).lower()
                cloud_name = "fmask" if is_landsat else "SCL"
            bbox = item.bbox or shape(item.geometry).bounds
            scenes.append(Scene(
                id=item.id, datetime=item.datetime, cloud_cover=item.properties.get(
                    "eo:cloud_cover"), bbox=tuple(bbox), hrefs=tuple(hrefs), nodata=tuple(nodata),
                cloud_href=cloud_href, cloud_name=cloud_name, transforms=tuple(transforms),
                previews=tuple(previews), cloud_preview=cloud_preview))
        if src.times:
            scenes.sort(key=lambda s: (s.datetime is None, s.datetime or datetime.min))
        elif src.mosaic == "latest":
            scenes.sort(key=lambda s: s.datetime.timestamp() if s.datetime else -math.inf,
                        reverse=True)
        elif src.mosaic == "least_cloudy":
            scenes.sort(key=lambda s: (s.cloud_cover is None, s.cloud_cover or 0.0))
        return SceneSet(scenes, read)

    # -- reading --------------------------------------------------------------------------
    def _read_scene(self, scene: Scene, chain: Chain, read: Callable, *, cloud: bool,
                    names: Sequence[str]) -> ImageData:
        """All bands of one scene for one window (``read(dataset, nodata, categorical)``)."""
        href = ""
        choose = getattr(read, "choose", None)
        previews = scene.previews or (None,) * len(scene.hrefs)
        hrefs = [choose(h, p) if choose is not None else h
                 for h, p in zip(scene.hrefs, previews, strict=True)]

        def band(job: tuple[str, float | None, str | None]) -> np.ma.MaskedArray:
            href, nodata, preview = job
            ds = self._borrow(href, preview)
            try:
                nd = nodata if ds.nodata is None and nodata is not None else None
                return read(ds, nd, False)
            except RasterioError as exc:
                raise read_error(href, exc, what=f"read scene {scene.id!r} from") from None
            finally:
                self._give_back(ds)

        arrays = map_bands(band, list(zip(hrefs, scene.nodata, previews, strict=True)), hrefs)
        try:
            bands = list(names)
            if cloud and scene.cloud_href:
                href = scene.cloud_href
                if choose is not None:
                    href = choose(href, scene.cloud_preview)
                ds = self._borrow(href, scene.cloud_preview)
                try:
                    arrays.append(read(ds, None, True).astype(arrays[0].dtype))
                finally:
                    self._give_back(ds)
                bands.append(scene.cloud_name)
        except RasterioError as exc:
            raise read_error(href, exc, what=f"read scene {scene.id!r} from") from None
        arrays = apply_transforms(arrays, scene.transforms)
        if len(arrays) == 1:
            arr = arrays[0]
        else:
            arr = np.ma.MaskedArray(np.concatenate([a.data for a in arrays]),
                                    mask=np.concatenate([np.ma.getmaskarray(a) for a in arrays]),
                                    copy=False)
        img = ImageData(arr, band_names=bands, assets=[scene.id])
        if cloud and scene.cloud_href:
            for step in chain.cloud_masks():
                img = Mask(cloud=True, classes=step.classes)(img)
        if np.ma.getmaskarray(img.array).all():
            raise _EmptyRead(f"scene {scene.id} has no data here")
        return img

    def _borrow(self, href: str, preview: str | None) -> Any:
        """The dataset to read ``href`` from: a preview from the in-memory preview cache
        (nearest-neighbour reads), else an open file from the handle pool."""
        if href == preview and self.resampling == self.reproject == "nearest":
            return self.previews.get(href)
        return self.handles.get(href)

    def _give_back(self, ds: Any) -> None:
        if not isinstance(ds, ArrayDataset):
            self.handles.release(ds)

    def _window_reader(self, grid: Grid, coords: SourceCoords | WindowCoords | None = None
                       ) -> Callable:
        """``read(ds, nodata, categorical) -> (1, h, w) masked array`` for ``grid``.

        Nearest-neighbour reads use :mod:`engine.render.fastwarp` (one window read and a
        numpy gather, overviews when zoomed out); other resamplings go through rio-tiler.
        """
        coords = SourceCoords(grid) if coords is None else coords

        def read(ds, nodata, categorical):
            opts = self._resampling(categorical)
            if opts["resampling_method"] != "nearest" or opts["reproject_method"] != "nearest":
                return rio_reader.part(
                    ds, grid.bounds, height=grid.height, width=grid.width, dst_crs=grid.crs,
                    bounds_crs=grid.crs, indexes=1, nodata=nodata, **opts).array
            level = pick_overview(ds, coords.ratio(ds))
            if level is not None:
                ods = self.handles.get(self.handles.href_of(ds), overview=level)
                try:
                    return read_nearest(ods, coords.plan(ods), nodata=nodata if nodata
                                        is not None else ds.nodata)
                finally:
                    self.handles.release(ods)
            return read_nearest(ds, coords.plan(ds), nodata=nodata)

        def choose(href: str, preview: str | None) -> str:
            """The scene's local preview when a grid pixel covers at least one preview
            pixel (zoomed out), else the band file itself."""
            if preview is None:
                return href
            try:
                pds = self.previews.get(preview)
            except DataUnavailable as exc:  # previews are a cache: the band file is truth
                log.warning("preview of %s unusable (%s): reading the band file", href, exc)
                return href
            return preview if coords.ratio(pds) >= 1.0 - 1e-6 else href

        read.choose = choose  # type: ignore[attr-defined]
        read.grid, read.coords = grid, coords  # type: ignore[attr-defined]
        return read

    def _resampling(self, categorical: bool) -> dict[str, str]:
        if categorical:  # class values (cloud masks) must never be interpolated
            return {"resampling_method": "nearest", "reproject_method": "nearest"}
        return {"resampling_method": self.resampling, "reproject_method": self.reproject}

    def _method(self, chain: Chain, names: Sequence[str]) -> MosaicMethodBase:
        src = chain.source
        if src.mosaic == "median":  # float: the median of 2 values may fall between them
            return MedianMethod(enforce_data_type=False)
        if src.mosaic == "max":
            if src.mosaic_expression:
                return MaxIndexMethod(src.mosaic_expression, names)
            return HighestMethod()
        return FirstMethod()

    def _assemble(self, chain: Chain, scenes: list[Scene], read: Callable, *,
                  names: Sequence[str]) -> Raster | None:
        """Mosaic (or stack by date) the scenes read with ``read``; None if no data."""
        cloud = bool(chain.cloud_masks())
        keep = list(chain.read_bands())

        def reader(scene: Scene) -> ImageData:
            return self._read_scene(scene, chain, read, cloud=cloud, names=names)

        def mosaic(group: list[Scene], method: MosaicMethodBase) -> ImageData | None:
            grid = getattr(read, "grid", None)
            if grid is not None and isinstance(method, FirstMethod) and (
                    self.resampling == self.reproject == "nearest"):
                # each scene read in the window it covers only (engine.render.paste)
                return paste_first(group, footprint_windows(grid, [s.bbox for s in group]),
                                   lambda s, win: self._read_scene(
                                       s, chain, self._window_reader(
                                           sub_grid(grid, win), WindowCoords(read.coords, win)),
                                       cloud=cloud, names=names),
                                   (grid.height, grid.width))
            try:
                img, _ = mosaic_reader(group, reader, pixel_selection=method, threads=1,
                                       allowed_exceptions=(TileOutsideBounds,))
            except EmptyMosaicError:
                return None
            return img

        if not chain.source.times:
            img = mosaic(scenes, self._method(chain, names))
            if img is None:
                return None
            if list(names) != keep:
                idx = [list(names).index(n) for n in keep]
                img = ImageData(img.array[idx], band_names=keep, assets=img.assets,
                                metadata=img.metadata)
            return img
        groups: OrderedDict[str, list[Scene]] = OrderedDict()
        for s in scenes:
            groups.setdefault(_to_utc_date(s.datetime), []).append(s)
        layers, dates = [], []
        shape_: tuple[int, ...] | None = None
        for group in groups.values():
            img = mosaic(group, FirstMethod())
            layers.append(img.array if img is not None else None)
            dates.append(group[0].datetime)
            if img is not None:
                shape_ = img.array.shape
        if shape_ is None:
            return None
        dtype = next(a.dtype for a in layers if a is not None)
        full = [a if a is not None else np.ma.masked_all(shape_, dtype=dtype)
                for a in layers]
        arr = np.ma.stack(full, axis=0)
        arr.mask = np.ma.getmaskarray(arr)
        idx = [list(names).index(n) for n in keep]
        if list(names) != keep:
            arr = arr[:, idx]
        return TimeStack(arr, tuple(dates), tuple(keep))

    # -- tiles ----------------------------------------------------------------------------
    def _check_tile(self, z: int, x: int, y: int, tilesize: int) -> None:
        if not (0 <= z <= self.tms.maxzoom):
            raise InvalidInput(f"zoom {z} is outside 0..{self.tms.maxzoom}")
        n = 2 ** z
        if not (0 <= x < n and 0 <= y < n):
            raise InvalidInput(f"tile {z}/{x}/{y} is outside the grid: x and y must be in "
                               f"0..{n - 1} at zoom {z}")
        if not (16 <= tilesize <= 1024):
            raise InvalidInput(f"tilesize {tilesize} is outside 16..1024")

    def tile(self, chain: Chain, z: int, x: int, y: int, *,
             tilesize: int = 256) -> ImageData | None:
        """The 8-bit image of one Web-Mercator tile, or None when no scene has data there."""
        self._check_tile(z, x, y, tilesize)
        t = morecantile.Tile(x, y, z)
        bounds = self.tms.xy_bounds(t)
        wgs = self.tms.bounds(t)
        sset = self.scenes(chain)
        found = sset.intersecting(wgs)
        cap = tile_cap(found, max_items=self.max_items, max_preview_items=self.max_preview_items)
        scenes = self._limit(chain, found, limit=cap.shown if cap.cut else len(found))
        if not scenes:
            return None
        check_read_cost(chain, dates=_dates(chain, scenes), pixels=tilesize * tilesize)
        crs = self.tms.rasterio_crs
        read = self._window_reader(Grid(crs, tuple(bounds), tilesize, tilesize))

        raster = self._assemble(chain, scenes, read, names=sset.band_names)
        img = self._image(chain, raster, bounds, crs)
        if img is not None and len(scenes) < len(found):
            img.metadata = {**(img.metadata or {}),
                            "scenes": {"total": len(found), "shown": len(scenes)}}
        return img

    def render_bbox(self, chain: Chain, bbox: Sequence[float], width: int, height: int, *,
                    crs: Any = "EPSG:3857", bbox_crs: Any = WGS84,
                    analytic: bool = False) -> ImageData | None:
        """The image of ``bbox`` (W, S, E, N in ``bbox_crs``, WGS84 by default) on a ``width``
        x ``height`` grid in ``crs``, for exports and timelapse frames; None when no scene
        has data there. ``analytic=True`` stops before the visual steps (values, any dtype)."""
        if not (1 <= width <= 16384 and 1 <= height <= 16384):
            raise InvalidInput(f"image size {width}x{height} is outside 1..16384")
        w, s, e, n = (float(v) for v in bbox)
        src = CRS.from_user_input(bbox_crs)
        if not (w < e and s < n) or (src == WGS84 and not (
                -180 <= w and e <= 180 and -90 <= s and n <= 90)):
            raise InvalidInput(f"bbox {list(bbox)} is not W,S,E,N with W<E, S<N")
        dst = CRS.from_user_input(crs)
        bounds = ((w, s, e, n) if src == dst else
                  tuple(rasterio.warp.transform_bounds(src, dst, w, s, e, n, densify_pts=21)))
        wgs = ((w, s, e, n) if src == WGS84 else
               tuple(rasterio.warp.transform_bounds(src, WGS84, w, s, e, n, densify_pts=21)))
        sset = self.scenes(chain)
        scenes = self._limit(chain, sset.intersecting(wgs))
        if not scenes:
            return None
        check_read_cost(chain, dates=_dates(chain, scenes), pixels=int(width) * int(height))
        read = self._window_reader(Grid(dst, bounds, int(width), int(height)))
        raster = self._assemble(chain, scenes, read, names=sset.band_names)
        if analytic:
            if raster is None:
                return None
            out = chain.apply(raster, analytic_only=True, skip_cloud=True)
            if isinstance(out, TimeStack):
                raise ChainError("the chain ends with a time stack: reduce it over time")
            return ImageData(out.array, bounds=bounds, crs=dst, band_names=list(out.band_names),
                             assets=raster_assets(raster), metadata=out.metadata)
        return self._image(chain, raster, bounds, dst)

    def _image(self, chain: Chain, raster: Raster | None, bounds: Sequence[float],
               crs: CRS) -> ImageData | None:
        """Run the chain's steps on an assembled raster and check it is an 8-bit image."""
        if raster is None:
            return None
        out = chain.apply(raster, skip_cloud=True)
        if isinstance(out, TimeStack):
            raise ChainError("the chain ends with a time stack: reduce it over time "
                             "(reduce('max'), execute(...)) to get an image")
        if out.array.dtype != np.uint8:
            raise ChainError(f"the chain outputs {out.array.dtype} values: add a scale(...) "
                             "step to map them to 0-255")
        if out.count not in (1, 3) and list(out.band_names) != RGBA_NAMES:
            raise ChainError(f"the chain outputs {out.count} bands; an image needs 1 or 3 "
                             "(select them with bands(...)/band(i)) or RGBA from a colormap")
        if np.ma.getmaskarray(out.array).all():
            return None
        return ImageData(out.array, bounds=tuple(bounds), crs=crs,
                         band_names=list(out.band_names), assets=raster_assets(raster),
                         metadata=out.metadata)

    def _limit(self, chain: Chain, scenes: list[Scene], *,
               limit: int | None = None) -> list[Scene]:
        """The first ``limit`` (default ``max_items``) scenes in mosaic order; a time
        stack with more scenes is refused (its dates cannot be silently dropped)."""
        limit = self.max_items if limit is None else limit
        if len(scenes) <= limit:
            return scenes
        if chain.source.times:
            raise ChainError(f"the time stack has {len(scenes)} scenes here, more than the "
                             f"limit of {limit}: narrow the dates or add filters")
        return scenes[:limit]

    def encode(self, img: ImageData, fmt: str) -> bytes:
        """Encode a tile to "png", "webp" or "jpg" (transparent where masked for png/webp)."""
        return _encode(img, fmt, png_level=self.png_level)

    # -- point ----------------------------------------------------------------------------
    def point(self, chain: Chain, lon: float, lat: float) -> dict:
        """Values of every output band at lon/lat (per date for time stacks).

        Visual steps (scale, colormap...) are left out: values are the analytic results.
        """
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise InvalidInput(f"point ({lon}, {lat}) is outside -180..180, -90..90")
        sset = self.scenes(chain)
        scenes = self._limit(chain, sset.intersecting((lon, lat, lon, lat)))
        result: dict[str, Any] = {"coordinates": [lon, lat]}

        def read(ds, nodata, categorical):
            try:
                pt = rio_reader.point(ds, (lon, lat), indexes=1, nodata=nodata)
            except PointOutsideBounds:
                raise _EmptyRead("outside") from None
            return pt.array.reshape(1, 1, 1)

        raster = self._assemble(chain, scenes, read, names=sset.band_names) if scenes else None
        if raster is None:
            names = self._output_names(chain, analytic_only=True)
            result.update(bands=names, values=[None] * len(names or []), items=[])
            return result
        out = chain.apply(raster, analytic_only=True, skip_cloud=True)
        result["bands"] = list(out.band_names)
        if isinstance(out, TimeStack):
            result["dates"] = [d.isoformat() if d else None for d in out.dates]
            result["values"] = [[_value(v) for v in out.array[t, :, 0, 0]]
                                for t in range(out.array.shape[0])]
        else:
            result["values"] = [_value(v) for v in out.array[:, 0, 0]]
        result["items"] = raster_assets(raster)
        return result

    # -- statistics -----------------------------------------------------------------------
    def statistics(self, chain: Chain, geometry: dict, *, bins: int = HISTOGRAM_BINS,
                   percentiles: Sequence[float] = PERCENTILES) -> dict:
        """Per band min/max/mean/std/count, percentiles and histogram inside ``geometry``.

        ``bins`` (1..MAX_HISTOGRAM_BINS) histogram bins between min and max; ``percentiles``
        any values in 0..100, reported under keys like "2" or "99.5".

        Read on the first scene's grid at native resolution (capped at ``max_stat_size``
        pixels a side); pixels whose centre is inside count. For time stacks:
        ``{date: {band: stats}}``.
        """
        if not 1 <= int(bins) <= MAX_HISTOGRAM_BINS:
            raise InvalidInput(f"bins must be 1..{MAX_HISTOGRAM_BINS}, got {bins}")
        pcts = tuple(float(p) for p in percentiles)
        if not pcts or not all(0 <= p <= 100 for p in pcts):
            raise InvalidInput(f"percentiles must be numbers in 0..100, got {list(percentiles)}")
        try:
            geom = shape(geometry)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"invalid GeoJSON geometry: {exc}") from None
        if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise InvalidInput("statistics need a Polygon or MultiPolygon geometry")
        sset = self.scenes(chain)
        scenes = self._limit(chain, sset.intersecting(geom.bounds))
        if not scenes:
            raise DataUnavailable("no scene of the chain's source covers the geometry")
        ds = self.handles.get(scenes[0].hrefs[0])
        try:
            crs, res = ds.crs, min(abs(ds.res[0]), abs(ds.res[1]))
        finally:
            self.handles.release(ds)
        gdict = rasterio.warp.transform_geom(WGS84, crs, geom.__geo_interface__)
        minx, miny, maxx, maxy = shape(gdict).bounds
        width = max(1, math.ceil((maxx - minx) / res - 1e-6))
        height = max(1, math.ceil((maxy - miny) / res - 1e-6))
        factor = max(width, height) / self.max_stat_size
        if factor > 1:
            width, height = max(1, round(width / factor)), max(1, round(height / factor))
        bounds = (minx, miny, maxx, maxy)
        check_read_cost(chain, dates=_dates(chain, scenes), pixels=width * height)
        read = self._window_reader(Grid(crs, bounds, width, height))

        raster = self._assemble(chain, scenes, read, names=sset.band_names)
        if raster is None:
            raise DataUnavailable("the chain's scenes have no valid pixel in the geometry")
        out = chain.apply(raster, analytic_only=True, skip_cloud=True)
        transform = rasterio.transform.from_bounds(*bounds, width, height)
        outside = rasterio.features.geometry_mask([gdict], out_shape=(height, width),
                                                  transform=transform, all_touched=False)
        if isinstance(out, TimeStack):
            return {(d.isoformat() if d else str(i)): _band_stats(
                        list(out.band_names), out.array[i], outside, bins=int(bins),
                        percentiles=pcts)
                    for i, d in enumerate(out.dates)}
        return _band_stats(list(out.band_names), out.array, outside, bins=int(bins),
                           percentiles=pcts)

    # -- info -----------------------------------------------------------------------------
    def info(self, chain: Chain) -> dict:
        """Bounds (WGS84), zoom range, output band names and a description, for tilejson."""
        sset = self.scenes(chain)
        if not sset.scenes:
            raise DataUnavailable(f"the chain's source finds no scene in collection "
                                  f"{chain.source.collection!r}")
        b = sset.bboxes
        bounds = [float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()),
                  float(b[:, 3].max())]
        ds = self.handles.get(sset.scenes[0].hrefs[0])
        try:
            r = Reader(None, dataset=ds, tms=self.tms)
            minzoom, maxzoom = r.minzoom, r.maxzoom
        finally:
            self.handles.release(ds)
        return {
            "bounds": bounds, "minzoom": int(minzoom), "maxzoom": int(maxzoom),
            "band_names": self._output_names(chain),
            "description": chain.describe(),
            "scenes": len(sset.scenes),
        }

    def _output_names(self, chain: Chain, *, analytic_only: bool = False) -> list[str] | None:
        names: list[str] | None = list(chain.read_bands())
        for step in chain.steps:
            if names is None or (analytic_only and step.kind == "visual"):
                break
            names = step.band_names_out(names)
        return names


def apply_transforms(arrays: list[np.ma.MaskedArray],
                     transforms: Sequence[tuple[float, float] | None]) -> list[np.ma.MaskedArray]:
    """``arrays`` (one per band, then any class band) with each band's ``(mul, add)``
    applied; all float32 when any band is transformed, so they stack. Masks are kept:
    nodata was recognised on the stored numbers."""
    if not any(transforms):
        return arrays
    out = []
    for i, a in enumerate(arrays):
        t = transforms[i] if i < len(transforms) else None
        data = np.ma.getdata(a).astype(np.float32)
        if t is not None:
            data = data * np.float32(t[0]) + np.float32(t[1])
        out.append(np.ma.MaskedArray(data, mask=np.ma.getmaskarray(a), copy=False))
    return out


def raster_assets(raster: Raster) -> list[str]:
    """Scene ids used for a raster (ImageData assets)."""
    assets = getattr(raster, "assets", None)
    return list(assets) if assets else []


def _value(v: Any) -> float | None:
    return None if v is np.ma.masked else float(v)


def percentile_key(p: float) -> str:
    """How a percentile is named in statistics: "2" for 2.0, "99.5" for 99.5."""
    return str(int(p)) if float(p).is_integer() else repr(float(p))


def _band_stats(names: list[str], array: np.ma.MaskedArray, outside: np.ndarray, *,
                bins: int = HISTOGRAM_BINS, percentiles: Sequence[float] = PERCENTILES) -> dict:
    out = {}
    for i, name in enumerate(names):
        band = np.ma.MaskedArray(array.data[i], mask=np.ma.getmaskarray(array)[i] | outside)
        vals = band.compressed().astype(np.float64)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            out[name] = {"min": None, "max": None, "mean": None, "std": None, "count": 0,
                         "percentiles": {percentile_key(p): None for p in percentiles},
                         "histogram": {"counts": [], "edges": []}}
            continue
        counts, edges = np.histogram(vals, bins=bins)
        pct = np.percentile(vals, percentiles)
        out[name] = {
            "min": float(vals.min()), "max": float(vals.max()), "mean": float(vals.mean()),
            "std": float(vals.std()), "count": int(vals.size),
            "percentiles": {percentile_key(p): float(v)
                            for p, v in zip(percentiles, pct, strict=True)},
            "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
        }
    return out
