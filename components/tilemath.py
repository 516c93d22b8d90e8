"""Web Mercator arithmetic shared by the map, the URL state and tile prefetching.

Pure numpy: which box the map shows for a requested area, and which XYZ tiles the browser's
Bokeh tile layer will ask for at that view (same zoom choice as ``WMTSTileSource``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

R = 6378137.0
WORLD = 2 * math.pi * R
#: Margin around a box the map is asked to show (a zero-height box is shown exactly).
PAD = 1.05
#: Map size (inner pixels) assumed until the browser reports the real one.
GUESS_SIZE = (1000, 720)

BBox = tuple[float, float, float, float]


def to_mercator(lon: Any, lat: Any) -> tuple[Any, Any]:
    """WGS84 degrees -> Web Mercator metres (numpy-friendly)."""
    lat = np.clip(lat, -85.05, 85.05)
    x = np.radians(lon) * R
    y = np.log(np.tan(np.pi / 4 + np.radians(lat) / 2)) * R
    return x, y


def to_lonlat(x: Any, y: Any) -> tuple[Any, Any]:
    """Web Mercator metres -> WGS84 degrees."""
    return np.degrees(np.asarray(x) / R), np.degrees(np.arctan(np.sinh(np.asarray(y) / R)))


def fit(bbox: BBox, size: tuple[int, int]) -> BBox:
    """Mercator x0, y0, x1, y1 showing ``bbox`` (W, S, E, N) with square pixels at ``size``.

    A box of zero height asks for exactly its width around its centre (a link's view);
    any other box gets a small margin.
    """
    (x0, x1), (y0, y1) = to_mercator(np.array([bbox[0], bbox[2]]),
                                     np.array([bbox[1], bbox[3]]))
    w, h = size
    dx, dy = max(float(x1 - x0), 1.0), max(float(y1 - y0), 0.0)
    if bbox[1] != bbox[3]:
        dx, dy = dx * PAD, max(dy, 1.0) * PAD
    if dx / max(dy, 1e-9) < w / h:
        dx = dy * w / h
    else:
        dy = dx * h / w
    cx, cy = float(x0 + x1) / 2, float(y0 + y1) / 2
    return cx - dx / 2, cy - dy / 2, cx + dx / 2, cy + dy / 2


def lonlat_box(extent: BBox) -> BBox:
    """W, S, E, N of a Mercator x0, y0, x1, y1."""
    (w, e), (s, n) = to_lonlat(np.array([extent[0], extent[2]]),
                               np.array([extent[1], extent[3]]))
    return float(w), float(s), float(e), float(n)


def tile_level(extent: BBox, size: tuple[int, int], *, tile_size: int = 256) -> int:
    """The zoom level Bokeh's tile layer picks for a Mercator extent drawn at ``size``."""
    res = max((extent[2] - extent[0]) / max(size[0], 1), (extent[3] - extent[1]) / max(size[1], 1))
    if res <= 0:
        return 30
    return int(min(30, max(0, math.floor(math.log2(WORLD / tile_size / res) + 1e-9))))


def visible_tiles(view: BBox, size: tuple[int, int], *, within: list[BBox] | None = None,
                  border: int = 1, limit: int = 64) -> list[tuple[int, int, int]]:
    """z, x, y of the tiles the browser requests for ``view`` (W, S, E, N) at ``size``,
    nearest the centre first; only those touching one of ``within`` (W, S, E, N) if given."""
    (x0, x1), (y0, y1) = to_mercator(np.array([view[0], view[2]]), np.array([view[1], view[3]]))
    z = tile_level((float(x0), float(y0), float(x1), float(y1)), size)
    n = 2**z
    span = WORLD / n

    def col(x: float) -> int:
        return int(min(n - 1, max(0, math.floor((x + WORLD / 2) / span))))

    def row(y: float) -> int:
        return int(min(n - 1, max(0, math.floor((WORLD / 2 - y) / span))))

    c0, c1 = max(0, col(x0) - border), min(n - 1, col(x1) + border)
    r0, r1 = max(0, row(y1) - border), min(n - 1, row(y0) + border)
    boxes = []
    for b in within or []:
        (bx0, bx1), (by0, by1) = to_mercator(np.array([b[0], b[2]]), np.array([b[1], b[3]]))
        boxes.append((float(bx0), float(by0), float(bx1), float(by1)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    tiles = []
    for tx in range(c0, c1 + 1):
        for ty in range(r0, r1 + 1):
            left, top = tx * span - WORLD / 2, WORLD / 2 - ty * span
            right, bottom = left + span, top - span
            if boxes and not any(left < b[2] and right > b[0] and bottom < b[3] and top > b[1]
                                 for b in boxes):
                continue
            d = ((left + right) / 2 - cx) ** 2 + ((top + bottom) / 2 - cy) ** 2
            tiles.append((d, (z, tx, ty)))
    tiles.sort()
    return [t for _, t in tiles[:limit]]
