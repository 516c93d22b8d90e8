"""The tile service factory: a FastAPI app over a catalog, a chain store and a renderer.

No settings are read here; ``app/`` builds the service from its Settings and passes values.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from engine.catalog.base import Catalog
from engine.chain.store import ChainStore
from engine.extract import MAX_PIXELS as MAX_EXTRACT_PIXELS
from service.cache import TileCache
from service.diskcache import DiskTileCache
from service.errors import add_exception_handlers
from service.middleware import GuardMiddleware, HostGuardMiddleware, SecurityHeadersMiddleware
from service.protocols import Renderer
from service.routes import CatalogRoutes, ChainRoutes, ExtractRoutes, HealthRoutes
from service.routes.basemap import BasemapRoutes
from service.routes.health import package_version
from service.routes.profile import TimeRoutes
from service.security import AccessPolicy, RateLimiter, SecurityMiddleware
from service.tiles import TileProducer

_trimmer: threading.Thread | None = None
_trimmer_lock = threading.Lock()
M_ARENA_MAX = -8  # glibc mallopt parameter


def tune_malloc(*, trim_s: float = 30.0, arenas: int = 2) -> bool:
    """Keep glibc's malloc from holding memory the process freed (once per process; False
    where there is no glibc, as on musl or macOS).

    Tiles, PNG buffers and GDAL blocks of 50-500 KiB are allocated and freed by many
    threads all the time; glibc gives each thread an arena (up to 8 per CPU) and keeps the
    freed pages of each, so a soak's RSS crept up ~22 MiB in 3.5 minutes with the bytes
    in use flat (issue #10). ``arenas`` caps the arenas made from now on (``mallopt
    M_ARENA_MAX``; a MALLOC_ARENA_MAX in the environment, read by glibc itself, wins;
    0: glibc's default); every ``trim_s`` seconds a daemon thread hands free pages back
    to the OS (``malloc_trim(0)``, a few ms; 0: never).
    """
    global _trimmer
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim, mallopt = (libc.malloc_trim, libc.mallopt) if libc else (None, None)
    except (OSError, AttributeError):  # not glibc
        trim = mallopt = None
    if trim is None or mallopt is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]

    def loop() -> None:
        while True:
            time.sleep(trim_s)
            trim(0)

    with _trimmer_lock:
        if arenas > 0 and "MALLOC_ARENA_MAX" not in os.environ:  # glibc's own variable
            mallopt(M_ARENA_MAX, arenas)
        if trim_s > 0 and (_trimmer is None or not _trimmer.is_alive()):
            _trimmer = threading.Thread(target=loop, name="eox-malloc-trim", daemon=True)
            _trimmer.start()
    return True


def create_service(
    catalog: Catalog,
    *,
    chain_store: ChainStore,
    renderer: Renderer | None = None,
    cache_bytes: int = 256 * 2**20,
    cors_origins: Sequence[str] = ("*",),
    max_body_bytes: int = 1_000_000,
    root_path: str = "",
    access: AccessPolicy | None = None,
    disk_cache: DiskTileCache | None = None,
    render_concurrency: int | None = None,
    trim_memory_s: float = 30.0,
    malloc_arenas: int = 2,
    allowed_hosts: Sequence[str] | None = None,
    frame_ancestors: str = "'self'",
    extract_max_pixels: int = MAX_EXTRACT_PIXELS,
) -> FastAPI:
    """Build the tile service.

    Args:
        catalog: the catalog chains and searches read from.
        chain_store: where registered chains persist (tile URLs survive restarts).
        renderer: an ``engine.render.TileRenderer``; one over ``catalog`` when None.
        cache_bytes: bound of the in-memory tile cache (0 disables it).
        cors_origins: origins allowed to GET from a browser.
        max_body_bytes: larger request bodies are refused with 413.
        root_path: URL prefix when served behind a proxy.
        access: API keys for writes and per-client rate limits (``service.security``);
            None: open, as on a loopback address.
        disk_cache: a tile cache on disk shared by the host's workers (behind the memory
            one); None: memory only.
        render_concurrency: most tiles rendered at once by this process; None: CPU count
            + 1 (requests beyond wait without holding a thread; cache hits never wait).
        trim_memory_s: period of returning memory freed in malloc's arenas to the OS;
            0: never. ``malloc_arenas``: most glibc malloc arenas (``tune_malloc``).
        allowed_hosts: Host header names answered (``service.middleware.HostGuardMiddleware``);
            None: any. ``frame_ancestors``: who may frame the service's HTML pages.
        extract_max_pixels: largest ``POST .../extract`` answer, in output pixels.

    Returns:
        The FastAPI application; ``app.state`` holds ``catalog``, ``chain_store``,
        ``renderer``, ``tile_producer``, ``tile_cache`` and ``health_sections`` (extra
        /healthz keys).
    """
    if renderer is None:
        from engine.render import TileRenderer

        renderer = TileRenderer(catalog)
    cache = TileCache(cache_bytes)
    app = FastAPI(
        title="EO Explorer tile service",
        version=package_version(),
        description=(
            "Register a processing chain over the STAC catalog, then fetch its Web Mercator "
            "XYZ tiles, TileJSON, point values and statistics; search the catalog."
        ),
        root_path=root_path,
    )
    add_exception_handlers(app)
    app.add_middleware(GuardMiddleware, max_body_bytes=max_body_bytes)
    access = access or AccessPolicy()
    limiter = RateLimiter(read_per_minute=access.read_per_minute,
                          write_per_minute=access.write_per_minute,
                          max_clients=access.max_clients)
    app.add_middleware(SecurityMiddleware, policy=access, limiter=limiter)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(cors_origins),
        allow_methods=["GET", "HEAD"],
        allow_headers=["*"],
        expose_headers=["ETag", "X-EOX-Notice"],
        max_age=3600,
    )
    app.add_middleware(SecurityHeadersMiddleware, frame_ancestors=frame_ancestors)
    if allowed_hosts is not None:  # outermost: a refused host reaches nothing else
        app.add_middleware(HostGuardMiddleware, allowed=tuple(allowed_hosts))

    health = HealthRoutes(catalog=catalog, cache=cache)
    app.include_router(health.router)
    app.include_router(CatalogRoutes(catalog=catalog).router)
    tiles = TileProducer(chain_store=chain_store, renderer=renderer, cache=cache,
                         disk=disk_cache, render_concurrency=render_concurrency)
    chains = ChainRoutes(catalog=catalog, chain_store=chain_store, tiles=tiles, reader=renderer)
    health.sections["render"] = tiles.render_stats
    health.sections["handles"] = renderer.handles.stats  # open datasets: watched in soaks
    if disk_cache is not None:
        health.sections["disk_cache"] = disk_cache.stats
    app.include_router(chains.router)
    app.include_router(ExtractRoutes(catalog=catalog, chain_store=chain_store,
                                     max_pixels=extract_max_pixels).router)
    app.include_router(TimeRoutes(catalog=catalog, renderer=renderer).router)
    app.include_router(BasemapRoutes().router)

    app.state.catalog = catalog
    app.state.chain_store = chain_store
    app.state.renderer = renderer
    app.state.tile_producer = tiles  # TileProducer.warm: the dashboard prefetches tiles
    app.state.tile_cache = cache
    app.state.health_sections = health.sections
    app.state.access = access
    app.state.rate_limiter = limiter
    health.sections["access"] = lambda: {**access.describe(), **limiter.stats()}
    health.sections["chain_cache"] = chain_store.cache_stats
    tune_malloc(trim_s=trim_memory_s, arenas=malloc_arenas)
    return app
