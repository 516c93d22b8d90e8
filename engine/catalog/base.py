"""The catalog interface: a normalized query and the abstract backend.

Every backend (embedded SQLite, STAC API) answers the same :class:`Query`, so the query
API (:class:`engine.collection.Collection`), the service and the UI never care which
backend is behind them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Self

import pystac

from engine.errors import NotFound

#: Comparison operators accepted by ``Collection.filter`` (and the service's search).
OPERATORS: tuple[str, ...] = ("=", "!=", "<", "<=", ">", ">=", "in")

#: Properties every backend can filter and sort on without a per-collection check.
CORE_PROPERTIES: tuple[str, ...] = ("id", "datetime", "collection")


@dataclass(frozen=True)
class Filter:
    """One property comparison: ``prop op value`` (``in`` takes a tuple of values)."""

    prop: str
    op: str
    value: Any


@dataclass(frozen=True)
class Query:
    """A normalized catalog query. Built by :class:`Collection`; backends only read it.

    All spatial values are WGS84 lon/lat. ``start``/``end`` are timezone-aware UTC
    datetimes, inclusive. ``intersects`` is a GeoJSON geometry dict.
    """

    collection: str
    bbox: tuple[float, float, float, float] | None = None
    intersects: dict | None = None
    start: datetime | None = None
    end: datetime | None = None
    filters: tuple[Filter, ...] = ()
    sortby: tuple[tuple[str, bool], ...] = ()  # (property, ascending)
    limit: int | None = None
    ids: tuple[str, ...] | None = None

    def with_(self, **changes: Any) -> Query:
        """A copy with some fields changed (queries are immutable)."""
        return replace(self, **changes)


@dataclass
class IngestReport:
    """What an ingest did: items added, and every input it could not take, with why."""

    added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the catalog (idempotent)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, what was dropped)

    @property
    def ok(self) -> bool:
        return not self.failed


class Catalog(abc.ABC):
    """A STAC catalog answering :class:`Query`. Use as a context manager or call close()."""

    #: ``"embedded"`` or ``"stac-api"``; shown on /healthz and in the UI.
    kind: str = "abstract"
    #: Where it lives: a file path or a URL.
    location: str = ""

    @abc.abstractmethod
    def collections(self) -> list[pystac.Collection]:
        """All collections, sorted by id."""

    @abc.abstractmethod
    def collection(self, name: str) -> pystac.Collection:
        """One collection; raises UnknownCollection listing the valid names."""

    @abc.abstractmethod
    def search(self, query: Query) -> list[pystac.Item]:
        """Items matching the query, sorted and limited as it says."""

    def count(self, query: Query) -> int:
        """How many items match (ignoring the limit)."""
        return len(self.search(query.with_(limit=None)))

    @abc.abstractmethod
    def get_item(self, collection: str, item_id: str) -> pystac.Item:
        """One item; raises NotFound."""

    @abc.abstractmethod
    def queryables(self, collection: str) -> set[str]:
        """Property names that the collection's items carry (for filters and errors)."""

    # -- writing (embedded backend only; a STAC API is read-only for us) --------------
    def add_collection(self, collection: pystac.Collection) -> None:
        """Create or update a collection."""
        raise NotImplementedError(f"the {self.kind} catalog is read-only")

    def add_items(self, items: Iterable[pystac.Item], *, collection: str) -> list[str]:
        """Add items in ONE transaction: all or nothing. Returns ids added; existing ids
        are replaced."""
        raise NotImplementedError(f"the {self.kind} catalog is read-only")

    def remove_collection(self, name: str) -> None:
        """Delete a collection and its items (undoes a new collection whose ingest failed)."""
        raise NotImplementedError(f"the {self.kind} catalog is read-only")

    def has_item(self, collection: str, item_id: str) -> bool:
        """True if the item exists."""
        try:
            self.get_item(collection, item_id)
        except NotFound:
            return False
        return True

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sort_key_names(sortby: Sequence[tuple[str, bool]]) -> list[str]:
    """Property names used by a sort, for validation."""
    return [p for p, _ in sortby]
