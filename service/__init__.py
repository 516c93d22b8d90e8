"""The HTTP API over the engine (FastAPI): tiles of processing chains, catalog search."""

from typing import Any

__all__ = ["create_service"]


def __getattr__(name: str) -> Any:
    """``service.create_service``, imported on first use: ``service.tiles`` and the
    protocols stay importable without FastAPI."""
    if name == "create_service":
        from service.app import create_service

        return create_service
    raise AttributeError(f"module 'service' has no attribute {name!r}")
