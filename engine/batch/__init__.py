"""Batch runs of any chain over an area on Dask, and large rasters on screen.

>>> arr = chain.compute(bbox=(11.5, 47.9, 11.7, 48.1), resolution=10)   # lazy DataArray
>>> chain.to_cog("ndvi.tif", bbox=..., client=client)                  # atomic COG
>>> with connect("tcp://scheduler:8786") as client: ...                 # or a LocalCluster

Blocks are read and mosaicked with the tile renderer's own code, so a batch output equals
the tile service's rendering at the same grid; ``execute`` steps run in a sandbox pool
that each Dask worker process starts on first use.
"""

from engine.batch.cluster import connect
from engine.batch.compute import compute, plan
from engine.batch.largeraster import open_for_screen
from engine.batch.plan import MAX_PIXELS, BatchPlan, Output
from engine.batch.write import iter_blocks, run, to_cog, to_zarr, write_cog, write_zarr

#: Former name of :class:`BatchPlan` (the dashboard's batch tab imports it).
Plan = BatchPlan

__all__ = ["MAX_PIXELS", "BatchPlan", "Output", "Plan", "compute", "connect", "iter_blocks",
           "open_for_screen", "plan", "run", "to_cog", "to_zarr", "write_cog", "write_zarr"]
