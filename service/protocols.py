"""What the service needs from its collaborators, as typing Protocols.

``engine.render.TileRenderer`` and ``engine.catalog`` catalogs satisfy them; tests pass
their own doubles. No attribute is looked up with ``getattr``: a collaborator either has a
method or the type checker says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import pystac
from rio_tiler.models import ImageData

from engine.chain.model import Chain
from engine.render.results import ChainInfo, PointValues, Statistics
from engine.render.scenes import SceneSet


class CollectionLookup(Protocol):
    """Finds a collection by id (UnknownCollection, with the choices, otherwise)."""

    def collection(self, name: str) -> pystac.Collection: ...


class TileSource(Protocol):
    """Renders and encodes XYZ tiles and says when a chain's scenes changed."""

    def tile(self, chain: Chain, z: int, x: int, y: int, *,
             tilesize: int = 256) -> ImageData | None: ...

    def encode(self, img: ImageData, fmt: str) -> bytes: ...

    def fingerprint(self, chain: Chain) -> str: ...

    def scenes(self, chain: Chain) -> SceneSet: ...

    def invalidate(self) -> None: ...


class ChainReader(Protocol):
    """Answers a chain's point values, statistics and TileJSON info."""

    def point(self, chain: Chain, lon: float, lat: float) -> PointValues: ...

    def statistics(self, chain: Chain, geometry: dict, *, bins: int = ...,
                   percentiles: Sequence[float] = ...) -> Statistics: ...

    def info(self, chain: Chain) -> ChainInfo: ...


class FrameRenderer(Protocol):
    """Renders a bbox on a grid (timelapse frames, exports)."""

    def render_bbox(self, chain: Chain, bbox: Sequence[float], width: int, height: int, *,
                    crs: Any = ..., bbox_crs: Any = ...,
                    analytic: bool = False) -> ImageData | None: ...


class HandleStats(Protocol):
    def stats(self) -> dict[str, int]: ...


class Renderer(TileSource, ChainReader, FrameRenderer, Protocol):
    """Everything the service asks of ``engine.render.TileRenderer``."""

    handles: HandleStats
