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
    configure_limits(settings)
    sandbox = configure_sandbox(settings)
    disk = (DiskTileCache(settings.data_dir / "tile-cache", settings.tile_disk_cache_mb * 2**20)
            if settings.tile_disk_cache_mb else None)
    from engine.render import TileRenderer

    catalog = catalog_from(settings)
    service = create_service(
        catalog,
        renderer=TileRenderer(catalog, max_items=settings.tile_max_scenes,
                              max_preview_items=settings.tile_max_preview_scenes,
                              preview_cache_mb=settings.preview_cache_mb),
        chain_store=ChainStore(settings.chain_db, cache_bytes=settings.chain_cache_mb * 2**20),
        cache_bytes=settings.tile_cache_mb * 2**20,
        cors_origins=tuple(settings.cors_origins),
        max_body_bytes=settings.max_body_bytes,
        root_path=settings.prefix,
        access=access_policy(settings),
        disk_cache=disk,
        render_concurrency=settings.render_concurrency,
        allowed_hosts=allowed_hosts(settings),
        extract_max_pixels=settings.extract_max_pixels,
    )
    service.state.health_sections["sandbox"] = sandbox
    return service


def configure_limits(settings: Settings) -> None:
    """The process-wide chain cost budget and path display, from the settings (the
    dashboard, the service and batch runs of this process all use them)."""
    from engine.chain.budget import ChainBudget, set_budget
    from engine.security.redact import set_expose_paths

    set_budget(ChainBudget(
        max_steps=settings.chain_max_steps,
        max_expression_parts=settings.chain_max_expression_parts,
        max_expression_terms=settings.chain_max_expression_terms,
        max_bands_x_dates=settings.chain_max_bands_x_dates,
        max_tile_mb=settings.tile_max_mb,
    ))
    set_expose_paths(settings.expose_paths)


def allowed_hosts(settings: Settings) -> list[str]:
    """Host names the server answers: ``allowed_hosts``, else the loopback names plus the
    bound address (a wildcard address such as 0.0.0.0 names no host)."""
    if settings.allowed_hosts:
        return list(settings.allowed_hosts)
    from service.middleware import LOOPBACK_HOSTS

    wildcard = settings.address.strip() in ("", "0.0.0.0", "::")  # compared, not bound
    if wildcard:
        log.warning("binding every interface (%r) but answering only the host names %s: "
                    "set EOX_ALLOWED_HOSTS to the names clients use", settings.address,
                    ", ".join(LOOPBACK_HOSTS))
    return list(dict.fromkeys([*LOOPBACK_HOSTS, *([] if wildcard else [settings.address])]))


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
