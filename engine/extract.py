"""Extract what a chain computes inside a polygon, at the sources' native resolution.

``what="rendered"`` is the chain's own output (8-bit colours + alpha for a display chain,
values for an analytic one); ``what="bands"`` the original band values the chain reads,
mosaicked the same way. Pixels outside the polygon are nodata (alpha 0 for colours). The
grid is the first scene's CRS and pixel size unless ``crs``/``resolution`` are given.

Reading goes through :mod:`engine.batch` (the tile renderer's code, block by block), so an
extract equals the tiles at the same grid. The file is written under a temporary name in
the target folder and moved into place only when complete: never a half-written file.

>>> extract(chain, {"type": "Polygon", "coordinates": [...]}, "field.tif")
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.crs
import rasterio.features
import rasterio.shutil
import rasterio.warp
import shapely
from affine import Affine, dumpsw
from rasterio.enums import ColorInterp
from rasterio.windows import Window
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from engine.batch.compute import plan as batch_plan
from engine.batch.plan import BatchPlan
from engine.batch.write import iter_blocks
from engine.catalog.base import Catalog
from engine.chain.model import Chain
from engine.errors import InvalidInput
from engine.render.grid import WGS84
from engine.vector import area_geometry

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("cog", "png")
WHAT: tuple[str, ...] = ("rendered", "bands")
MEDIA_TYPES: dict[str, str] = {"cog": "image/tiff", "png": "image/png"}
SUFFIXES: dict[str, str] = {"cog": ".tif", "png": ".png"}
#: Default largest extract, in output pixels (e.g. 6000 x 6000 px).
MAX_PIXELS = 36_000_000
#: Block side used to compute an extract (pixels).
BLOCK = 512

Progress = Callable[[int, int], None]


class ExtractTooLarge(InvalidInput):
    """The extract's output grid has more pixels than the limit.

    ``size`` says how large it is (``"7000 x 6000 px = 42,000,000 pixels at resolution
    10"``), ``limit`` the largest number of pixels allowed; the message says both and what
    to do, and an interface may say it in its own words.
    """

    def __init__(self, size: str, limit: int) -> None:
        self.size, self.limit = size, int(limit)
        super().__init__(f"the extract is too large: {size}, more than the limit of "
                         f"{self.limit:,} pixels: use a smaller polygon or a coarser "
                         "resolution")


@dataclass(frozen=True)
class ExtractJob:
    """An extract ready to run: the batch plan, the polygon in the output CRS, the format."""

    plan: BatchPlan
    geometry: BaseGeometry  # WGS84
    native: dict  # GeoJSON geometry in the output CRS
    fmt: str
    what: str
    note: str | None = None

    @property
    def width(self) -> int:
        return self.plan.grid.width

    @property
    def height(self) -> int:
        return self.plan.grid.height

    @property
    def band_names(self) -> tuple[str, ...]:
        assert self.plan.output is not None
        return self.plan.output.band_names

    @property
    def dtype(self) -> str:
        assert self.plan.output is not None
        return self.plan.output.dtype

    @property
    def blocks(self) -> int:
        rows, cols = self.plan.nblocks
        return rows * cols

    @property
    def nbytes(self) -> int:
        """Uncompressed size of the output (an upper bound of the file size)."""
        return self.width * self.height * len(self.band_names) * np.dtype(self.dtype).itemsize

    def describe(self) -> str:
        """``1200 x 800 px, 4 bands (uint8), EPSG:32633 at 10 m``."""
        grid = self.plan.grid
        return (f"{self.width} x {self.height} px, {len(self.band_names)} band(s) "
                f"({self.dtype}), {grid.crs.to_string()} at {grid.resolution:g} "
                f"{_unit(grid.crs)}")


@dataclass(frozen=True)
class ExtractResult:
    """A finished extract: where, its grid and bands, and any note (a repaired polygon)."""

    path: Path
    fmt: str
    what: str
    width: int
    height: int
    crs: str
    transform: tuple[float, ...]
    band_names: tuple[str, ...]
    dtype: str
    nodata: float | None
    note: str | None = None


def _unit(crs: Any) -> str:
    try:
        return "°" if crs.is_geographic else (crs.linear_units or "units")
    except AttributeError:
        return "units"


def source_chain(chain: Chain) -> Chain:
    """The chain reading the original bands of ``chain`` (same scenes and mosaic, no steps,
    no cloud masking, no time axis): the pixel values of the sources."""
    src = chain.source
    bands = chain.read_bands()
    src = src.model_copy(update={"times": False, "bands": None, "mosaic_expression": None,
                                 "mosaic": "first" if src.mosaic == "max" else src.mosaic})
    return Chain.for_source(src).bands(*bands)


def prepare(chain: Chain, geometry: dict | BaseGeometry, *, fmt: str = "cog",
            what: str = "rendered", crs: Any = None, resolution: float | None = None,
            catalog: Catalog | None = None, max_pixels: int = MAX_PIXELS,
            max_items: int = 50) -> ExtractJob:
    """Check an extract and resolve its grid and bands, computing nothing yet.

    Args:
        chain: the chain whose output (``what="rendered"``) or sources (``"bands"``) to
            extract.
        geometry: GeoJSON Polygon/MultiPolygon (or Feature) in WGS84; a self-intersecting
            polygon is repaired (``make_valid``) and said in the job's ``note``.
        fmt: "cog" (Cloud-Optimized GeoTIFF with CRS and nodata) or "png" (8-bit colours).
        what: "rendered" or "bands".
        crs, resolution: output grid; default the first scene's CRS and native pixel size.
        catalog: where the chain's scenes are found (default: the process catalog).
        max_pixels: larger extracts raise ExtractTooLarge (an InvalidInput) saying the size
            and the limit, before anything is read.
        max_items: most scenes mosaicked.

    Raises:
        InvalidInput (geometry, format; ExtractTooLarge for the size), ChainError,
        DataUnavailable (no scene there).
    """
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown extract format {fmt!r}", choices=FORMATS)
    if what not in WHAT:
        raise InvalidInput(f"unknown extract content {what!r}", choices=WHAT)
    geom, note = area_geometry(geometry)
    target = source_chain(chain) if what == "bands" else chain
    try:
        p = batch_plan(target, bbox=geom.bounds, crs=crs, resolution=resolution,
                       chunks=BLOCK, catalog=catalog, max_pixels=max_pixels,
                       max_items=max_items)
    except InvalidInput as exc:
        # engine.batch.plan.check_size: "the area is W x H px = N pixels at ..., more than
        # the limit of ..." (a time stack's scene limit is a ChainError, said as it is)
        size, sep, _ = exc.message.partition(", more than the limit")
        if sep and size.startswith("the area is "):
            raise ExtractTooLarge(size.removeprefix("the area is "), max_pixels) from None
        raise
    assert p.output is not None
    if p.output.dates is not None:
        raise InvalidInput("the chain ends with a time stack: reduce it over time "
                           "(reduce(...)) before extracting, or extract what='bands'")
    if fmt == "png" and not p.output.display:
        raise InvalidInput(f"PNG holds 8-bit colours but the {what} output is "
                           f"{p.output.dtype} values: extract a COG, or extract a chain that "
                           "ends with scale(...)", choices=["cog"])
    # densify so straight lon/lat edges stay straight after reprojection
    w, s, e, n = geom.bounds
    dense = shapely.segmentize(geom, max(e - w, n - s) / 256 or 1e-6)
    native = rasterio.warp.transform_geom(WGS84, p.grid.crs, mapping(dense))
    return ExtractJob(plan=p, geometry=geom, native=native, fmt=fmt, what=what, note=note)


def _temp_name(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.{suffix}")


def _outside(job: ExtractJob, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """True for the block's pixels whose centre is outside the polygon."""
    transform = job.plan.grid.transform * Affine.translation(c0, r0)
    return rasterio.features.geometry_mask([job.native], out_shape=(r1 - r0, c1 - c0),
                                           transform=transform, all_touched=False)


def _masked(job: ExtractJob, block: np.ndarray, outside: np.ndarray) -> np.ndarray:
    out = job.plan.output
    assert out is not None
    if not outside.any():
        return block
    if out.display:  # colour planes + alpha: transparent (and black) outside
        return np.where(outside[None], np.uint8(0), block).astype(np.uint8)
    fill = np.dtype(out.dtype).type(out.nodata if out.nodata is not None else 0)
    return np.where(outside[None], fill, block).astype(block.dtype, copy=False)


def run(job: ExtractJob, path: str | os.PathLike[str], *, progress: Progress | None = None,
        threads: int | None = None, overwrite: bool = False) -> ExtractResult:
    """Compute ``job`` block by block and write it to ``path`` atomically.

    Args:
        progress: called as ``progress(done, total)`` (blocks) after each block.
        threads: local threads computing blocks (default: one per CPU).
        overwrite: replace an existing file at ``path``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InvalidInput(f"the output folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise InvalidInput(f"{path} exists: pass overwrite=True to replace it")
    p, out = job.plan, job.plan.output
    assert out is not None
    grid = p.grid
    total, done = job.blocks, 0
    raw, final = _temp_name(path, "raw"), _temp_name(path, "part")
    png = np.zeros((len(out.band_names), grid.height, grid.width), np.uint8) \
        if job.fmt == "png" else None
    try:
        if job.fmt == "cog":
            profile: dict[str, Any] = {
                "driver": "GTiff", "width": grid.width, "height": grid.height,
                "count": len(out.band_names), "dtype": out.dtype, "crs": grid.crs,
                "transform": grid.transform, "tiled": True, "blockxsize": BLOCK,
                "blockysize": BLOCK, "compress": "ZSTD", "zstd_level": 1,
                "bigtiff": "IF_SAFER"}
            if out.display:
                profile["photometric"] = "RGB" if len(out.band_names) == 4 else "MINISBLACK"
            elif out.nodata is not None:
                profile["nodata"] = out.nodata
            dst = rasterio.open(raw, "w", **profile)
        else:
            dst = None
        try:
            if dst is not None:
                dst.descriptions = tuple(out.band_names)
                if out.display:
                    dst.colorinterp = ([ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                                        ColorInterp.alpha] if len(out.band_names) == 4
                                       else [ColorInterp.gray, ColorInterp.alpha])
                dst.update_tags(chain=p.chain.to_json(), chain_id=p.chain.id, what=job.what)
            for i, j, block in iter_blocks(p, threads=threads):
                (r0, r1), (c0, c1) = p.block_rows[i], p.block_cols[j]
                block = _masked(job, block, _outside(job, r0, r1, c0, c1))
                if dst is not None:
                    dst.write(block, window=Window(c0, r0, c1 - c0, r1 - r0))
                else:
                    png[:, r0:r1, c0:c1] = block
                done += 1
                if progress is not None:
                    progress(done, total)
        finally:
            if dst is not None:
                dst.close()
        if job.fmt == "cog":
            options = {"COMPRESS": "DEFLATE", "BLOCKSIZE": BLOCK, "OVERVIEWS": "AUTO",
                       "BIGTIFF": "IF_SAFER",
                       "OVERVIEW_RESAMPLING": "NEAREST" if out.display else "AVERAGE"}
            if not out.display:
                options["PREDICTOR"] = "YES"
            rasterio.shutil.copy(raw, final, driver="COG", **options)
        else:
            _write_png(png, final)
        os.replace(final, path)
        if job.fmt == "png":  # a PNG holds no georeference: a world file and .prj beside it
            write_world_file(path, grid.transform, grid.crs)
    finally:
        raw.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
    log.info("extracted %s (%s)", path, job.describe())
    return ExtractResult(
        path=path, fmt=job.fmt, what=job.what, width=grid.width, height=grid.height,
        crs=grid.crs.to_string(), transform=tuple(grid.transform)[:6],
        band_names=tuple(out.band_names), dtype=out.dtype,
        nodata=None if out.display else out.nodata, note=job.note)


def write_world_file(path: Path, transform: Affine, crs: Any) -> Path:
    """Write ``path``'s world file (.pgw for a .png: pixel size, rotation and the centre of
    the top-left pixel, what GIS programs read beside an image) and its CRS as WKT (.prj);
    returns the world file's path."""
    suffix = path.suffix.lower()
    world = path.with_suffix(f".{suffix[1]}{suffix[-1]}w" if len(suffix) > 2 else ".wld")
    world.write_text(dumpsw(transform), encoding="ascii")
    path.with_suffix(".prj").write_text(rasterio.crs.CRS.from_user_input(crs).to_wkt(),
                                        encoding="ascii")
    return world


def _write_png(planes: np.ndarray, path: Path) -> None:
    """Colour planes + alpha (2 or 4 planes) as an 8-bit PNG."""
    from PIL import Image

    mode = {2: "LA", 4: "RGBA"}[planes.shape[0]]
    Image.fromarray(np.ascontiguousarray(np.moveaxis(planes, 0, -1)), mode=mode).save(
        path, format="PNG", compress_level=6)


def extract(chain: Chain, geometry: dict | BaseGeometry, path: str | os.PathLike[str], *,
            fmt: Literal["cog", "png"] | None = None, what: str = "rendered",
            crs: Any = None, resolution: float | None = None,
            catalog: Catalog | None = None, max_pixels: int = MAX_PIXELS,
            progress: Progress | None = None, overwrite: bool = False) -> ExtractResult:
    """Extract ``chain`` inside ``geometry`` to ``path`` at native resolution.

    Args:
        fmt: "cog" or "png"; by default from the suffix of ``path`` (.png -> png).
        Others: as for :func:`prepare` and :func:`run`.

    Returns:
        An :class:`ExtractResult` (grid, bands, and a note if the polygon was repaired).
    """
    if fmt is None:
        fmt = "png" if Path(path).suffix.lower() == ".png" else "cog"
    job = prepare(chain, geometry, fmt=fmt, what=what, crs=crs, resolution=resolution,
                  catalog=catalog, max_pixels=max_pixels)
    return run(job, path, progress=progress, overwrite=overwrite)


def human_bytes(n: float) -> str:
    """``12345678`` -> ``"11.8 MB"``."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


__all__ = ["FORMATS", "MAX_PIXELS", "MEDIA_TYPES", "WHAT", "ExtractJob", "ExtractResult",
           "ExtractTooLarge", "extract", "human_bytes", "prepare", "run", "source_chain"]
