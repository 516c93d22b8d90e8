"""Composition: build the engine and service objects from one Settings object."""

from __future__ import annotations

import logging
from functools import lru_cache

from app.settings import Settings
from engine.catalog import Catalog, open_catalog

log = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _catalog_for(location: str) -> Catalog:
    return open_catalog(location)


def catalog_from(settings: Settings) -> Catalog:
    """The process-wide catalog handle for these settings (opened once per location)."""
    return _catalog_for(settings.catalog)


def gdal_settings(settings: Settings) -> dict[str, str]:
    """GDAL's configuration for these settings (remote timeouts, retries, caches)."""
    from engine.storage import gdal_options

    return gdal_options(timeout_s=settings.remote_timeout_s, retries=settings.remote_retries,
                        cache_mb=settings.remote_cache_mb,
                        handle_cache_mb=settings.remote_file_cache_mb)


def build_service(settings: Settings):
    """The tile service (FastAPI app) over the configured catalog."""
    from app.auth import access_policy
    from engine.chain.store import ChainStore
    from engine.storage import configure_gdal
    from service import create_service
    from service.diskcache import DiskTileCache

    settings.chain_db.parent.mkdir(parents=True, exist_ok=True)
    configure_gdal(gdal_settings(settings), cache_mb=settings.gdal_cache_mb)
    sandbox = configure_sandbox(settings)
    disk = (DiskTileCache(settings.data_dir / "tile-cache", settings.tile_disk_cache_mb * 2**20)
            if settings.tile_disk_cache_mb else None)
    service = create_service(
        catalog_from(settings),
        chain_store=ChainStore(settings.chain_db),
        cache_bytes=settings.tile_cache_mb * 2**20,
        cors_origins=tuple(settings.cors_origins),
        max_body_bytes=settings.max_body_bytes,
        root_path=settings.prefix,
        access=access_policy(settings),
        disk_cache=disk,
        render_concurrency=settings.render_concurrency,
    )
    service.state.health_sections["sandbox"] = sandbox
    service.state.extract_max_pixels = settings.extract_max_pixels  # ExtractRoutes.limit
    return service


def configure_sandbox(settings: Settings):
    """Plug the sandbox into chains per the settings; returns the /healthz reporter.

    The worker pool itself starts lazily, on the first user-function call (or the first
    /healthz), so processes that never run user code never spawn workers.
    """
    from engine.chain import set_executor

    if not settings.functions_enabled:
        set_executor(None)
        return lambda: {"available": False, "reason": "disabled by EOX_FUNCTIONS_ENABLED"}

    from engine.sandbox import capabilities, configure, install_executor

    configure(
        size=settings.sandbox_workers,
        timeout_s=settings.sandbox_timeout_s,
        memory_mb=settings.sandbox_memory_mb,
        calls_per_process=settings.sandbox_calls_per_process,
        allowed_imports=tuple(settings.sandbox_imports),
    )
    install_executor()
    return capabilities
