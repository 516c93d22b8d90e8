"""The cap on scenes per tile: how many of the scenes over a tile are mosaicked, and the
notice a capped tile carries, for the tiles themselves and for a view of many tiles.

A tile mosaics at most ``max_preview_items`` scenes when every scene over it has a
local preview (zoomed out: cheap local reads), else ``max_items``; the others are left
out and the tile says so. Zoomed out further, where every scene is read from its tiny
level in one pass (``TileRenderer.cap``, :mod:`engine.render.lowzoom`), all are shown. A time stack over the cap is refused instead (its dates cannot
be silently dropped), so it has no notice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import morecantile

from engine.render.grid import Grid

TMS = morecantile.tms.get("WebMercatorQuad")


@dataclass(frozen=True)
class Cap:
    """Scenes over a tile (``total``) and how many of them it shows (``shown``)."""

    total: int
    shown: int

    @property
    def cut(self) -> bool:
        return self.shown < self.total

    def notice(self, where: str = "this tile") -> str:
        """The text a capped tile carries (the ``X-EOX-Notice`` header); "" if not cut."""
        if not self.cut:
            return ""
        return (f"{self.total} scenes overlap {where}; the first {self.shown} in mosaic "
                "order are shown: zoom in or narrow the search to see the others")


def tile_cap(found: Sequence[Any], *, max_items: int, max_preview_items: int) -> Cap:
    """The cap for a tile over ``found`` scenes (objects with ``has_previews``)."""
    cheap = bool(found) and all(s.has_previews for s in found)
    limit = max_preview_items if cheap else max_items
    return Cap(len(found), min(len(found), limit))


def view_cap(renderer: Any, chain: Any, tiles: Iterable[tuple[int, int, int]]) -> Cap | None:
    """The most cut of the ``(z, x, y)`` tiles of a view for ``chain`` on ``renderer`` (a
    ``TileRenderer``: its scenes and ``cap``), computed from the scenes' bounding boxes as
    the tiles do, without reading a pixel; None when no tile is cut (or for a time
    stack, which is refused rather than cut)."""
    if chain.source.times:
        return None
    sset = renderer.scenes(chain)
    worst: Cap | None = None
    for z, x, y in tiles:
        cap = renderer.cap(chain, sset.intersecting(TMS.bounds(morecantile.Tile(x, y, z))),
                           Grid.tile(z, x, y))
        if cap.cut and (worst is None or cap.total > worst.total):
            worst = cap
    return worst
