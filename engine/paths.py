"""Default locations on disk, shared by the engine's defaults and app's Settings."""

from __future__ import annotations

from pathlib import Path

import platformdirs


def default_data_dir() -> Path:
    """Where the catalog database, converted COGs and demo data live by default."""
    return Path(platformdirs.user_data_dir("eoexplorer", appauthor=False))


def default_catalog_path() -> Path:
    """The embedded catalog database used when none is configured."""
    return default_data_dir() / "catalog.sqlite"
