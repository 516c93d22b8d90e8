"""The HTTP API over the engine (FastAPI): tiles of processing chains, catalog search."""

from service.app import create_service

__all__ = ["create_service"]
