"""``compute``: a chain evaluated over an area as a Dask-backed xarray.DataArray.

Output values:

* a chain WITHOUT visual steps (or ``analytic=True``, which stops before the first
  scale/colormap/color_custom/opacity step) gives its analytic values, (band, y, x) or
  (time, band, y, x) for a time stack not reduced over time; masked pixels hold ``nodata``
  (NaN for floats; for integers the source nodata when the output bands are source bands,
  else the type's maximum);
* a chain ending with visual steps gives uint8 colour planes plus an ``alpha`` band,
  exactly the pixels of the tile service's PNG at the same grid (1 or 3 bands + alpha,
  or RGBA from a colormap). Like tiles, ``scale(p=...)`` percentiles are computed per
  block: use fixed ``scale(min, max)`` for a seamless stretch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import rasterio.warp
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from rasterio.errors import RasterioError
from rio_tiler.models import ImageData

from engine.batch import blocks
from engine.batch.plan import (
    MAX_PIXELS,
    BatchPlan,
    Output,
    check_size,
    date_groups,
    default_grid,
    parse_bbox,
    parse_crs,
)
from engine.batch.stall import describe_workers, stall_timeout
from engine.catalog.base import Catalog
from engine.chain.budget import check_read_cost
from engine.chain.executor import get_executor
from engine.chain.model import Chain
from engine.chain.raster import TimeStack
from engine.chain.steps import Execute
from engine.errors import BatchStalled, DataUnavailable, InvalidInput, SandboxError
from engine.render.grid import WGS84, Grid
from engine.render.pipeline import to_image
from engine.render.renderer import TileRenderer
from engine.security.gdal_paths import open_raster
from engine.storage import read_error

log = logging.getLogger(__name__)

#: Probe grid side (pixels) used to learn the output's bands and dtype before the run.
PROBE = 32


def plan(chain: Chain, *, bbox: str | Sequence[float], bbox_crs: Any = "EPSG:4326",
         crs: Any = None, resolution: float | None = None, chunks: int | Sequence[int] = 1024,
         overlap: int = 0, analytic: bool = False, catalog: Catalog | None = None,
         max_pixels: int = MAX_PIXELS, max_items: int = 200,
         sandbox: dict[str, Any] | None = None, client: Any = None,
         stall_s: float | None = None) -> BatchPlan:
    """Resolve the scenes and the output grid, check limits, probe the output's bands.

    Raises InvalidInput (bad bbox/crs/resolution, area over ``max_pixels``), ChainError,
    DataUnavailable (no scene in the area) before any block is computed.
    """
    if catalog is None:
        from engine.catalog import get_default_catalog

        catalog = get_default_catalog()
    box = parse_bbox(bbox)
    bcrs = parse_crs(bbox_crs, "bbox_crs")
    if isinstance(chunks, int):
        chunks = (chunks, chunks)
    chunks = tuple(int(c) for c in chunks)
    if len(chunks) != 2 or not all(16 <= c <= 8192 for c in chunks):
        raise InvalidInput(f"chunks must be 16..8192 pixels (one number or rows, cols), "
                           f"got {chunks}")
    if not (isinstance(overlap, int) and 0 <= overlap <= 1024):
        raise InvalidInput(f"overlap must be 0..1024 pixels, got {overlap!r}")
    if max_items < 1:
        raise InvalidInput("max_items must be at least 1")

    _check_executor(chain, client)
    r = TileRenderer(catalog, max_items=max_items)  # the only catalog use: in the caller
    sset = r.scenes(chain)
    wgs = box if bcrs == WGS84 else tuple(
        rasterio.warp.transform_bounds(bcrs, WGS84, *box, densify_pts=21))
    scenes = sset.intersecting(wgs)
    if not scenes:
        raise DataUnavailable(f"no scene of the chain's source ({chain.source.collection!r}) "
                              f"intersects the area {[round(v, 6) for v in wgs]}")
    if crs is None or resolution is None:
        dcrs, dres = default_grid(scenes[0])
        crs = dcrs if crs is None else crs
        resolution = dres if resolution is None else resolution
    grid = Grid.snapped(box, bbox_crs=bcrs, crs=parse_crs(crs), resolution=resolution)
    # scenes of the output area (it may be larger than the bbox after snapping)
    scenes = sset.intersecting(grid.wgs84())
    dates = date_groups(scenes) if chain.source.times else []
    check_size(grid, dates=len(dates), max_pixels=max_pixels)
    if chain.source.times and len(scenes) > max_items:
        r.limit(chain, scenes)  # ChainError naming the limit
    # the cost budget of one block (what one task reads), before any work is sent
    rows, cols = (min(n, c + 2 * overlap) for n, c in zip((grid.height, grid.width), chunks,
                                                          strict=True))
    check_read_cost(chain, dates=max(1, len(dates)), pixels=rows * cols)
    p = BatchPlan(chain=chain, scenes=tuple(scenes), read_names=tuple(sset.band_names),
                  grid=grid, chunks=chunks, overlap=overlap, analytic=analytic,
                  max_items=max_items, sandbox=dict(sandbox or {}))
    if client is not None:
        output = _probe_on(client, p, stall_timeout(stall_s))
    else:
        output = probe(p)
    return replace(p, output=output)


def _probe_on(client: Any, p: BatchPlan, stall_s: float) -> Output:
    """:func:`probe` on a worker, or BatchStalled when it did not finish in ``stall_s``."""
    fut = client.submit(probe, p, pure=False)
    try:
        return fut.result(timeout=stall_s)
    except TimeoutError:
        fut.cancel()
        raise BatchStalled(
            f"the batch run made no progress: probing the output (a {PROBE} x {PROBE} pixel "
            f"window) did not finish in {stall_s:g} s (stall_s / $EOX_BATCH_STALL_S sets "
            f"the limit). Workers:\n{describe_workers(client, {fut.key: 'the probe'})}"
        ) from None


def _check_executor(chain: Chain, client: Any) -> None:
    """SandboxError before any work when execute steps have nowhere to run."""
    if client is None and get_executor() is None and not blocks.in_dask_worker() and any(
            isinstance(s, Execute) for s in chain.steps):
        raise SandboxError("the chain has execute steps and this process has no sandbox "
                           "executor: pass client=<distributed.Client> (each Dask worker "
                           "starts a sandbox) or call engine.sandbox.install_executor() first")


def probe(p: BatchPlan) -> Output:
    """Run the chain on a small window (where the first scene has data) to learn the
    output's bands and dtype; on a synthetic input when that window has no valid pixel."""
    grid, res = p.grid, p.grid.resolution
    w, s, e, n = p.scenes[0].bbox
    aw, as_, ae, an = grid.wgs84()
    lon, lat = (max(w, aw) + min(e, ae)) / 2, (max(s, as_) + min(n, an)) / 2
    xs, ys = rasterio.warp.transform(WGS84, grid.crs, [lon], [lat])
    half = PROBE / 2 * res
    bounds = (xs[0] - half, ys[0] - half, xs[0] + half, ys[0] + half)
    out = blocks.apply(p, Grid(grid.crs, bounds, PROBE, PROBE))
    if out is None:
        out = _synthetic(p)
    display = not (p.analytic or blocks.chain_is_analytic(p))
    if display:
        return Output(blocks.display_names(out), "uint8", None, True)
    dtype = np.dtype(out.array.dtype)
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    names = tuple(str(b) for b in out.band_names)
    dates = tuple(out.dates) if isinstance(out, TimeStack) else None
    return Output(names, dtype.name, _nodata(p, dtype, names), False, dates)


def _synthetic(p: BatchPlan):
    """The chain applied to ones of the source dtype (the probe window had no data)."""
    started = time.monotonic()
    try:
        with open_raster(p.scenes[0].hrefs[0]) as ds:
            dtype = "float32" if any(p.scenes[0].transforms) else ds.dtypes[0]
    except RasterioError as exc:
        raise read_error(p.scenes[0].hrefs[0], exc, what="open",
                         started=started) from None
    names = list(p.chain.read_bands())
    if p.chain.source.times:
        dates = tuple(date_groups(p.scenes))
        arr = np.ma.MaskedArray(np.ones((len(dates), len(names), 8, 8), dtype),
                                mask=np.zeros((len(dates), len(names), 8, 8), bool))
        raster = TimeStack(arr, dates, tuple(names), crs=p.grid.crs)
    else:
        arr = np.ma.MaskedArray(np.ones((len(names), 8, 8), dtype),
                                mask=np.zeros((len(names), 8, 8), bool))
        raster = ImageData(arr, band_names=names, crs=p.grid.crs)
    analytic = p.analytic or blocks.chain_is_analytic(p)
    if analytic:
        return p.chain.apply(raster, analytic_only=p.analytic, skip_cloud=True)
    return to_image(p.chain, raster, Grid(p.grid.crs, (0, 0, 8, 8), 8, 8))


def _nodata(p: BatchPlan, dtype: np.dtype, names: tuple[str, ...]) -> float:
    if dtype.kind == "f":
        return math.nan
    info = np.iinfo(dtype)
    src = p.scenes[0].nodata[0] if p.scenes[0].nodata else None
    if (src is not None and set(names) <= set(p.read_names) and float(src).is_integer()
            and info.min <= src <= info.max):
        return float(src)
    return float(info.max)


def as_dask(p: BatchPlan) -> da.Array:
    """The run as a Dask array: the plan is one graph key, each block one task."""
    assert p.output is not None
    token = tokenize(p.chain.to_json(), p.grid, p.chunks, p.overlap, p.analytic,
                     [s.id for s in p.scenes], p.max_items, p.output)
    name, plan_key = f"eox-chain-{token}", f"eox-plan-{token}"
    prefix = p.output.shape_prefix
    dsk: dict[Any, Any] = {plan_key: p}
    nrows, ncols = p.nblocks
    lead = (0,) * len(prefix)
    for i in range(nrows):
        for j in range(ncols):
            dsk[(name, *lead, i, j)] = (blocks.render_block, plan_key, i, j)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[])
    chunks = (*((n,) for n in prefix), tuple(b - a for a, b in p.block_rows),
              tuple(b - a for a, b in p.block_cols))
    return da.Array(graph, name, chunks=chunks, dtype=np.dtype(p.output.dtype))


def to_dataarray(p: BatchPlan, data: Any) -> xr.DataArray:
    """Wrap the run's array with coordinates (time, band, y, x) and georeferencing attrs."""
    out, grid = p.output, p.grid
    assert out is not None
    y, x = grid.coords()
    coords: dict[str, Any] = {"band": np.array(out.band_names, dtype=object), "y": y, "x": x}
    dims = ["band", "y", "x"]
    if out.dates is not None:
        dims.insert(0, "time")
        coords["time"] = pd.DatetimeIndex(
            [pd.Timestamp(d).tz_convert("UTC").tz_localize(None) if d and d.tzinfo
             else pd.Timestamp(d) if d else pd.NaT for d in out.dates])
    attrs = {"crs": grid.crs.to_string(), "transform": tuple(grid.transform)[:6],
             "resolution": grid.resolution, "nodata": out.nodata,
             "chain_id": p.chain.id, "chain": p.chain.to_json(),
             "kind": "display" if out.display else "analytic"}
    return xr.DataArray(data, dims=dims, coords=coords, attrs=attrs, name="result")


def compute(chain: Chain, *, bbox: str | Sequence[float], crs: Any = None,
            resolution: float | None = None, client: Any = None,
            chunks: int | Sequence[int] = 1024, bbox_crs: Any = "EPSG:4326",
            overlap: int = 0, analytic: bool = False, catalog: Catalog | None = None,
            max_pixels: int = MAX_PIXELS, max_items: int = 200,
            sandbox: dict[str, Any] | None = None,
            stall_s: float | None = None) -> xr.DataArray:
    """The chain evaluated over ``bbox`` on a grid in ``crs`` at ``resolution``, lazily.

    Args:
        bbox: W,S,E,N in ``bbox_crs`` (default lon/lat); a bbox in the output CRS is
            used as is, another is reprojected and snapped to the resolution grid.
        crs, resolution: output grid (default: the first scene's CRS and pixel size).
        client: a ``distributed.Client``: the output is probed on its workers and the
            result persisted there (computing in the background). Without one, the array
            computes with the active Dask scheduler when asked (``.values``, ``.load()``).
        chunks: block size in pixels (square, or rows, cols).
        overlap: halo in pixels read around each block and cropped after the chain ran,
            for ``execute`` functions that look at neighbours (like ``map_overlap``, but
            each block reads its halo from the COGs instead of from neighbour blocks).
        analytic: stop before the first visual step (values instead of colours).
        catalog: where the source's scenes are found (default: the process default).
        max_pixels: largest output (cells x dates); larger raises InvalidInput at once.
        max_items: most scenes read per block (and in a time stack).
        sandbox: SandboxPool options for the pool each Dask worker starts lazily for
            ``execute`` steps (in-process runs use the installed executor).
        stall_s: with a ``client``, how long probing the output may take before
            BatchStalled (default ``$EOX_BATCH_STALL_S`` or 180 s).

    Returns:
        DataArray (band, y, x) or (time, band, y, x), attrs crs/transform/nodata.
    """
    p = plan(chain, bbox=bbox, bbox_crs=bbox_crs, crs=crs, resolution=resolution,
             chunks=chunks, overlap=overlap, analytic=analytic, catalog=catalog,
             max_pixels=max_pixels, max_items=max_items, sandbox=sandbox, client=client,
             stall_s=stall_s)
    arr = as_dask(p)
    if client is not None:
        arr = client.persist(arr)
    return to_dataarray(p, arr)


__all__ = ["as_dask", "compute", "plan", "probe", "to_dataarray"]
