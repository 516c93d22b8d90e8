"""STAC catalogs: the interface, the embedded SQLite backend, and how to open one.

``open_catalog`` picks the backend from the location (an http(s) URL is a STAC API,
anything else an embedded SQLite file); a process default serves notebooks and scripts.
"""

from __future__ import annotations

import functools
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
from engine.catalog.sqlite import SQLiteCatalog
from engine.catalog.sqlsearch import PROMOTED

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
        if catalog is None:
            _catalog_at.cache_clear()


def get_default_catalog() -> Catalog:
    """The process default catalog: the one set with :func:`set_default_catalog`, else the
    settings' (``EOX_CATALOG``, as the CLI reads it; ``engine.config``), opened once per
    location, so changing ``EOX_CATALOG`` in a running notebook takes effect."""
    from engine.config import current

    with _default_lock:
        if _default is not None:
            return _default
        return _catalog_at(current().catalog)


@functools.lru_cache(maxsize=8)
def _catalog_at(location: str) -> Catalog:
    return open_catalog(location)
