"""The block function run on Dask workers: read, mosaic and run the chain over one block.

Reading and mosaicking go through the public render pipeline (``TileRenderer.read``,
``engine.render.to_image``), so a block equals the tiles of the same grid. Each worker
process keeps one renderer (open file handles) and, when a chain has ``execute`` steps
and no executor is installed, starts one sandbox pool lazily.
"""

from __future__ import annotations

import copy
import os
import threading
from typing import Any

import numpy as np
from rio_tiler.models import ImageData

from engine.batch.plan import BatchPlan, Output
from engine.chain.executor import get_executor, set_executor
from engine.chain.raster import Raster, TimeStack
from engine.chain.steps import RGBA_NAMES, Execute
from engine.errors import ChainError, EOXError
from engine.render.encode import to_rgba_planes
from engine.render.grid import Grid
from engine.render.pipeline import to_image
from engine.render.renderer import TileRenderer
from engine.render.scenes import SceneSet

_lock = threading.Lock()
_renderers: dict[int, TileRenderer] = {}
_sandbox_pool: Any = None


def renderer(max_items: int) -> TileRenderer:
    """This process's renderer (its catalog is unused: scenes come with the plan)."""
    with _lock:
        r = _renderers.get(max_items)
        if r is None:
            r = _renderers[max_items] = TileRenderer(None, max_items=max_items)  # type: ignore[arg-type]
        return r


def in_dask_worker() -> bool:
    try:
        from distributed import get_worker
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    try:
        get_worker()
    except ValueError:
        return False
    return True


def ensure_executor(plan: BatchPlan) -> None:
    """In a Dask worker process, start a sandbox pool (once, lazily) for execute steps.

    Outside a worker the process's own configuration is respected: with no executor,
    execute steps raise SandboxError as they do for tiles.
    """
    global _sandbox_pool
    if get_executor() is not None or not any(isinstance(s, Execute) for s in plan.chain.steps):
        return
    if not in_dask_worker():
        return
    with _lock:
        if get_executor() is None:
            from distributed import get_worker

            from engine.sandbox import SandboxPool, chain_executor

            options = {"size": max(1, get_worker().state.nthreads), **plan.sandbox}
            _sandbox_pool = SandboxPool(**options)
            set_executor(chain_executor(_sandbox_pool))


def sandbox_pool() -> Any:
    """The sandbox pool this process started for batch blocks, or None."""
    return _sandbox_pool


def worker_state() -> dict[str, Any]:
    """This worker process's pid, its host's load and its sandbox state (for the report
    of a stalled run)."""
    pool = _sandbox_pool
    return {"pid": os.getpid(), "load": os.getloadavg()[0],
            "sandbox": None if pool is None else pool.status()}


def apply(plan: BatchPlan, grid: Grid) -> Raster | None:
    """The chain's output on ``grid`` (display chains: checked 8-bit ImageData), or None."""
    ensure_executor(plan)
    r = renderer(plan.max_items)
    chain = plan.chain
    if chain.source.times:  # every date of the area, so blocks share one time axis
        scenes = r.limit(chain, list(plan.scenes))
    else:
        sset = SceneSet(list(plan.scenes), plan.read_names)
        scenes = r.limit(chain, sset.intersecting(grid.wgs84()))
    if not scenes:
        return None
    raster = r.read(chain, scenes, grid, names=plan.read_names)
    if plan.analytic or chain_is_analytic(plan):
        return None if raster is None else chain.apply(raster, analytic_only=plan.analytic,
                                                       skip_cloud=True)
    return to_image(chain, raster, grid)


def chain_is_analytic(plan: BatchPlan) -> bool:
    """True when the chain has no visual step (its output are values, not colours)."""
    return not any(s.kind == "visual" for s in plan.chain.steps)


def display_names(img: ImageData) -> tuple[str, ...]:
    """Band names of a display block: colour planes then alpha, as in the tile PNG."""
    names = list(img.band_names)
    if img.count == 4 and names == RGBA_NAMES:
        return tuple(RGBA_NAMES)
    return (*names, "alpha")


def to_block(out: Raster | None, output: Output, shape: tuple[int, int]) -> np.ndarray:
    """A chain output (or None: no data) as the plain array every block of a run returns."""
    full = (*output.shape_prefix, *shape)
    if output.display:
        if out is None:
            return np.zeros(full, np.uint8)
        color, alpha = to_rgba_planes(out)
        if alpha is None:
            alpha = np.full(shape, 255, np.uint8)
        return np.concatenate([np.moveaxis(color, -1, 0), alpha[None]]).astype(np.uint8)
    dtype = np.dtype(output.dtype)
    if out is None:
        return np.full(full, output.nodata if output.nodata is not None else 0, dtype)
    if isinstance(out, TimeStack) != (output.dates is not None) or out.array.shape[:-2] != \
            output.shape_prefix:
        raise ChainError(f"the chain's output has shape {out.array.shape[:-2]} here but "
                         f"{output.shape_prefix} elsewhere (bands/dates must not vary)")
    arr = out.array
    data = np.asarray(arr.data).astype(dtype, copy=False)
    mask = np.ma.getmaskarray(arr)
    if np.issubdtype(dtype, np.floating):
        mask = mask | ~np.isfinite(data)
    if mask.any():
        data = np.where(mask, dtype.type(output.nodata), data)
    return data


def render_block(plan: BatchPlan, i: int, j: int) -> np.ndarray:
    """Block (i, j) of the run: read with ``plan.overlap`` pixels of halo, then cropped."""
    (r0, r1), (c0, c1) = plan.block_rows[i], plan.block_cols[j]
    h = plan.overlap
    grid = plan.grid.window(r0 - h, r1 + h, c0 - h, c1 + h)
    where = (f"block ({i}, {j}) = rows {r0}:{r1}, cols {c0}:{c1}, bbox "
             f"{[round(v, 6) for v in plan.grid.window_bounds(r0, r1, c0, c1)]} in "
             f"{plan.grid.crs.to_string()}")
    assert plan.output is not None
    try:
        out = apply(plan, grid)
        block = to_block(out, plan.output, grid.shape)
    except EOXError as exc:
        raise located(exc, where) from exc
    except Exception as exc:  # not ours (a bug, or memory): keep its type, say where
        exc.add_note(f"eoexplorer batch: while computing {where}")
        raise
    if h:
        block = block[..., h:h + (r1 - r0), h:h + (c1 - c0)]
    return np.ascontiguousarray(block)


def located(exc: EOXError, where: str) -> EOXError:
    """A copy of an engine error (same class) whose message starts with ``where``."""
    new = copy.copy(exc)
    new.message = f"{where}: {exc.message}"
    new.args = (new.message,)
    return new
