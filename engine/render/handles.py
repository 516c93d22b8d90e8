"""The one kind of bounded pool of open rasterio datasets (the renderer has one, point and
polygon profiles share another): reopening a COG costs more than reading a 256 px tile
from it (TiTiler reopens per request). GDAL handles are not thread-safe, so a
dataset is lent to one thread at a time (``get`` ... ``release``) and kept open for the
next borrower once returned. A cheap ``stat`` per use notices files that vanished or were
replaced.

The pool is shared by all threads, so its size does not depend on how many threads read:
at most ``size`` datasets wait open, plus those lent out at the moment. (It used to be one
cache per thread, each kept for good: anyio stops pool threads idle for 10 s and starts
new ones under load, and every (file, overview) a thread ever read stayed open, about
1 MiB each, so the server's memory grew through a soak.)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import rasterio
from rasterio.errors import RasterioError

from engine.errors import DataUnavailable
from engine.security.gdal_paths import check_gdal_path, open_raster
from engine.storage import is_remote, read_error, signature

Key = tuple[str, int | None]
#: Remote files remembered as opened once (then opened without waiting on another thread).
OPENED_MEMORY = 4096
Sig = tuple[int, int, int]


class HandleCache:
    """``get(path)`` lends an open dataset, ``release(ds)`` gives it back; at most ``size``
    returned datasets stay open (least recently used ones are closed); ``size=0`` closes
    every dataset on release."""

    def __init__(self, *, size: int = 64) -> None:
        self.size = size
        self._lock = threading.Lock()
        #: returned datasets, least recently used first: id(ds) -> (key, sig, ds)
        self._idle: OrderedDict[int, tuple[Key, Sig, rasterio.io.DatasetReader]] = OrderedDict()
        #: lent datasets: id(ds) -> (key, sig, ds)
        self._lent: dict[int, tuple[Key, Sig, rasterio.io.DatasetReader]] = {}
        self.opened = 0
        self.reused = 0
        #: remote files opened at least once (their header is in GDAL's cache, likely)
        self._opened_once: OrderedDict[str, None] = OrderedDict()
        #: remote files being opened for the first time: their single-flight gates
        self._opening: dict[str, threading.Lock] = {}

    def get(self, path: str, *, overview: int | None = None) -> rasterio.io.DatasetReader:
        """An open dataset for ``path`` (a local path or an https:// / s3:// href; or its
        overview level ``overview``, 0 = first overview), for this thread alone until
        ``release``; DataUnavailable (StorageUnavailable for remote files) if it is
        missing or unreadable."""
        key = (path, overview)
        check_gdal_path(path, what="source file", error=DataUnavailable)
        try:
            sig = signature(path)
        except DataUnavailable:
            self._evict(key)
            raise
        stale = []
        found = None
        with self._lock:
            for ident, (k, s, ds) in reversed(self._idle.items()):  # most recent first
                if k != key:
                    continue
                if s == sig:
                    found = ident
                    break
                stale.append(ident)
            stale = [self._idle.pop(i)[2] for i in stale]
            if found is not None:
                entry = self._idle.pop(found)
                self._lent[found] = entry
                self.reused += 1
        for ds in stale:  # the file was replaced: these read the old one
            ds.close()
        if found is not None:
            return entry[2]
        with self._first_open(path):
            started = time.monotonic()
            try:
                ds = (open_raster(path) if overview is None
                      else open_raster(path, overview_level=overview))
            except RasterioError as exc:
                raise read_error(path, exc, what="open", started=started) from None
        with self._lock:
            self._lent[id(ds)] = (key, sig, ds)
            self.opened += 1
        return ds

    @contextmanager
    def _first_open(self, path: str) -> Iterator[None]:
        """Single flight for a remote file's first open: threads wanting a file no thread
        has opened yet wait for the first one's open, then open from GDAL's cache of its
        size and header (no request) instead of each sending the same HEAD and header GET
        (a 3-band tile's first reads in 4 threads sent 10 HEADs for 3 files)."""
        if not is_remote(path):
            yield
            return
        with self._lock:
            if path in self._opened_once:
                self._opened_once.move_to_end(path)
                gate = None
            else:
                gate = self._opening.setdefault(path, threading.Lock())
        if gate is None:
            yield
            return
        with gate:
            try:
                yield
            finally:
                with self._lock:
                    self._opening.pop(path, None)
                    self._opened_once[path] = None
                    while len(self._opened_once) > OPENED_MEMORY:
                        self._opened_once.popitem(last=False)

    @contextmanager
    def lend(self, path: str, *, overview: int | None = None
             ) -> Iterator[rasterio.io.DatasetReader]:
        """``get`` for the ``with`` block, ``release`` after it."""
        ds = self.get(path, overview=overview)
        try:
            yield ds
        finally:
            self.release(ds)

    def href_of(self, ds: rasterio.io.DatasetReader) -> str:
        """The path or href a lent dataset was opened from (its ``name`` is GDAL's, e.g. a
        ``/vsicurl/`` path that :meth:`get` would refuse as user text)."""
        with self._lock:
            entry = self._lent.get(id(ds))
        return entry[0][0] if entry is not None else ds.name

    def release(self, ds: rasterio.io.DatasetReader) -> None:
        """Give ``ds`` back: kept open for the next ``get`` of its file, or closed when the
        pool is full (the least recently used one) or disabled."""
        closing = []
        with self._lock:
            entry = self._lent.pop(id(ds), None)
            if entry is None and self._idle.get(id(ds), (None, None, None))[2] is ds:
                return  # released twice: it is waiting already
            if entry is None or entry[2] is not ds or self.size <= 0:
                closing.append(ds)
            else:
                self._idle[id(ds)] = entry
                while len(self._idle) > self.size:
                    closing.append(self._idle.popitem(last=False)[1][2])
        for old in closing:
            old.close()

    def _evict(self, key: Key) -> None:
        with self._lock:
            gone = [i for i, (k, _, _) in self._idle.items() if k == key]
            closing = [self._idle.pop(i)[2] for i in gone]
        for ds in closing:
            ds.close()

    def clear(self) -> None:
        """Close every returned dataset (lent ones close when they come back)."""
        with self._lock:
            closing = [ds for _, _, ds in self._idle.values()]
            self._idle.clear()
        for ds in closing:
            ds.close()

    def stats(self) -> dict[str, int]:
        """Datasets open (waiting and lent) and how often one was opened or reused."""
        with self._lock:
            return {"idle": len(self._idle), "lent": len(self._lent), "max_idle": self.size,
                    "opened": self.opened, "reused": self.reused}
