"""Process-wide resources shared by every browser session: built once, never mutated.

Per-session state lives in ``components.state.AppState``; this module only caches the
expensive handles (catalog, chain store, renderer, the tile service) per settings.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from app.settings import Settings
from app.warm import TileWarmer
from components.backend import Backend
from engine.errors import EOXError

log = logging.getLogger(__name__)

_lock = threading.Lock()
_cache: dict[str, Resources] = {}


@dataclass(frozen=True)
class Resources:
    """The tile service (FastAPI) and the backend the UI talks to, over the same objects."""

    service: Any
    backend: Backend
    warmer: TileWarmer


def resources(settings: Settings) -> Resources:
    """The process's resources for ``settings`` (built on first use, then reused)."""
    key = settings.model_dump_json()
    with _lock:
        if key not in _cache:
            from app.wiring import build_service

            service = build_service(settings)
            warmer = TileWarmer(service.state.tile_producer.warm)
            backend = backend_over(service, settings, api_base="api", prefetch=warmer.submit)
            _cache[key] = Resources(service=service, backend=backend, warmer=warmer)
        return _cache[key]


def backend_over(service: Any, settings: Settings, *, api_base: str,
                 prefetch: Any = None) -> Backend:
    """The UI's Backend over a tile service built in this process (``app.wiring``), with
    the settings' limits; ``api_base``: the service's ``/api`` as the page reaches it."""
    from app.auth import dashboard_batch_pixels

    return Backend(
        catalog=service.state.catalog,
        chain_store=service.state.chain_store,
        renderer=service.state.renderer,
        api_base=api_base,
        basemap=settings.basemap,
        functions_enabled=settings.functions_enabled,
        prefetch=prefetch,
        raster_dirs=tuple(settings.raster_folders),
        batch_dir=settings.data_dir / "batch",
        dask_scheduler=settings.dask_scheduler,
        batch_max_pixels=dashboard_batch_pixels(settings),
        extract_max_pixels=settings.extract_max_pixels,
    )


def warm_first_view(res: Resources) -> list[tuple[int, int, int]]:
    """Prepare what every first open shows: find the newest scene, register its chain and
    its presets' chains, and render their tiles for the usual map size into the cache.
    Returns the z/x/y tiles of that first view (empty when there is none)."""
    from components.state import AppState
    from components.tilemath import GUESS_SIZE, fit, lonlat_box, visible_tiles

    state = AppState(backend=res.backend)
    try:
        if not state.open_latest() or state.view_request is None:
            return []
    except EOXError as exc:
        log.warning("first view not prepared: %s", exc)
        return []
    state.viewport = lonlat_box(fit(state.view_request, GUESS_SIZE))
    state.prefetch_presets(include_current=True, group="first-view")
    return visible_tiles(state.viewport, GUESS_SIZE)


def warm_process(res: Resources) -> list[tuple[int, int, int]]:
    """What a server does once, in the background, before users need it: the first view's
    tiles, then the offline gazetteer and base map (place suggestions, land and names), which
    take seconds to load and would otherwise stall the first session that types a place."""
    from engine import basemap, gazetteer

    tiles = warm_first_view(res)
    gazetteer.load()
    basemap.load()
    for z, x, y in tiles:  # the first view's base map: drawn once, kept in memory, so the
        basemap.render_tile(z, x, y)  # first page's 30 base tiles do not delay its scene tiles
    return tiles
