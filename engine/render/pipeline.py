"""The public read pipeline: ``read(chain, scenes, grid) -> raster -> to_image -> image``.

Each scene's bands are read for exactly the grid (overviews, resampling, nodata,
reprojection), cloud masks are applied per scene, scenes are mosaicked with rio-tiler
pixel-selection methods (or stacked by date), and :func:`to_image` runs the chain's steps
and checks the result is an 8-bit image. Tiles, exports, batch blocks, timelapse frames
and statistics all go through these functions, so their pixels agree.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import rasterio.io
from rasterio.errors import RasterioError
from rio_tiler import reader as rio_reader
from rio_tiler.errors import EmptyMosaicError, PointOutsideBounds, TileOutsideBounds
from rio_tiler.models import ImageData
from rio_tiler.mosaic import mosaic_reader
from rio_tiler.mosaic.methods.base import MosaicMethodBase
from rio_tiler.mosaic.methods.defaults import FirstMethod, HighestMethod, MedianMethod

from engine.chain.expression import parse_expression
from engine.chain.model import Chain
from engine.chain.raster import Raster, TimeStack
from engine.chain.steps import RGBA_NAMES, Mask
from engine.errors import ChainError, DataUnavailable
from engine.render.bandpool import map_bands
from engine.render.fastwarp import SourceCoords, pick_overview, read_nearest
from engine.render.grid import Grid
from engine.render.handles import HandleCache
from engine.render.lowzoom import NOT_HANDLED, Atlas, paste_tiny
from engine.render.paste import WindowCoords, footprint_windows, paste_first
from engine.render.previewcache import ArrayDataset, PreviewCache
from engine.render.previews import tiny_path
from engine.render.scenes import Scene, read_names, scene_day
from engine.storage import read_error

log = logging.getLogger(__name__)


class EmptyRead(TileOutsideBounds):
    """A scene had no valid pixel in the window (skipped by the mosaic)."""


class BandReader(Protocol):
    """Reads band 1 of an open dataset for one request: ``(1, h, w)`` masked values."""

    #: nearest-neighbour reads only (previews may then come from the in-memory cache)
    nearest: bool

    def __call__(self, ds: rasterio.io.DatasetReader, nodata: float | None,
                 categorical: bool) -> np.ma.MaskedArray: ...

    def choose(self, href: str, preview: str | None) -> str:
        """The file to read for a band: ``href`` or its local low-resolution preview."""
        ...


class GridReader:
    """Reads bands onto ``grid``: nearest-neighbour through :mod:`engine.render.fastwarp`
    (one window read and a numpy gather, overviews when zoomed out), other resamplings
    through rio-tiler. ``resampling`` applies within a CRS, ``reproject`` across CRSs."""

    def __init__(self, grid: Grid, handles: HandleCache, *, previews: PreviewCache | None = None,
                 resampling: str = "nearest", reproject: str = "nearest",
                 coords: SourceCoords | WindowCoords | None = None,
                 atlas: Atlas | None = None) -> None:
        self.grid = grid
        self.handles = handles
        self.previews = previews
        self.atlas = atlas
        self.resampling = resampling
        self.reproject = reproject
        self.nearest = resampling == reproject == "nearest"
        self.coords = SourceCoords(grid) if coords is None else coords

    def window(self, window: tuple[int, int, int, int]) -> GridReader:
        """This reader for rows r0..r1, cols c0..c1 of its grid: the destination
        coordinates are sliced from the whole grid's, so its pixels are the whole read's."""
        r0, r1, c0, c1 = window
        return GridReader(self.grid.window(r0, r1, c0, c1), self.handles,
                          previews=self.previews, resampling=self.resampling,
                          reproject=self.reproject, coords=WindowCoords(self.coords, window))

    def __call__(self, ds: rasterio.io.DatasetReader, nodata: float | None,
                 categorical: bool) -> np.ma.MaskedArray:
        grid = self.grid
        if categorical:  # class values (cloud masks) must never be interpolated
            resampling = reproject = "nearest"
        else:
            resampling, reproject = self.resampling, self.reproject
        if resampling != "nearest" or reproject != "nearest":
            return rio_reader.part(
                ds, grid.bounds, height=grid.height, width=grid.width, dst_crs=grid.crs,
                bounds_crs=grid.crs, indexes=1, nodata=nodata, resampling_method=resampling,
                reproject_method=reproject).array
        level = pick_overview(ds, self.coords.ratio(ds))
        if level is not None:
            ods = self.handles.get(self.handles.href_of(ds), overview=level)
            try:
                return read_nearest(ods, self.coords.plan(ods), nodata=nodata if nodata
                                    is not None else ds.nodata)
            finally:
                self.handles.release(ods)
        return read_nearest(ds, self.coords.plan(ds), nodata=nodata)

    def choose(self, href: str, preview: str | None) -> str:
        """The scene's local preview when a grid pixel covers at least one preview pixel
        (zoomed out), its tiny level when a grid pixel covers one of those, else the band
        file itself."""
        if preview is None:
            return href
        if self.previews is not None and self.nearest:  # its tiny level first (z6: 1,500 scenes)
            tiny = str(tiny_path(preview))
            try:
                if self.coords.ratio(self.previews.get(tiny)) >= 1.0 - 1e-6:
                    return tiny
            except DataUnavailable:  # none (ingested before tiny levels): the preview
                pass
        try:
            pds = self.previews.get(preview) if self.previews is not None else \
                self.handles.get(preview)
        except DataUnavailable as exc:  # previews are a cache: the band file is truth
            log.warning("preview of %s unusable (%s): reading the band file", href, exc)
            return href
        try:
            coarse = self.coords.ratio(pds) >= 1.0 - 1e-6
        finally:
            give_back(pds, self.handles)
        return preview if coarse else href


class PointReader:
    """Reads the one pixel containing lon/lat (band files only, never previews)."""

    nearest = False

    def __init__(self, lon: float, lat: float) -> None:
        self.lon, self.lat = lon, lat

    def __call__(self, ds: rasterio.io.DatasetReader, nodata: float | None,
                 categorical: bool) -> np.ma.MaskedArray:
        try:
            pt = rio_reader.point(ds, (self.lon, self.lat), indexes=1, nodata=nodata)
        except PointOutsideBounds:
            raise EmptyRead("outside") from None
        return pt.array.reshape(1, 1, 1)

    def choose(self, href: str, preview: str | None) -> str:
        return href


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


def mosaic_method(chain: Chain, names: Sequence[str]) -> MosaicMethodBase:
    """The rio-tiler pixel-selection method of the chain's source mosaic."""
    src = chain.source
    if src.mosaic == "median":  # float: the median of 2 values may fall between them
        return MedianMethod(enforce_data_type=False)
    if src.mosaic == "max":
        if src.mosaic_expression:
            return MaxIndexMethod(src.mosaic_expression, names)
        return HighestMethod()
    return FirstMethod()


def borrow(href: str, preview: str | None, reader: BandReader, handles: HandleCache,
           previews: PreviewCache | None) -> Any:
    """The dataset to read ``href`` from: a preview from the in-memory preview cache
    (nearest-neighbour reads), else an open file lent by the handle pool."""
    if previews is not None and preview is not None and reader.nearest and (
            href == preview or href == str(tiny_path(preview))):
        return previews.get(href)
    return handles.get(href)


def give_back(ds: Any, handles: HandleCache) -> None:
    """Return what :func:`borrow` lent (cached previews need no return)."""
    if not isinstance(ds, ArrayDataset):
        handles.release(ds)


def read_scene(scene: Scene, chain: Chain, reader: BandReader, handles: HandleCache, *,
               names: Sequence[str], cloud: bool,
               previews: PreviewCache | None = None) -> ImageData:
    """All bands of one scene (read at the same time for remote files), then its cloud
    band, applied as a mask, read by ``reader``; EmptyRead when no pixel is valid."""
    previews_of = scene.previews or (None,) * len(scene.hrefs)
    hrefs = [reader.choose(h, p) for h, p in zip(scene.hrefs, previews_of, strict=True)]

    def band(job: tuple[str, float | None, str | None]) -> np.ma.MaskedArray:
        href, nodata, preview = job
        ds = borrow(href, preview, reader, handles, previews)
        try:
            nd = nodata if ds.nodata is None and nodata is not None else None
            return reader(ds, nd, False)
        except RasterioError as exc:
            raise read_error(href, exc, what=f"read scene {scene.id!r} from") from None
        finally:
            give_back(ds, handles)

    arrays = map_bands(band, list(zip(hrefs, scene.nodata, previews_of, strict=True)), hrefs)
    bands = list(names)
    if cloud and scene.cloud_href:
        href = reader.choose(scene.cloud_href, scene.cloud_preview)
        ds = borrow(href, scene.cloud_preview, reader, handles, previews)
        try:
            arrays.append(reader(ds, None, True).astype(arrays[0].dtype))
        except RasterioError as exc:
            raise read_error(href, exc, what=f"read scene {scene.id!r} from") from None
        finally:
            give_back(ds, handles)
        bands.append(scene.cloud_name)
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
        raise EmptyRead(f"scene {scene.id} has no data here")
    return img


def mosaic(chain: Chain, scenes: Sequence[Scene], reader: BandReader, handles: HandleCache,
           *, names: Sequence[str] | None = None,
           previews: PreviewCache | None = None) -> Raster | None:
    """Mosaic (or, for a time stack, stack by date) the scenes read with ``reader``; the
    chain's read bands in order; None when no scene has a valid pixel. ``names``: the
    bands the scenes carry (default :func:`read_names`)."""
    names = list(read_names(chain) if names is None else names)
    cloud = bool(chain.cloud_masks())
    keep = list(chain.read_bands())

    def one(scene: Scene, part: BandReader = reader) -> ImageData:
        return read_scene(scene, chain, part, handles, names=names, cloud=cloud,
                          previews=previews)

    def layer(group: list[Scene], method: MosaicMethodBase) -> ImageData | None:
        if isinstance(reader, GridReader) and isinstance(method, FirstMethod) and \
                reader.nearest:  # each scene read in the window it covers only (paste.py)
            grid = reader.grid
            if reader.atlas is not None and not cloud and isinstance(reader.coords,
                                                                   SourceCoords):
                img = paste_tiny(group, names, grid, reader.coords, reader.atlas)
                if img is not NOT_HANDLED:  # zoomed out over many scenes (lowzoom.py)
                    return img
            return paste_first(group, footprint_windows(grid, [s.bbox for s in group]),
                               lambda s, win: one(s, reader.window(win)), grid.shape)
        try:
            img, _ = mosaic_reader(group, one, pixel_selection=method, threads=1,
                                   allowed_exceptions=(TileOutsideBounds,))
        except EmptyMosaicError:
            return None
        return img

    if not chain.source.times:
        img = layer(list(scenes), mosaic_method(chain, names))
        if img is None:
            return None
        if names != keep:
            idx = [names.index(n) for n in keep]
            img = ImageData(img.array[idx], band_names=keep, assets=img.assets,
                            metadata=img.metadata)
        return img
    groups: OrderedDict[str, list[Scene]] = OrderedDict()
    for s in scenes:
        groups.setdefault(scene_day(s.datetime), []).append(s)
    layers, dates = [], []
    shape_: tuple[int, ...] | None = None
    for group in groups.values():
        img = layer(group, FirstMethod())
        layers.append(img.array if img is not None else None)
        dates.append(group[0].datetime)
        if img is not None:
            shape_ = img.array.shape
    if shape_ is None:
        return None
    dtype = next(a.dtype for a in layers if a is not None)
    full = [a if a is not None else np.ma.masked_all(shape_, dtype=dtype) for a in layers]
    arr = np.ma.stack(full, axis=0)
    arr.mask = np.ma.getmaskarray(arr)
    if names != keep:
        arr = arr[:, [names.index(n) for n in keep]]
    return TimeStack(arr, tuple(dates), tuple(keep))


def read(chain: Chain, scenes: Sequence[Scene], grid: Grid, *, handles: HandleCache,
         previews: PreviewCache | None = None, names: Sequence[str] | None = None,
         resampling: str = "nearest", reproject: str = "nearest",
         atlas: Atlas | None = None) -> Raster | None:
    """The chain's read bands of ``scenes`` on ``grid``, mosaicked (ImageData) or stacked
    by date (TimeStack), before any step; None when no scene has data there. ``previews``:
    local previews kept decoded in memory (None: opened like band files); ``atlas``: tiny
    levels of previews in one array (zoomed-out mosaics in one pass, :mod:`.lowzoom`)."""
    reader = GridReader(grid, handles, previews=previews, resampling=resampling,
                        reproject=reproject, atlas=atlas)
    return mosaic(chain, scenes, reader, handles, names=names, previews=previews)


def to_image(chain: Chain, raster: Raster | None, grid: Grid) -> ImageData | None:
    """Run the chain's steps on a read raster and check the result is an 8-bit image of
    1 or 3 bands (or RGBA); None when there is nothing to show."""
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
    return ImageData(out.array, bounds=tuple(grid.bounds), crs=grid.crs,
                     band_names=list(out.band_names), assets=raster_assets(raster),
                     metadata=out.metadata)


def to_values(chain: Chain, raster: Raster | None, grid: Grid) -> ImageData | None:
    """Run the chain's analytic steps (before scale/colormap...) on a read raster: values
    of any dtype on ``grid``; None when there is nothing; ChainError for a time stack."""
    if raster is None:
        return None
    out = chain.apply(raster, analytic_only=True, skip_cloud=True)
    if isinstance(out, TimeStack):
        raise ChainError("the chain ends with a time stack: reduce it over time")
    return ImageData(out.array, bounds=grid.bounds, crs=grid.crs,
                     band_names=list(out.band_names), assets=raster_assets(raster),
                     metadata=out.metadata)


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


def raster_assets(raster: Raster) -> list:
    """What a raster was read from, as its ImageData assets: the Scene records of a mosaic
    (rio-tiler's mosaic lists them), a scene id for one scene's read, none for a stack."""
    assets = raster.assets if isinstance(raster, ImageData) else None
    return list(assets) if assets else []


def scene_ids(raster: Raster) -> list[str]:
    """Ids of the scenes a raster was read from."""
    return [a.id if isinstance(a, Scene) else str(a) for a in raster_assets(raster)]
