"""Per-band low-resolution previews kept locally, so low zooms never touch remote storage.

At ingest, every remote band file of an item gets a small local GeoTIFF (longest side at
most ``size`` px, pixel averages; class bands such as SCL/Fmask by nearest neighbour),
written once from the file's overviews (a few ranged GETs). Its path is stored in the
asset as ``eox:preview``; a raw copy beside it (``.raw``, see
:mod:`engine.render.previewcache`) loads without GDAL. The renderer reads the preview instead of the band file
whenever a tile's pixel is at least as large as the preview's pixel (zoomed out), so a
mosaic of thousands of scenes at z6-z10 reads only local files.

Each preview also gets a tiny level (longest side at most ``TINY_SIZE`` px, averaged from
the preview like the preview from the file, same georeferencing convention), kept only as
a raw copy (``.tiny.raw``): a z6 tile uses a few pixels of each scene, and reading 1,500
tiny levels costs a fraction of 1,500 previews (2 KB each instead of 128 KB). Catalogs
ingested before it get it on re-ingest (from the existing preview, no remote read); until
then the renderer reads the preview.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pystac
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError

from engine.chain.bands import raster_band
from engine.errors import DataUnavailable, InvalidInput
from engine.render.previewcache import sidecar_path, write_raw
from engine.storage import configure_gdal, gdal_path, host_of, is_remote, read_error

log = logging.getLogger(__name__)

#: Asset field holding the local path of the band's preview.
PREVIEW_FIELD = "eox:preview"
#: Longest side of a preview, pixels.
PREVIEW_SIZE = 256
#: Longest side of the tiny level of a preview, pixels.
TINY_SIZE = 32
#: Asset keys whose values are classes (never averaged).
CLASS_KEYS = frozenset({"scl", "fmask", "qa_pixel", "cloud", "mask"})


def preview_path(preview_dir: Path, href: str) -> Path:
    """Where the preview of band file ``href`` lives (one file per href)."""
    digest = hashlib.sha256(href.encode()).hexdigest()
    return preview_dir / digest[:2] / f"{digest[2:26]}.tif"


def tiny_path(preview: str | Path) -> Path:
    """The tiny level of a preview: a raw copy only (see :func:`write_tiny`)."""
    return Path(preview).with_suffix(".tiny.raw")


def write_tiny(preview: Path, *, size: int = TINY_SIZE, categorical: bool = False) -> bool:
    """Write the tiny level of the GeoTIFF ``preview`` (its raw copy only: the renderer reads
    it from memory); False when the preview is already no larger than ``size`` px."""
    try:
        with rasterio.open(preview) as src:
            w, h = src.width, src.height
            factor = math.ceil(max(w, h) / size)
            if factor <= 1:
                return False
            tw, th = math.ceil(w / factor), math.ceil(h / factor)
            data = src.read(1, out_shape=(th, tw), resampling=(
                Resampling.nearest if categorical else Resampling.average))
            transform = src.transform * src.transform.scale(w / tw, h / th)
            crs, nodata = src.crs, src.nodata
    except RasterioError as exc:
        raise DataUnavailable(f"cannot read preview {preview}: {exc}") from None
    write_raw(tiny_path(preview), np.asarray(data), crs=crs, transform=transform, nodata=nodata)
    return True


def write_preview(href: str, dest: Path, *, size: int = PREVIEW_SIZE, nodata: float | None = None,
                  categorical: bool = False) -> bool:
    """Write the preview of ``href`` to ``dest``; False when the file is already small
    (no larger than ``size`` px a side: it is its own preview)."""
    try:
        with rasterio.open(gdal_path(href)) as src:
            w, h = src.width, src.height
            factor = math.ceil(max(w, h) / size)
            if factor <= 1:
                return False
            pw, ph = math.ceil(w / factor), math.ceil(h / factor)
            nd = src.nodata if src.nodata is not None else nodata
            data = src.read(1, out_shape=(ph, pw), resampling=(
                Resampling.nearest if categorical else Resampling.average))
            transform = src.transform * src.transform.scale(w / pw, h / ph)
            profile = {"driver": "GTiff", "width": pw, "height": ph, "count": 1,
                       "dtype": data.dtype, "crs": src.crs, "transform": transform,
                       "nodata": nd, "compress": "DEFLATE", "tiled": pw >= 256 and ph >= 256}
    except RasterioError as exc:
        raise read_error(href, exc, what="build the preview of") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".partial")
    with rasterio.open(partial, "w", **profile) as dst:
        dst.write(np.asarray(data), 1)
    write_raw(sidecar_path(dest), np.asarray(data), crs=profile["crs"],
              transform=profile["transform"], nodata=nd)
    partial.replace(dest)
    write_tiny(dest, categorical=categorical)
    return True


def add_previews(items: Iterable[pystac.Item], preview_dir: str | Path, *,
                 size: int = PREVIEW_SIZE, threads: int = 8, remote_only: bool = True,
                 failed_hosts: set[str] | None = None) -> tuple[int, list[tuple[str, str]]]:
    """Build the previews of the items' raster assets (remote ones only by default: local
    COGs have overviews next to the data) and record them as ``eox:preview``; an existing
    preview without its tiny level gets one.

    Returns how many previews were written and warnings ``(href, reason)``: a file whose
    storage fails gets no preview (its scenes are then read from storage at every zoom),
    and after a failure the other files of the same host are not tried (``failed_hosts``,
    shared over the pages of one ingest run).
    """
    if size < 16:
        raise InvalidInput(f"preview size must be at least 16 px, got {size}")
    root = Path(preview_dir).expanduser().resolve()
    jobs = []
    for item in items:
        for key, asset in item.assets.items():
            href = asset.get_absolute_href() or asset.href
            media = (asset.media_type or "").lower()
            if "tiff" not in media and not href.lower().endswith((".tif", ".tiff")):
                continue
            if remote_only and not is_remote(href):
                continue
            jobs.append((asset, href, key.lower() in CLASS_KEYS,
                         raster_band(asset).get("nodata")))

    # GDAL's options must be set from this thread: set from a pool thread (the first
    # gdal_path of the run) rasterio applies them to that thread only
    configure_gdal()
    failed = failed_hosts if failed_hosts is not None else set()
    warnings: list[tuple[str, str]] = []

    def build(job) -> bool:
        asset, href, categorical, nodata = job
        dest = preview_path(root, href)
        if not dest.exists():
            if host_of(href) in failed:
                return False
            try:
                if not write_preview(href, dest, size=size, nodata=nodata,
                                     categorical=categorical):
                    return False
            except DataUnavailable as exc:
                failed.add(host_of(href))
                warnings.append((href, f"no low-zoom preview: {exc}"))
                return False
        elif not tiny_path(dest).exists():  # a preview made before tiny levels existed
            try:
                write_tiny(dest, categorical=categorical)
            except DataUnavailable as exc:  # the preview itself is then unusable too
                log.warning("no tiny level for %s: %s", dest, exc)
        asset.extra_fields[PREVIEW_FIELD] = str(dest)
        return True

    with ThreadPoolExecutor(max(1, threads)) as pool:
        written = sum(pool.map(build, jobs))
    skipped = sum(1 for _, href, _, _ in jobs if host_of(href) in failed)
    if skipped:
        reason = f"{skipped} band file(s) have no low-zoom preview: their storage failed"
        warnings.append((", ".join(sorted(failed)), reason))
    log.info("previews: %d of %d band files under %s", written, len(jobs), root)
    return written, warnings
