"""Write a batch run to a COG or a Zarr store, atomically.

Blocks are computed on the workers (or local threads) and written by THIS process as they
arrive, at most a bounded number in flight, so memory stays bounded and the workers need
only read access to the source COGs. Output goes to a temporary name in the target folder
and is moved into place only when every block succeeded: never a partial file.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from engine.batch import blocks
from engine.batch.compute import as_dask, plan, to_dataarray
from engine.batch.plan import BatchPlan
from engine.batch.stall import describe_workers, stall_timeout
from engine.chain.model import Chain
from engine.errors import BatchStalled, InvalidInput

log = logging.getLogger(__name__)

#: True (a tqdm bar on stderr), False, or ``progress(done_blocks, total_blocks)``.
Progress = bool | Callable[[int, int], None]


def iter_blocks(p: BatchPlan, *, client: Any = None, threads: int | None = None,
                progress: Progress = False,
                stall_s: float | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(i, j, block)`` as blocks complete, keeping a bounded number in flight.

    With a distributed ``client`` blocks are Dask tasks (lost ones are recomputed when a
    worker dies); without one they run on ``threads`` local threads. ``progress`` is True
    (a tqdm bar) or ``progress(done, total)``, called as blocks arrive; an error it raises
    stops the run (nothing is written). A distributed run in which no block finishes for
    ``stall_s`` seconds (default ``$EOX_BATCH_STALL_S`` or 180) raises BatchStalled
    saying what the workers were doing, instead of waiting forever.
    """
    nrows, ncols = p.nblocks
    todo = [(i, j) for i in range(nrows) for j in range(ncols)]
    bar = _bar(len(todo), progress)
    try:
        if client is not None:
            yield from _iter_distributed(p, todo, client, bar, stall_timeout(stall_s))
        else:
            yield from _iter_threads(p, todo, threads or os.cpu_count() or 1, bar)
    finally:
        if bar is not None:
            bar.close()


class _Callback:
    """A progress bar that calls ``progress(done, total)`` (a UI's progress indicator)."""

    def __init__(self, progress: Callable[[int, int], None], total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0
        progress(0, total)

    def update(self, n: int) -> None:
        self.done += n
        self.progress(self.done, self.total)

    def close(self) -> None:
        pass


def _bar(total: int, progress: Progress) -> Any:
    if not progress:
        return None
    if callable(progress):
        return _Callback(progress, total)
    from tqdm import tqdm

    return tqdm(total=total, unit="block", desc="blocks", dynamic_ncols=True)


def _iter_threads(p: BatchPlan, todo: list[tuple[int, int]], threads: int,
                  bar: Any) -> Iterator[tuple[int, int, np.ndarray]]:
    limit = 2 * threads
    pending: dict[Any, tuple[int, int]] = {}
    queue = iter(todo)
    with ThreadPoolExecutor(threads, thread_name_prefix="eox-batch") as pool:
        try:
            while True:
                for ij in queue:
                    pending[pool.submit(blocks.render_block, p, *ij)] = ij
                    if len(pending) >= limit:
                        break
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i, j = pending.pop(fut)
                    block = fut.result()  # re-raises the block's error
                    if bar is not None:
                        bar.update(1)
                    yield i, j, block
        finally:
            for fut in pending:
                fut.cancel()


def _iter_distributed(p: BatchPlan, todo: list[tuple[int, int]], client: Any, bar: Any,
                      stall_s: float) -> Iterator[tuple[int, int, np.ndarray]]:
    from distributed import wait

    delayed = as_dask(p).to_delayed()
    lead = (0,) * (delayed.ndim - 2)
    threads = max(1, sum(client.nthreads().values()))
    limit = 2 * threads + 2
    queue = iter(todo)
    where: dict[Any, tuple[int, int]] = {}
    pending: set[Any] = set()
    done_blocks = 0

    def submit(ij: tuple[int, int]) -> None:
        fut = client.compute(delayed[(*lead, *ij)])
        where[fut.key] = ij
        pending.add(fut)

    for _, ij in zip(range(limit), queue, strict=False):
        submit(ij)
    try:
        while pending:
            try:
                done, _ = wait(list(pending), timeout=stall_s, return_when="FIRST_COMPLETED")
            except TimeoutError:
                labels = {f.key: "block ({}, {})".format(*where[f.key]) for f in pending}
                raise BatchStalled(
                    f"the batch run made no progress: no block finished in {stall_s:g} s "
                    f"({done_blocks} of {len(todo)} done, {len(pending)} in flight; "
                    f"stall_s / $EOX_BATCH_STALL_S sets the limit). Workers:\n"
                    f"{describe_workers(client, labels)}") from None
            for fut in sorted(done, key=lambda f: where[f.key]):
                pending.discard(fut)
                i, j = where.pop(fut.key)
                block = fut.result()  # re-raises the block's error (with its location)
                fut.release()
                nxt = next(queue, None)
                if nxt is not None:
                    submit(nxt)
                done_blocks += 1
                if bar is not None:
                    bar.update(1)
                yield i, j, block
    finally:
        for fut in pending:
            fut.cancel()


def _temp_name(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.{suffix}")


def _check_target(path: Path, overwrite: bool) -> None:
    if not path.parent.is_dir():
        raise InvalidInput(f"the output folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise InvalidInput(f"{path} exists: pass overwrite=True (--overwrite) to replace it")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_cog(p: BatchPlan, path: str | os.PathLike[str], *, client: Any = None,
              threads: int | None = None, progress: Progress = False, compress: str = "DEFLATE",
              blocksize: int = 512, overwrite: bool = False,
              stall_s: float | None = None) -> Path:
    """Compute ``p`` and write it as a Cloud-Optimized GeoTIFF with overviews at ``path``."""
    out = p.output
    assert out is not None
    if out.dates is not None:
        raise InvalidInput("to_cog writes 2-D bands: reduce the time stack over time "
                           "(reduce(...)) or write a Zarr store (to_zarr) to keep the dates")
    path = Path(path)
    _check_target(path, overwrite)
    grid = p.grid
    raw, final = _temp_name(path, "raw.tif"), _temp_name(path, "tif")
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height,
        "count": len(out.band_names), "dtype": out.dtype, "crs": grid.crs,
        "transform": grid.transform, "tiled": True, "blockxsize": blocksize,
        "blockysize": blocksize, "compress": "ZSTD", "zstd_level": 1, "bigtiff": "IF_SAFER",
        "num_threads": "ALL_CPUS",
    }
    if out.display:
        profile["photometric"] = "RGB" if len(out.band_names) == 4 else "MINISBLACK"
    elif out.nodata is not None:
        profile["nodata"] = out.nodata
    try:
        with rasterio.open(raw, "w", **profile) as dst:
            dst.descriptions = tuple(out.band_names)
            if out.display:
                dst.colorinterp = ([ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                                    ColorInterp.alpha] if len(out.band_names) == 4
                                   else [ColorInterp.gray, ColorInterp.alpha])
            dst.update_tags(chain=p.chain.to_json(), chain_id=p.chain.id)
            for i, j, block in iter_blocks(p, client=client, threads=threads,
                                           progress=progress, stall_s=stall_s):
                (r0, r1), (c0, c1) = p.block_rows[i], p.block_cols[j]
                dst.write(block, window=Window(c0, r0, c1 - c0, r1 - r0))
        options = {"COMPRESS": compress, "BLOCKSIZE": blocksize, "OVERVIEWS": "AUTO",
                   "NUM_THREADS": "ALL_CPUS", "BIGTIFF": "IF_SAFER",
                   # classes and colours must not be averaged; float values may
                   "OVERVIEW_RESAMPLING": "AVERAGE" if out.dtype.startswith("float")
                   else "NEAREST"}
        if compress.upper() in ("DEFLATE", "ZSTD", "LZW") and not out.display:
            options["PREDICTOR"] = "YES"
        rasterio.shutil.copy(raw, final, driver="COG", **options)
        os.replace(final, path)
    finally:
        _remove(raw)
        _remove(final)
    log.info("wrote %s (%d x %d, %d bands)", path, grid.width, grid.height,
             len(out.band_names))
    return path


def write_zarr(p: BatchPlan, path: str | os.PathLike[str], *, client: Any = None,
               threads: int | None = None, progress: Progress = False,
               overwrite: bool = False, stall_s: float | None = None) -> Path:
    """Compute ``p`` and write it as a Zarr store at ``path`` (variable ``result``, a
    CF ``spatial_ref`` grid mapping, chunks = blocks)."""
    import xarray as xr
    import zarr

    path = Path(path)
    _check_target(path, overwrite)
    out = p.output
    assert out is not None
    arr = to_dataarray(p, as_dask(p))
    ds = arr.to_dataset()
    ds["result"].attrs = {k: v for k, v in arr.attrs.items() if k not in ("nodata",)}
    ds["result"].attrs["grid_mapping"] = "spatial_ref"
    ds["result"].attrs["transform"] = list(arr.attrs["transform"])
    t = p.grid.transform
    ds = ds.assign_coords(spatial_ref=xr.DataArray(0, attrs={
        "crs_wkt": p.grid.crs.to_wkt(), "spatial_ref": p.grid.crs.to_wkt(),
        "GeoTransform": " ".join(str(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e))}))
    encoding: dict[str, Any] = {"result": {}}
    if out.nodata is not None:
        encoding["result"]["_FillValue"] = np.dtype(out.dtype).type(out.nodata)
    tmp = _temp_name(path, "zarr")
    old = _temp_name(path, "old")
    try:
        ds.to_zarr(tmp, mode="w-", compute=False, encoding=encoding, consolidated=False)
        store = zarr.open_array(tmp / "result", mode="r+")
        lead = (slice(None),) * (len(out.shape_prefix))
        for i, j, block in iter_blocks(p, client=client, threads=threads, progress=progress,
                                       stall_s=stall_s):
            (r0, r1), (c0, c1) = p.block_rows[i], p.block_cols[j]
            store[(*lead, slice(r0, r1), slice(c0, c1))] = block
        with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec yet
            warnings.simplefilter("ignore", UserWarning)
            zarr.consolidate_metadata(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        _remove(tmp)
        _remove(old)
    return path


def to_cog(chain: Chain, path: str | os.PathLike[str], *, client: Any = None,
           threads: int | None = None, progress: Progress = False, compress: str = "DEFLATE",
           overwrite: bool = False, stall_s: float | None = None, **options: Any) -> Path:
    """Compute ``chain`` (``options`` as for :func:`engine.batch.compute`) into a COG.

    Nothing is written until every block succeeded; a failing block raises its error
    (class kept, message naming the block and its bbox) and leaves no file.
    """
    _check_target(Path(path), overwrite)
    p = plan(chain, client=client, stall_s=stall_s, **options)
    return write_cog(p, path, client=client, threads=threads, progress=progress,
                     compress=compress, overwrite=overwrite, stall_s=stall_s)


def to_zarr(chain: Chain, path: str | os.PathLike[str], *, client: Any = None,
            threads: int | None = None, progress: Progress = False, overwrite: bool = False,
            stall_s: float | None = None, **options: Any) -> Path:
    """Compute ``chain`` (``options`` as for :func:`engine.batch.compute`) into a Zarr
    store; keeps the time axis of time stacks. Atomic like :func:`to_cog`."""
    _check_target(Path(path), overwrite)
    p = plan(chain, client=client, stall_s=stall_s, **options)
    return write_zarr(p, path, client=client, threads=threads, progress=progress,
                      overwrite=overwrite, stall_s=stall_s)


def run(chain: Chain, out: str | os.PathLike[str], **options: Any) -> Path:
    """``to_cog`` for ``.tif``/``.tiff`` paths, ``to_zarr`` for ``.zarr``."""
    suffix = Path(out).suffix.lower()
    if suffix in (".tif", ".tiff"):
        return to_cog(chain, out, **options)
    if suffix == ".zarr":
        return to_zarr(chain, out, **options)
    raise InvalidInput(f"unknown output type {suffix or '(none)'!r} for {out}",
                       choices=[".tif", ".tiff", ".zarr"])
