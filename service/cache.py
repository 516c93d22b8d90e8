"""An in-memory LRU cache of encoded tiles, bounded in bytes and safe across threads.

Tiles of a chain never change meaning (the chain id is the hash of its JSON), so an
entry never goes stale; it only leaves the cache when the byte budget needs room.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

#: Bytes charged per entry on top of its content (key, tuple, ETag, dict slot).
ENTRY_OVERHEAD = 200


@dataclass(frozen=True)
class CachedTile:
    """An encoded tile and its strong ETag; empty ``content`` means "no data here" (204)."""

    content: bytes
    etag: str
    #: what the tile leaves out (too many scenes), sent as the ``X-EOX-Notice`` header
    notice: str = ""

    @property
    def nbytes(self) -> int:
        return len(self.content) + ENTRY_OVERHEAD


class TileCache:
    """LRU mapping key -> :class:`CachedTile` whose total size stays <= ``max_bytes``.

    ``max_bytes=0`` disables caching (every ``get`` misses). An entry bigger than the
    whole budget is not stored.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, CachedTile] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: Hashable) -> CachedTile | None:
        """The entry for ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: Hashable, entry: CachedTile) -> None:
        """Store ``entry``, evicting least recently used entries to stay within budget."""
        size = entry.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes currently charged to the budget."""
        return self._bytes

    def stats(self) -> dict[str, int]:
        """Counters for /healthz."""
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }
