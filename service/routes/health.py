"""GET /healthz: liveness plus what the service runs on (catalog, version, tile cache)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from fastapi import APIRouter

from engine.catalog.base import Catalog
from engine.security.redact import redact_values
from service.cache import TileCache


def package_version() -> str:
    """The installed eoexplorer version ("unknown" when run from an uninstalled tree)."""
    try:
        return metadata.version("eoexplorer")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class HealthRoutes:
    """The health endpoint. ``sections`` maps extra keys of the answer to callables, so
    later features (e.g. the sandbox) can report their capabilities without editing this."""

    catalog: Catalog
    cache: TileCache
    sections: dict[str, Callable[[], Any]] = field(default_factory=dict)
    router: APIRouter = field(init=False)

    def __post_init__(self) -> None:
        self.router = APIRouter(tags=["health"])
        version = package_version()

        @self.router.get("/healthz", summary="Service health, catalog, version and cache stats")
        def healthz() -> dict[str, Any]:
            answer: dict[str, Any] = {
                "status": "ok",
                "version": version,
                "catalog": {"kind": self.catalog.kind,
                            "location": str(self.catalog.location)},
                "cache": self.cache.stats(),
            }
            for key, section in self.sections.items():
                answer[key] = section()
            return redact_values(answer)  # sections report folders (disk cache, sandbox)
