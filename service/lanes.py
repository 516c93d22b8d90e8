"""Small pieces of tile serving kept out of the routes: the heavy tiles' lane and the
empty tile.

Heavy tiles (the costliest chains the budget allows, at 512 px) render in a few threads of
their own, at a lower OS priority, so a client sending them back to back leaves the other
render slots, and the CPU when it is short, to everyone else (issue #18).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

#: A tile whose estimated work (``engine.chain.budget.work_per_pixel`` x pixels) is above
#: this is "heavy": heavy tiles render in their own lane, at most ``heavy_renders`` at once,
#: so a client sending the costliest chains the budget allows cannot take every render
#: slot from the others (a true-colour 256 px tile is ~0.3 M, an NDVI with a colormap
#: ~0.8 M, the heaviest chain at 512 px ~530 M).
HEAVY_WORK = 16_000_000
#: Nice value of the heavy lane's threads (Linux schedules threads on their own): when the
#: CPU is short, light tiles' threads run first.
HEAVY_NICE = 10


def _lower_priority() -> None:
    """Run the calling thread at ``HEAVY_NICE`` (where the OS allows it)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HEAVY_NICE)
    except (OSError, AttributeError):  # not Linux, or not allowed: same priority
        pass


def heavy_lane(size: int) -> ThreadPoolExecutor:
    """The threads heavy tiles render in: ``size`` of them, each at ``HEAVY_NICE``."""
    return ThreadPoolExecutor(size, "eox-heavy-tile", initializer=_lower_priority)


def _empty_png() -> bytes:
    """A 1x1 fully transparent RGBA PNG (the map stretches it over the tile)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00\x00")) + chunk(b"IEND", b""))


#: Answer to ``?empty=transparent`` for a tile without data.
EMPTY_PNG = _empty_png()
