"""The engine's part of the settings: which catalog ``Collection(name)`` opens and which tile
service ``chain.export_html(path)`` points at.

``app.settings.Settings`` extends :class:`EngineSettings`, so these fields are declared once
and read from the same ``EOX_`` variables whether a script imports only ``engine`` (a
notebook next to a server configured with ``EOX_CATALOG``) or runs under the CLI. The engine
never imports ``app``; app tells it which tile service it started
(:func:`note_running_service`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine import paths

#: Where ``eoexplorer serve`` listens by default (``EOX_ADDRESS``/``EOX_PORT`` unset).
DEFAULT_SERVICE_URL = "http://127.0.0.1:5006"


class EngineSettings(BaseSettings):
    """Settings the Python API needs; every field can be set as ``EOX_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="EOX_", extra="ignore")

    catalog: str = Field(
        default_factory=lambda: str(paths.default_catalog_path()),
        description="Embedded catalog file (SQLite) or the URL of a STAC API.",
    )
    data_dir: Path = Field(
        default_factory=lambda: paths.default_data_dir(),
        description="Where converted COGs, demo downloads and local state live.",
    )
    service_url: str | None = Field(
        None, description="Base URL of a running tile service (http://host:port[/prefix]): "
        "where `panel serve app/dashboard.py` pages and `chain.export_html(path)` fetch "
        "tiles; None = `panel serve` and notebooks start one in the background, "
        "export_html uses the one this process runs, else " + DEFAULT_SERVICE_URL + ".",
    )


_lock = threading.Lock()
_running_service: str | None = None


def current() -> EngineSettings:
    """The settings as the environment gives them now (``EOX_CATALOG``...)."""
    return EngineSettings()


def note_running_service(url: str | None) -> None:
    """Record the tile service this process started (a notebook ``Map``'s), or forget it."""
    global _running_service
    with _lock:
        _running_service = url


def default_service_url() -> str:
    """The tile service URL used when none is passed: ``EOX_SERVICE_URL`` (or app's
    settings), else the service this process started, else ``DEFAULT_SERVICE_URL``."""
    configured = current().service_url
    if configured:
        return configured
    with _lock:
        running = _running_service
    return running or DEFAULT_SERVICE_URL
