"""STAC catalogs: the interface, the embedded SQLite backend, and how to open one.

``open_catalog`` picks the backend from the location (an http(s) URL is a STAC API,
anything else an embedded SQLite file); a process default serves notebooks and scripts.
"""

from __future__ import annotations

import threading
from pathlib import Path

from engine.catalog.base import (
    CORE_PROPERTIES,
    OPERATORS,
    Catalog,
    Filter,
    IngestReport,
    Query,
    sort_key_names,
)
from engine.catalog.sqlite import PROMOTED, SQLiteCatalog

__all__ = [
    "CORE_PROPERTIES",
    "OPERATORS",
    "PROMOTED",
    "Catalog",
    "Filter",
    "IngestReport",
    "Query",
    "SQLiteCatalog",
    "get_default_catalog",
    "open_catalog",
    "set_default_catalog",
    "sort_key_names",
]

_default: Catalog | None = None
_default_lock = threading.Lock()


def open_catalog(location: str | Path) -> Catalog:
    """Open a catalog: an http(s) URL is a STAC API, anything else an embedded SQLite file
    (its folder is created).

    Args:
        location: a STAC API URL or a path to the catalog database.
    """
    text = str(location)
    if text.lower().startswith(("http://", "https://")):
        from engine.catalog.stacapi import StacApiCatalog

        return StacApiCatalog(text)
    path = Path(text).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteCatalog(path)


def set_default_catalog(catalog: Catalog | None) -> None:
    """Set (or with ``None`` reset) the catalog used when none is given, e.g. by Collection."""
    global _default
    with _default_lock:
        _default = catalog


def get_default_catalog() -> Catalog:
    """The process default catalog; opens ``engine.paths.default_catalog_path()`` if unset."""
    global _default
    with _default_lock:
        if _default is None:
            from engine.paths import default_catalog_path

            _default = open_catalog(default_catalog_path())
        return _default
