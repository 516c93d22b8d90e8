"""Rendering for chains, as a public pipeline others call:

select scenes (``TileRenderer.select`` / :mod:`engine.render.scenes`) ->
``read(chain, scenes, grid)`` (a raster on a :class:`Grid`) -> ``to_image`` / ``to_values``
-> ``encode``. ``TileRenderer(catalog).tile(chain, z, x, y)`` runs it for one XYZ tile.
"""

from engine.render.encode import FORMATS, MEDIA_TYPES, encode
from engine.render.grid import Grid
from engine.render.handles import HandleCache
from engine.render.pipeline import GridReader, PointReader, mosaic, read, to_image, to_values
from engine.render.renderer import TileRenderer
from engine.render.results import (
    PERCENTILES,
    BandStatistics,
    ChainInfo,
    PointValues,
    Statistics,
    percentile_key,
)
from engine.render.scenes import Scene, SceneSet, build_scenes, limit_scenes, read_names
from engine.storage import GDAL_OPTIONS

__all__ = ["FORMATS", "GDAL_OPTIONS", "MEDIA_TYPES", "PERCENTILES", "BandStatistics",
           "ChainInfo", "Grid", "GridReader", "HandleCache", "PointReader", "PointValues",
           "Scene", "SceneSet", "Statistics", "TileRenderer", "build_scenes", "encode",
           "limit_scenes", "mosaic", "percentile_key", "read", "read_names", "to_image",
           "to_values"]
