"""Tile coordination without HTTP: the :class:`TileProducer` behind ``/api/chains/.../tiles``.

A chain id is the hash of the chain's canonical JSON, so its tiles never change meaning as
long as its scenes do not: cache keys carry the renderer's fingerprint of them. Tiles are
kept in an in-memory LRU cache bounded in bytes, in front of an optional disk cache shared
by the processes of the host. Rendering is synchronous (GDAL, numpy): misses run in
threads, at most ``render_concurrency`` at once (more only queue for the CPU and stretch
every request's latency), heavy tiles in a lane of their own, and concurrent requests for
the same tile share one render (single flight). ``warm`` prefetches tiles ahead of the
browser.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
from rio_tiler.models import ImageData

from engine.chain import Chain
from engine.chain.budget import work_per_pixel
from engine.chain.store import ChainStore
from engine.render.cap import Cap
from service.cache import CachedTile, TileCache
from service.diskcache import DiskKey, DiskTileCache, etag_of
from service.lanes import HEAVY_WORK, heavy_lane
from service.models import ImageFormat
from service.protocols import TileSource

#: (chain id, scenes fingerprint, z, x, y, tilesize, format): a tile in both caches.
TileKey = tuple[str, str, int, int, int, int, str]
#: Chains whose fingerprint is remembered per process.
FINGERPRINTS_KEPT = 4096


class _RenderAbandoned(Exception):
    """The request rendering a tile went away before rendering it: a waiter renders it."""


@dataclass
class TileProducer:
    """Produces encoded tiles of registered chains through two caches, with one render per
    tile at a time and a bounded number of renders.

    ``disk``: the second-level tile cache (None: memory only); ``render_concurrency``:
    most tiles rendered at once in this process (None: CPU count + 1); a scenes
    fingerprint is trusted for ``fingerprint_ttl`` seconds before it is recomputed;
    ``heavy_renders``: threads of the heavy tiles' lane (None: half the render slots).
    """

    chain_store: ChainStore
    renderer: TileSource
    cache: TileCache
    disk: DiskTileCache | None = None
    render_concurrency: int | None = None
    fingerprint_ttl: float = 60.0
    heavy_renders: int | None = None
    renders: int = field(default=0, init=False)
    rendering: int = field(default=0, init=False)
    max_rendering: int = field(default=0, init=False)
    shared_renders: int = field(default=0, init=False)
    heavy_waits: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.render_concurrency is None:
            self.render_concurrency = (os.cpu_count() or 1) + 1
        if self.render_concurrency < 1:
            raise ValueError(f"render_concurrency must be >= 1, got {self.render_concurrency}")
        # Threads of HTTP requests wait for a token BEFORE starting (the limiter), so
        # queued misses hold no thread; the semaphore also bounds the prefetch thread.
        self._limiter = anyio.CapacityLimiter(self.render_concurrency)
        # heavy tiles render in their own few, lower-priority threads (queued ones hold
        # none): the other slots stay free for light tiles whatever the heavy ones cost
        if self.heavy_renders is None:
            self.heavy_renders = max(1, self.render_concurrency // 2)
        self._heavy_lane = heavy_lane(self.heavy_renders)
        self._slots = threading.BoundedSemaphore(self.render_concurrency)
        self._lock = threading.Lock()
        self._inflight: dict[TileKey, Future] = {}
        self._fingerprints: OrderedDict[str, tuple[str, float, int]] = OrderedDict()

    # -- fingerprints ---------------------------------------------------------------------
    def cached_fingerprint(self, chain_id: str) -> str | None:
        """The chain's scenes fingerprint if known and fresh (no I/O: for the event loop)."""
        with self._lock:
            hit = self._fingerprints.get(chain_id)
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def is_heavy(self, chain_id: str, tilesize: int) -> bool:
        """True when a tile of the chain is estimated to cost more than ``HEAVY_WORK``
        (known once its fingerprint is: no I/O, for the event loop)."""
        with self._lock:
            hit = self._fingerprints.get(chain_id)
        return hit is not None and hit[2] * tilesize * tilesize > HEAVY_WORK

    def fingerprint(self, chain_id: str) -> str:
        """The fingerprint of the scenes the chain reads (NotFound for an unknown chain);
        it may query the catalog, so call it in a thread."""
        known = self.cached_fingerprint(chain_id)
        if known is not None:
            return known
        chain = self.chain_store.get(chain_id)
        value = self.renderer.fingerprint(chain)
        work = work_per_pixel(chain, dates=self._dates(chain))
        with self._lock:
            self._fingerprints[chain_id] = (value, time.monotonic() + self.fingerprint_ttl,
                                            work)
            self._fingerprints.move_to_end(chain_id)
            while len(self._fingerprints) > FINGERPRINTS_KEPT:
                self._fingerprints.popitem(last=False)
        return value

    def _dates(self, chain: Chain) -> int:
        """Dates a tile of a time-stack chain may stack (all its scenes'), else 1."""
        if not chain.source.times:
            return 1
        return len({s.datetime.date() if s.datetime else None
                    for s in self.renderer.scenes(chain).scenes})

    def invalidate(self) -> None:
        """Forget the scenes fingerprints and the renderer's scene cache: after an ingest in
        this process, its tiles show the new scenes at once rather than within the TTLs."""
        with self._lock:
            self._fingerprints.clear()
        self.renderer.invalidate()

    def key(self, chain_id: str, fingerprint: str, z: int, x: int, y: int, tilesize: int,
            fmt: ImageFormat) -> TileKey:
        return (chain_id, fingerprint, z, x, y, int(tilesize), fmt.value)

    # -- caches ---------------------------------------------------------------------------
    def lookup(self, key: TileKey) -> CachedTile | None:
        """The tile from memory, else from disk (then kept in memory too), else None."""
        entry = self.cache.get(key)
        if entry is None and self.disk is not None:
            entry = self.disk.get(DiskKey(*key))
            if entry is not None:
                self.cache.put(key, entry)
        return entry

    # -- rendering ------------------------------------------------------------------------
    def _render_key(self, key: TileKey) -> CachedTile:
        """Render and encode one tile (empty content: no data) in a render slot, then store
        it in both caches. Runs in a thread."""
        chain_id, _, z, x, y, tilesize, fmt = key
        chain = self.chain_store.get(chain_id)
        with self._slots:
            with self._lock:
                self.rendering += 1
                self.max_rendering = max(self.max_rendering, self.rendering)
            try:
                img = self.renderer.tile(chain, z, x, y, tilesize=tilesize)
                content = b"" if img is None else self.renderer.encode(img, fmt)
            finally:
                with self._lock:
                    self.rendering -= 1
                    self.renders += 1
        entry = CachedTile(content=content, etag=etag_of(content), notice=tile_notice(img))
        self.cache.put(key, entry)
        if self.disk is not None:
            self.disk.put(DiskKey(*key), entry)
        return entry

    def _claim(self, key: TileKey) -> tuple[Future, bool]:
        """The future of the render of ``key`` and whether the caller must produce it."""
        with self._lock:
            fut = self._inflight.get(key)
            if fut is not None:
                self.shared_renders += 1
                return fut, False
            fut = self._inflight[key] = Future()
            return fut, True

    def _produce(self, key: TileKey, fut: Future) -> CachedTile:
        """Render ``key`` and resolve its future (for the requests waiting on it)."""
        try:
            entry = self._render_key(key)
        except Exception as exc:
            fut.set_exception(exc)
            raise
        fut.set_result(entry)
        return entry

    def _release(self, key: TileKey, fut: Future) -> None:
        if not fut.done():
            fut.set_exception(_RenderAbandoned())
        with self._lock:
            if self._inflight.get(key) is fut:
                del self._inflight[key]

    async def fetch(self, key: TileKey) -> CachedTile:
        """The tile of a cache miss: rendered in a thread once a render slot is free (a
        heavy tile first waits for the heavy lane), or the result of the render of the same
        tile already under way. A heavy tile renders in the heavy lane's threads, also
        holding one of the render slots (``_slots``) while it runs."""
        heavy = self.is_heavy(key[0], key[5])
        while True:
            fut, mine = self._claim(key)
            if not mine:
                try:  # shield: a waiter going away must not cancel the shared render
                    return await asyncio.shield(asyncio.wrap_future(fut))
                except _RenderAbandoned:
                    continue
            try:
                if not heavy:
                    return await anyio.to_thread.run_sync(self._produce, key, fut,
                                                          limiter=self._limiter)
                self.heavy_waits += 1
                return await asyncio.wrap_future(self._heavy_lane.submit(self._produce, key,
                                                                         fut))
            finally:
                self._release(key, fut)

    def render(
        self, chain_id: str, z: int, x: int, y: int, fmt: ImageFormat, tilesize: int
    ) -> CachedTile:
        """One tile through both caches, rendered if neither has it (blocking: threads)."""
        key = self.key(chain_id, self.fingerprint(chain_id), z, x, y, tilesize, fmt)
        while True:
            entry = self.lookup(key)
            if entry is not None:
                return entry
            fut, mine = self._claim(key)
            if not mine:
                try:
                    return fut.result()
                except _RenderAbandoned:
                    continue
            try:
                return self._produce(key, fut)
            finally:
                self._release(key, fut)

    def warm(self, chain_id: str, z: int, x: int, y: int) -> bool:
        """Render a 256 px PNG tile into the caches unless they have it or it is being
        rendered (prefetching ahead of the browser); True if it was rendered."""
        key = self.key(chain_id, self.fingerprint(chain_id), z, x, y, 256, ImageFormat.png)
        if self.lookup(key) is not None:
            return False
        fut, mine = self._claim(key)
        if not mine:
            return False
        try:
            self._produce(key, fut)
        finally:
            self._release(key, fut)
        return True

    def render_stats(self) -> dict[str, int | None]:
        """Render counters for /healthz."""
        with self._lock:
            return {"concurrency": self.render_concurrency, "rendering": self.rendering,
                    "max_rendering": self.max_rendering, "renders": self.renders,
                    "shared": self.shared_renders, "heavy_lane": self.heavy_renders,
                    "heavy_renders": self.heavy_waits}


def tile_notice(img: ImageData | None) -> str:
    """The ``X-EOX-Notice`` text of a rendered tile: which scenes the cap left out."""
    scenes = ((img.metadata if img is not None else None) or {}).get("scenes")
    return Cap(scenes["total"], scenes["shown"]).notice() if scenes else ""
