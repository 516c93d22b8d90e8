"""Process-wide resources shared by every browser session: built once, never mutated.

Per-session state lives in ``components.state.AppState``; this module only caches the
expensive handles (catalog, chain store, renderer, the tile service) per settings.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from app.settings import Settings
from components.backend import Backend

_lock = threading.Lock()
_cache: dict[str, Resources] = {}


@dataclass(frozen=True)
class Resources:
    """The tile service (FastAPI) and the backend the UI talks to, over the same objects."""

    service: Any
    backend: Backend


def resources(settings: Settings) -> Resources:
    """The process's resources for ``settings`` (built on first use, then reused)."""
    key = settings.model_dump_json()
    with _lock:
        if key not in _cache:
            from app.wiring import build_service

            service = build_service(settings)
            backend = Backend(
                catalog=service.state.catalog,
                chain_store=service.state.chain_store,
                renderer=service.state.renderer,
                api_base="api",
                basemap=settings.basemap,
                functions_enabled=False,
            )
            _cache[key] = Resources(service=service, backend=backend)
        return _cache[key]
