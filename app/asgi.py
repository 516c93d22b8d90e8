"""ASGI entry points for uvicorn (``--factory``), reading Settings from the environment."""

from __future__ import annotations

from app.settings import Settings
from app.wiring import build_service


def service_app():
    """The tile service alone, as `eoexplorer tiles` runs it in each worker process."""
    return build_service(Settings())
