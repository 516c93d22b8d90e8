"""A bounded per-thread cache of open rasterio datasets: reopening a COG costs more than
reading a 256 px tile from it (TiTiler reopens per request). GDAL handles are not
thread-safe, so each thread keeps its own LRU. A cheap ``stat`` per use notices files that
vanished or were replaced.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import rasterio
from rasterio.errors import RasterioIOError

from engine.errors import DataUnavailable


class HandleCache:
    """``get(path)`` returns an open dataset; at most ``size`` per thread stay open."""

    def __init__(self, *, size: int = 64) -> None:
        self.size = size
        self._local = threading.local()
        self._all: list[OrderedDict] = []
        self._lock = threading.Lock()

    def _cache(self) -> OrderedDict:
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = OrderedDict()
            with self._lock:
                self._all.append(cache)
        return cache

    def get(self, path: str, *, overview: int | None = None) -> rasterio.io.DatasetReader:
        """An open dataset for ``path`` (or its overview level ``overview``, 0 = first
        overview); DataUnavailable if it is missing or unreadable."""
        try:
            st = os.stat(path)
        except OSError as exc:
            self._evict((path, overview))
            raise DataUnavailable(f"source file is missing: {path} ({exc.strerror})") from None
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        cache = self._cache()
        key = (path, overview)
        hit = cache.get(key)
        if hit is not None and hit[0] == sig and self.size > 0:
            cache.move_to_end(key)
            return hit[1]
        if hit is not None:
            self._evict(key)
        try:
            ds = (rasterio.open(path) if overview is None
                  else rasterio.open(path, overview_level=overview))
        except RasterioIOError as exc:
            raise DataUnavailable(f"cannot open source file {path}: {exc}") from None
        if self.size > 0:
            cache[key] = (sig, ds)
            while len(cache) > self.size:
                _, (_, old) = cache.popitem(last=False)
                old.close()
        return ds

    def release(self, ds: rasterio.io.DatasetReader) -> None:
        """Close ``ds`` if it is not cached (caching disabled)."""
        if self.size <= 0:
            ds.close()

    def _evict(self, key: tuple[str, int | None]) -> None:
        cache = self._cache()
        hit = cache.pop(key, None)
        if hit is not None:
            hit[1].close()

    def clear(self) -> None:
        """Close this thread's datasets (other threads close theirs when they clear)."""
        cache = self._cache()
        while cache:
            _, (_, ds) = cache.popitem()
            ds.close()
