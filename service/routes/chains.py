"""Chain endpoints: register a chain, then its XYZ tiles, TileJSON, point values, statistics.

A chain id is the hash of the chain's canonical JSON, so its tiles never change meaning
(as long as its scenes do not: cache keys also carry the renderer's fingerprint of them):
they are served with a strong ETag and ``Cache-Control: immutable``, and kept in an
in-memory LRU cache bounded in bytes, in front of an optional disk cache shared by the
processes of the host. A hit in either is answered on the event loop without a thread hop.
Rendering is synchronous (GDAL, numpy): misses run in threads, at most
``render_concurrency`` at once (more only queue for the CPU and stretch every request's
latency), and concurrent requests for the same tile share one render.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from engine.catalog.base import Catalog
from engine.chain import Chain
from engine.chain.bands import check_bands, collection_band_names
from engine.chain.budget import work_per_pixel
from engine.chain.executor import get_executor
from engine.chain.steps import Execute
from engine.chain.store import ChainStore
from engine.errors import ChainError, InvalidInput, SandboxError, UnknownCollection
from engine.render.cap import Cap
from engine.render.renderer import HISTOGRAM_BINS, MAX_HISTOGRAM_BINS, PERCENTILES
from service.cache import CachedTile, TileCache
from service.diskcache import DiskKey, DiskTileCache, etag_of
from service.lanes import EMPTY_PNG, HEAVY_WORK, heavy_lane
from service.models import (
    ChainCreated,
    ImageFormat,
    StatisticsBody,
    TileSize,
    check_tile,
    geometry_of,
    jsonable,
)

#: Tiles of a chain never change: browsers and proxies may keep them for a year.
IMMUTABLE = "public, max-age=31536000, immutable"
#: Response header saying what a tile leaves out (scenes beyond the per-tile cap).
NOTICE_HEADER = "X-EOX-Notice"

#: (chain id, scenes fingerprint, z, x, y, tilesize, format): a tile in both caches.
TileKey = tuple[str, str, int, int, int, int, str]
#: Fingerprint of renderers that have no ``fingerprint(chain)`` (test doubles).
NO_FINGERPRINT = "any"
#: Chains whose fingerprint is remembered per process.
FINGERPRINTS_KEPT = 4096


class _RenderAbandoned(Exception):
    """The request rendering a tile went away before rendering it: a waiter renders it."""


ChainId = Path(description="Chain id returned by POST /api/chains", min_length=1, max_length=64)

CHAIN_EXAMPLE = {
    "source": {"collection": "sentinel-2-l2a"},
    "steps": [{"name": "bands", "bands": ["B04", "B03", "B02"]},
              {"name": "scale", "min": [0], "max": [3000]}],
}


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _etag_matches(header: str | None, etag: str) -> bool:
    """True if an If-None-Match header names ``etag`` (weak comparison, as RFC 9110 says)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


@dataclass
class ChainRoutes:
    """Routes under ``/api/chains`` over a catalog, a chain store, a renderer and caches.

    ``disk``: the second-level tile cache (None: memory only); ``render_concurrency``:
    most tiles rendered at once in this process (None: CPU count + 1); a scenes
    fingerprint is trusted for ``fingerprint_ttl`` seconds before it is recomputed.
    """

    catalog: Catalog
    chain_store: ChainStore
    renderer: Any  # engine.render.TileRenderer or anything with the same methods
    cache: TileCache
    disk: DiskTileCache | None = None
    render_concurrency: int | None = None
    fingerprint_ttl: float = 60.0
    heavy_renders: int | None = None
    router: APIRouter = field(init=False)

    def __post_init__(self) -> None:
        self.router = APIRouter(prefix="/api/chains", tags=["chains"])
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
        self.heavy_waits = 0
        self._slots = threading.BoundedSemaphore(self.render_concurrency)
        self._lock = threading.Lock()
        self._inflight: dict[TileKey, Future] = {}
        self._fingerprints: OrderedDict[str, tuple[str, float, int]] = OrderedDict()
        self.renders = 0
        self.rendering = 0
        self.max_rendering = 0
        self.shared_renders = 0
        self._register()

    def check_chain(self, chain: Chain) -> None:
        """ChainError unless the chain's collection exists and has the bands it reads, so a
        bad chain is refused when registered rather than on every tile."""
        name = chain.source.collection
        try:
            collection = self.catalog.collection(name)
        except UnknownCollection as exc:
            raise ChainError(
                f"source.collection: unknown collection {name!r}", choices=exc.choices or ()
            ) from None
        known = collection_band_names(collection)
        if known:
            check_bands(chain.read_bands(), known, collection=name)
        else:
            chain.read_bands()
        if get_executor() is None and any(isinstance(s, Execute) for s in chain.steps):
            raise SandboxError("server-side functions are disabled on this server "
                               "(EOX_FUNCTIONS_ENABLED=false): a chain with an execute step "
                               "cannot be registered")

    # -- caches ---------------------------------------------------------------------------
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
        of = getattr(self.renderer, "fingerprint", None)
        value = of(chain) if of is not None else NO_FINGERPRINT
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
        scenes = getattr(self.renderer, "scenes", None)
        if not chain.source.times or scenes is None:
            return 1
        return len({s.datetime.date() if s.datetime else None for s in scenes(chain).scenes})

    def invalidate(self) -> None:
        """Forget the scenes fingerprints and the renderer's scene cache: after an ingest in
        this process, its tiles show the new scenes at once rather than within the TTLs."""
        with self._lock:
            self._fingerprints.clear()
        forget = getattr(self.renderer, "invalidate", None)
        if forget is not None:
            forget()

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
        key = (chain_id, self.fingerprint(chain_id), z, x, y, tilesize, fmt.value)
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
        key = (chain_id, self.fingerprint(chain_id), z, x, y, 256, ImageFormat.png.value)
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

    def tile_response(self, entry: CachedTile, fmt: ImageFormat, request: Request, *,
                      transparent: bool = False) -> Response:
        """200 with the image, 204 when the tile has no data (or, with ``transparent``, a
        1 px transparent PNG), 304 when the client has it."""
        headers = {"ETag": entry.etag, "Cache-Control": IMMUTABLE}
        if entry.notice:
            headers[NOTICE_HEADER] = entry.notice
        if _etag_matches(request.headers.get("if-none-match"), entry.etag):
            return Response(status_code=304, headers=headers)
        if not entry.content and transparent and fmt == ImageFormat.png:
            return Response(EMPTY_PNG, media_type=fmt.media_type, headers=headers)
        if not entry.content:
            return Response(status_code=204, headers=headers)
        return Response(entry.content, media_type=fmt.media_type, headers=headers)

    # -- routes -------------------------------------------------------------------------
    def _register(self) -> None:
        router = self.router

        @router.post(
            "",
            status_code=201,
            response_model=ChainCreated,
            summary="Register a chain; answers its id and tile URL template",
            responses={
                413: {"description": "Body too large"},
                422: {"description": "Invalid chain"},
            },
        )
        def create_chain(
            request: Request,
            body: dict[str, Any] = Body(..., examples=[CHAIN_EXAMPLE]),
        ) -> JSONResponse:
            chain = Chain.from_json(body)
            self.check_chain(chain)
            chain_id = self.chain_store.put(chain)
            base = f"{_base_url(request)}/api/chains/{chain_id}"
            created = ChainCreated(
                id=chain_id,
                tiles=base + "/tiles/{z}/{x}/{y}.png",
                tilejson=base + "/tilejson.json",
            )
            return JSONResponse(created.model_dump(), status_code=201)

        @router.get("/{chain_id}", summary="The chain JSON of a registered chain")
        def get_chain(chain_id: str = ChainId) -> dict[str, Any]:
            return self.chain_store.get(chain_id).model_dump(mode="json")

        @router.get(
            "/{chain_id}/tiles/{z}/{x}/{y}.{fmt}",
            summary="One Web Mercator XYZ tile of the chain",
            response_class=Response,
            responses={
                200: {"content": {"image/png": {}, "image/webp": {}, "image/jpeg": {}}},
                204: {"description": "No data in this tile (outside every item's footprint)"},
                304: {"description": "Not modified (If-None-Match matched the ETag)"},
                400: {"description": "z/x/y outside the grid"},
                404: {"description": "Unknown chain id"},
                424: {"description": "A source file of the catalog is missing or corrupt"},
            },
        )
        async def tile(
            request: Request,
            chain_id: str = ChainId,
            z: int = Path(description="Zoom level"),
            x: int = Path(description="Column"),
            y: int = Path(description="Row"),
            fmt: ImageFormat = Path(description="Image format"),
            tilesize: TileSize = Query(TileSize.s256, description="Tile edge in pixels"),
            empty: str = Query("204", pattern="^(204|transparent)$",
                               description="A tile without data: 204 No Content, or (png "
                               "only) a transparent image, for clients that take a 204 "
                               "for a failed image and retry it"),
        ) -> Response:
            check_tile(z, x, y)
            fingerprint = self.cached_fingerprint(chain_id)
            if fingerprint is None:
                fingerprint = await run_in_threadpool(self.fingerprint, chain_id)
            key = (chain_id, fingerprint, z, x, y, int(tilesize), fmt.value)
            entry = self.lookup(key)  # disk reads of small files are fast enough here
            if entry is None:
                entry = await self.fetch(key)
            return self.tile_response(entry, fmt, request, transparent=empty == "transparent")

        @router.get("/{chain_id}/tilejson.json", summary="TileJSON 3.0 document of the chain")
        def tilejson(
            request: Request,
            chain_id: str = ChainId,
            tile_format: ImageFormat = Query(
                ImageFormat.png, description="Format of the tile URLs"
            ),
            tilesize: TileSize = Query(TileSize.s256, description="Tile edge in pixels"),
        ) -> dict[str, Any]:
            chain = self.chain_store.get(chain_id)
            info = self.renderer.info(chain)
            url = (f"{_base_url(request)}/api/chains/{chain_id}/tiles/{{z}}/{{x}}/{{y}}"
                   f".{tile_format.value}")
            if tilesize != TileSize.s256:
                url += f"?tilesize={int(tilesize)}"
            west, south, east, north = info["bounds"]
            minzoom, maxzoom = int(info["minzoom"]), int(info["maxzoom"])
            return jsonable(
                {
                    "tilejson": "3.0.0",
                    "name": chain_id,
                    "description": info.get("description", ""),
                    "tiles": [url],
                    "minzoom": minzoom,
                    "maxzoom": maxzoom,
                    "bounds": [west, south, east, north],
                    "center": [(west + east) / 2, (south + north) / 2, minzoom],
                    "scheme": "xyz",
                    "tilesize": int(tilesize),
                    "bands": list(info.get("band_names") or []),
                }
            )

        @router.get("/{chain_id}/point", summary="Values of every output band at a point")
        def point(
            chain_id: str = ChainId,
            lon: float = Query(ge=-180, le=180, description="Longitude (WGS84)"),
            lat: float = Query(ge=-90, le=90, description="Latitude (WGS84)"),
        ) -> dict[str, Any]:
            chain = self.chain_store.get(chain_id)
            return jsonable(self.renderer.point(chain, lon, lat))

        @router.post("/{chain_id}/statistics", summary="Per-band statistics inside a polygon")
        def statistics(
            chain_id: str = ChainId,
            body: StatisticsBody = Body(..., description="GeoJSON Polygon/MultiPolygon or Feature"),
            bins: int = Query(HISTOGRAM_BINS, ge=1, le=MAX_HISTOGRAM_BINS,
                              description="Histogram bins between the band's min and max"),
            p: str | None = Query(None, max_length=200, examples=["2,98"],
                                  description="Comma-separated percentiles in 0..100 "
                                  f"(default {','.join(map(str, PERCENTILES))})"),
        ) -> dict[str, Any]:
            percentiles = _percentiles(p)
            chain = self.chain_store.get(chain_id)
            return jsonable(self.renderer.statistics(chain, geometry_of(body), bins=bins,
                                                     percentiles=percentiles))


def tile_notice(img: Any) -> str:
    """The ``X-EOX-Notice`` text of a rendered tile: which scenes the cap left out."""
    scenes = (getattr(img, "metadata", None) or {}).get("scenes")
    return Cap(scenes["total"], scenes["shown"]).notice() if scenes else ""


def _percentiles(text: str | None) -> tuple[float, ...]:
    """The ``p`` query parameter as numbers in 0..100 (InvalidInput otherwise)."""
    if text is None or not text.strip():
        return PERCENTILES
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InvalidInput(f"p: expected comma-separated numbers, got {text!r}") from None
    if len(values) > 20 or not all(0 <= v <= 100 for v in values):
        raise InvalidInput(f"p: at most 20 percentiles, each in 0..100, got {text!r}")
    return values
