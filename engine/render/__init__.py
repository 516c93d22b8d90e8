"""Tile rendering for chains: ``TileRenderer(catalog).tile(chain, z, x, y)`` and friends."""

from engine.render.encode import FORMATS, MEDIA_TYPES, encode
from engine.render.handles import HandleCache
from engine.render.renderer import PERCENTILES, Scene, SceneSet, TileRenderer
from engine.storage import GDAL_OPTIONS

__all__ = ["FORMATS", "GDAL_OPTIONS", "MEDIA_TYPES", "PERCENTILES", "HandleCache", "Scene",
           "SceneSet", "TileRenderer", "encode"]
