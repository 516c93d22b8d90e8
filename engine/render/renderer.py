"""Render chains: Web-Mercator tiles, point values, statistics and tilejson info.

A :class:`TileRenderer` owns what is shared between requests (the cached scene lists and
the pool of open datasets) and runs the public pipeline of :mod:`engine.render`: select
scenes (:meth:`TileRenderer.select`), read them on a :class:`Grid`
(:func:`engine.render.pipeline.read`), then make an image
(:func:`engine.render.pipeline.to_image`).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import rasterio.features
import rasterio.transform
import rasterio.warp
from rio_tiler.io import Reader
from rio_tiler.models import ImageData
from shapely.geometry import shape

from engine.catalog.base import Catalog
from engine.chain.budget import check_read_cost
from engine.chain.model import Chain
from engine.chain.raster import Raster, TimeStack
from engine.errors import DataUnavailable, InvalidInput
from engine.render.cap import Cap, tile_cap
from engine.render.encode import encode as _encode
from engine.render.fastwarp import SourceCoords
from engine.render.grid import TMS, WGS84, Grid, to_wgs84
from engine.render.handles import HandleCache
from engine.render.lowzoom import NOT_HANDLED, Atlas, one_pass_fits, paste_tiny
from engine.render.pipeline import (
    PointReader,
    mosaic,
    read,
    scene_ids,
    to_image,
    to_values,
)
from engine.render.previewcache import PreviewCache
from engine.render.results import (
    HISTOGRAM_BINS,
    MAX_HISTOGRAM_BINS,
    PERCENTILES,
    ChainInfo,
    PointValues,
    Statistics,
    band_statistics,
    percentile_key,  # noqa: F401  (still imported from here by components/state.py)
    value_or_none,
)
from engine.render.scenes import (
    Scene,
    SceneSet,
    build_scenes,
    date_count,
    limit_scenes,
    read_names,
)
from engine.storage import configure_gdal

#: Part of every tile cache key: bump it when a release changes the pixels, headers or
#: notices of existing tiles, so disk caches kept across an upgrade are not served.
RENDER_VERSION = "2"


class TileRenderer:
    """Render chains against a catalog; thread-safe, one per process.

    Args:
        catalog: the catalog the chains' sources query (None: scenes are always given,
                as on batch workers).
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

    def __init__(self, catalog: Catalog | None, *, max_items: int = 50,
                 max_preview_items: int = 500, handle_cache: int = 256,
                 preview_cache_mb: int = 256, scene_cache: int = 256, scene_ttl: float = 300.0,
                 resampling: str = "nearest", reproject: str = "nearest",
                 png_level: int = 1, max_stat_size: int = 1024) -> None:
        self.catalog = catalog
        self.max_items = max_items
        self.max_preview_items = max_preview_items
        self.handles = HandleCache(size=handle_cache)
        self.previews = PreviewCache(preview_cache_mb * 2**20)
        self.atlas = Atlas(max(16, preview_cache_mb // 2) * 2**20)
        self.scene_cache_size = scene_cache
        self.scene_ttl = scene_ttl
        self.resampling = resampling
        self.reproject = reproject
        self.png_level = png_level
        self.max_stat_size = max_stat_size
        self.tms = TMS
        self._scenes: OrderedDict[str, SceneSet] = OrderedDict()
        self._building: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        configure_gdal()

    # -- select scenes --------------------------------------------------------------------
    def invalidate(self) -> None:
        """Forget cached query results (call after the catalog changed)."""
        with self._lock:
            self._scenes.clear()
        self.atlas.clear()

    def scenes(self, chain: Chain) -> SceneSet:
        """The scenes of the chain's source, band files resolved, in mosaic order (cached)."""
        read_bands = read_names(chain)
        cloud = bool(chain.cloud_masks())
        # hashed: a source's JSON can be ~1 MB (an intersects polygon), the cache holds 256
        key = hashlib.sha256(f"{chain.source.model_dump_json()}|{','.join(read_bands)}|{cloud}"
                             .encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._scenes.get(key)
            if hit is not None and now - hit.created < self.scene_ttl:
                self._scenes.move_to_end(key)
                return hit
        if self.catalog is None:
            raise DataUnavailable("this renderer has no catalog: pass the scenes to read")
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one query per source: the viewport's first tiles arrive together
            with self._lock:
                hit = self._scenes.get(key)
                if hit is not None and time.monotonic() - hit.created < self.scene_ttl:
                    return hit
            try:
                sset = build_scenes(self.catalog, chain, cloud=cloud)
                with self._lock:
                    self._scenes[key] = sset
                    while len(self._scenes) > self.scene_cache_size:
                        self._scenes.popitem(last=False)
            finally:  # after the result is cached: a later thread finds it
                with self._lock:
                    self._building.pop(key, None)
        return sset

    def fingerprint(self, chain: Chain) -> str:
        """A short hash of the scenes the chain reads (ids, dates, files) and of the read
        options: it changes when an ingest changes what a tile shows, so caches of
        rendered tiles key on it (valid as long as the scene cache: ``scene_ttl``)."""
        options = (f"{RENDER_VERSION}|{self.max_items}|{self.max_preview_items}|"
                   f"{self.resampling}|{self.reproject}|{self.png_level}")
        return hashlib.sha256(f"{self.scenes(chain).fingerprint}|{options}".encode()
                              ).hexdigest()[:16]

    def limit(self, chain: Chain, scenes: list[Scene], *,
              limit: int | None = None) -> list[Scene]:
        """The first ``limit`` (default ``max_items``) scenes in mosaic order; ChainError
        for a time stack with more (its dates cannot be silently dropped)."""
        return limit_scenes(chain, scenes, self.max_items if limit is None else limit)

    def cap(self, chain: Chain, found: Sequence[Scene], grid: Grid) -> Cap:
        """How many of the ``found`` scenes over a tile's ``grid`` it shows: all when the
        one-pass low-zoom mosaic takes them (:func:`lowzoom.one_pass_fits`), else the cap
        of scene-by-scene reads (:func:`tile_cap`)."""
        if len(found) > self.max_preview_items and self.atlas is not None and \
                self.resampling == self.reproject == "nearest" and \
                one_pass_fits(chain, found, grid):
            return Cap(len(found), len(found))
        return tile_cap(found, max_items=self.max_items, max_preview_items=self.max_preview_items)

    def select(self, chain: Chain, bbox: Sequence[float]) -> list[Scene]:
        """The scenes of the chain's source over ``bbox`` (WGS84), capped at ``max_items``."""
        return self.limit(chain, self.scenes(chain).intersecting(bbox))

    # -- read -----------------------------------------------------------------------------
    def read(self, chain: Chain, scenes: Sequence[Scene], grid: Grid, *,
             names: Sequence[str] | None = None) -> Raster | None:
        """:func:`engine.render.pipeline.read` with this renderer's dataset pool and
        resampling: the scenes mosaicked (or stacked by date) on ``grid``, or None."""
        return read(chain, scenes, grid, handles=self.handles, previews=self.previews,
                    names=names, resampling=self.resampling, reproject=self.reproject,
                    atlas=self.atlas)

    # -- tiles ----------------------------------------------------------------------------
    def tile(self, chain: Chain, z: int, x: int, y: int, *,
             tilesize: int = 256) -> ImageData | None:
        """The 8-bit image of one Web-Mercator tile, or None when no scene has data there."""
        grid = Grid.tile(z, x, y, tilesize=tilesize)
        found = self.scenes(chain).intersecting(self.tms.bounds(x, y, z))
        cap = self.cap(chain, found, grid)
        if not cap.cut and len(found) > self.max_preview_items and self.atlas is not None:
            check_read_cost(chain, dates=1, pixels=tilesize * tilesize)
            raster = paste_tiny(found, read_names(chain), grid, SourceCoords(grid), self.atlas)
            if raster is not NOT_HANDLED:  # every scene in one pass: no cap (lowzoom.py)
                return to_image(chain, raster, grid)
            cap = tile_cap(found, max_items=self.max_items,
                           max_preview_items=self.max_preview_items)
        scenes = self.limit(chain, found, limit=cap.shown if cap.cut else len(found))
        if not scenes:
            return None
        check_read_cost(chain, dates=date_count(chain, scenes), pixels=tilesize * tilesize)
        img = to_image(chain, self.read(chain, scenes, grid), grid)
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
        grid = Grid.from_bbox(bbox, width, height, crs=crs, bbox_crs=bbox_crs)
        wgs = to_wgs84(bbox, bbox_crs)
        scenes = self.select(chain, wgs)
        if not scenes:
            return None
        check_read_cost(chain, dates=date_count(chain, scenes), pixels=grid.width * grid.height)
        raster = self.read(chain, scenes, grid)
        if analytic:
            return to_values(chain, raster, grid)
        return to_image(chain, raster, grid)

    def encode(self, img: ImageData, fmt: str) -> bytes:
        """Encode a tile to "png", "webp" or "jpg" (transparent where masked for png/webp)."""
        return _encode(img, fmt, png_level=self.png_level)

    # -- point ----------------------------------------------------------------------------
    def point(self, chain: Chain, lon: float, lat: float) -> PointValues:
        """Values of every output band at lon/lat (per date for time stacks).

        Visual steps (scale, colormap...) are left out: values are the analytic results.
        """
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise InvalidInput(f"point ({lon}, {lat}) is outside -180..180, -90..90")
        scenes = self.select(chain, (lon, lat, lon, lat))
        raster = (mosaic(chain, scenes, PointReader(lon, lat), self.handles,
                         names=self.scenes(chain).band_names) if scenes else None)
        if raster is None:
            names = self.output_names(chain, analytic_only=True)
            return PointValues(coordinates=(lon, lat), bands=names,
                               values=[None] * len(names or []), items=[])
        out = chain.apply(raster, analytic_only=True, skip_cloud=True)
        if isinstance(out, TimeStack):
            return PointValues(
                coordinates=(lon, lat), bands=list(out.band_names),
                dates=[d.isoformat() if d else None for d in out.dates],
                values=[[value_or_none(v) for v in out.array[t, :, 0, 0]]
                        for t in range(out.array.shape[0])],
                items=scene_ids(raster))
        return PointValues(coordinates=(lon, lat), bands=list(out.band_names),
                           values=[value_or_none(v) for v in out.array[:, 0, 0]],
                           items=scene_ids(raster))

    # -- statistics -----------------------------------------------------------------------
    def statistics(self, chain: Chain, geometry: dict, *, bins: int = HISTOGRAM_BINS,
                   percentiles: Sequence[float] = PERCENTILES) -> Statistics:
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
        scenes = self.select(chain, geom.bounds)
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
        grid = Grid(crs, (minx, miny, maxx, maxy), width, height)
        check_read_cost(chain, dates=date_count(chain, scenes), pixels=width * height)
        raster = self.read(chain, scenes, grid)
        if raster is None:
            raise DataUnavailable("the chain's scenes have no valid pixel in the geometry")
        out = chain.apply(raster, analytic_only=True, skip_cloud=True)
        outside = rasterio.features.geometry_mask([gdict], out_shape=grid.shape,
                                                  transform=grid.transform, all_touched=False)
        names = list(out.band_names)
        if isinstance(out, TimeStack):
            return Statistics({(d.isoformat() if d else str(i)): band_statistics(
                names, out.array[i], outside, bins=int(bins), percentiles=pcts)
                for i, d in enumerate(out.dates)})
        return Statistics(band_statistics(names, out.array, outside, bins=int(bins),
                                          percentiles=pcts))

    # -- info -----------------------------------------------------------------------------
    def info(self, chain: Chain) -> ChainInfo:
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
        return ChainInfo(bounds=bounds, minzoom=int(minzoom), maxzoom=int(maxzoom),
                         band_names=self.output_names(chain), description=chain.describe(),
                         scenes=len(sset.scenes))

    def output_names(self, chain: Chain, *, analytic_only: bool = False) -> list[str] | None:
        """The chain's output band names as far as its steps tell (None: unknown)."""
        names: list[str] | None = list(chain.read_bands())
        for step in chain.steps:
            if names is None or (analytic_only and step.kind == "visual"):
                break
            names = step.band_names_out(names)
        return names
