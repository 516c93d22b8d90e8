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


def build_service(settings: Settings):
    """The tile service (FastAPI app) over the configured catalog."""
    from app.auth import access_policy
    from engine.chain.store import ChainStore
    from service import create_service

    settings.chain_db.parent.mkdir(parents=True, exist_ok=True)
    return create_service(
        catalog_from(settings),
        chain_store=ChainStore(settings.chain_db),
        cache_bytes=settings.tile_cache_mb * 2**20,
        cors_origins=tuple(settings.cors_origins),
        max_body_bytes=settings.max_body_bytes,
        root_path=settings.prefix,
        access=access_policy(settings),
    )
