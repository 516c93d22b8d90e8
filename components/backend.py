"""What the UI talks to: the catalog, the chain store, the renderer and the tile URL base.

One ``Backend`` per process (built by ``app/``); sessions only read it. Chains are registered
in-process (the same store the tile service reads), so the browser fetches their tiles from
the service's URLs on the page's own origin without a loopback HTTP call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pystac

from engine.catalog.base import Catalog, Query
from engine.chain import Chain
from engine.chain.bands import check_bands, collection_band_names
from engine.chain.store import ChainStore
from engine.collection import Collection, items_dataframe
from engine.errors import ChainError, EOXError, UnknownCollection
from engine.render.renderer import TileRenderer

log = logging.getLogger(__name__)

#: How long cached catalog answers (newest scene, searches) are trusted without a re-check.
CACHE_TTL_S = 300.0
#: Searches remembered per process.
SEARCH_CACHE_SIZE = 32

#: ``prefetch(chain_ids, tiles, group)``: render these z/x/y tiles of these chains into the
#: service's tile cache in the background; a later call with the same ``group`` replaces it.
Prefetch = Callable[[Sequence[str], Sequence[tuple[int, int, int]], str], None]


@dataclass(frozen=True)
class CollectionFacts:
    """What the search form fits itself to: the title, the properties scenes can be
    filtered by, and the first and last scene dates (None when the catalog does not say)."""

    title: str
    queryables: frozenset[str]
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True)
class SearchResult:
    """Items of one search and their table (both cached per process)."""

    items: tuple[pystac.Item, ...]
    frame: pd.DataFrame


class _Memo:
    """Per-process answers keyed by the catalog's signature (collections and item counts)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.signature: tuple | None = None
        self.checked = 0.0
        self.values: dict[Any, Any] = {}
        self.registered: set[str] = set()


@dataclass(frozen=True)
class Backend:
    """Engine handles shared by every session of a process.

    Args:
        catalog: the catalog searched and rendered.
        chain_store: where chains are registered (the tile service reads the same store).
        renderer: an ``engine.render.TileRenderer`` (statistics of the visible pixels).
        api_base: URL of the service's ``/api`` relative to the page ("api" on one origin).
        basemap: optional XYZ basemap URL template; None means the service's offline base
            map (land, borders, place names: ``engine.basemap``).
        functions_enabled: whether server-side user functions (sandbox) can run.
        prefetch: renders tiles into the service's cache ahead of the browser (or None).
        raster_dirs: folders whose rasters may be opened by path as map layers (none: no
            path is accepted).
        batch_dir: where "Run over this area" writes its outputs (None: batch runs off).
        dask_scheduler: address of the Dask scheduler of batch runs (None: a LocalCluster).
        batch_max_pixels: largest batch output, pixels x dates.
        extract_max_pixels: largest Extract-tab download, pixels (the service's limit).
    """

    catalog: Catalog
    chain_store: ChainStore
    renderer: TileRenderer
    api_base: str = "api"
    basemap: str | None = None
    functions_enabled: bool = False
    prefetch: Prefetch | None = None
    raster_dirs: tuple[Path, ...] = ()
    batch_dir: Path | None = None
    dask_scheduler: str | None = None
    batch_max_pixels: int = 2_000_000_000
    extract_max_pixels: int = 36_000_000
    _memo: _Memo = field(default_factory=_Memo, init=False, repr=False, compare=False)

    # -- cached catalog answers (shared by every session) ----------------------------------
    def _cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        memo = self._memo
        self._check_signature()
        with memo.lock:
            if key in memo.values:
                return memo.values[key]
        value = compute()
        with memo.lock:
            memo.values[key] = value
            searches = [k for k in memo.values if isinstance(k, tuple) and k[0] == "search"]
            for old in searches[:-SEARCH_CACHE_SIZE]:
                del memo.values[old]
        return value

    def _check_signature(self) -> None:
        """Forget cached answers when the catalog changed (collections or item counts) or
        after ``CACHE_TTL_S`` (an item replaced in place keeps the counts)."""
        memo = self._memo
        now = time.monotonic()
        with memo.lock:
            if memo.signature is not None and now - memo.checked < 2.0:
                return
        names = tuple(sorted(c.id for c in self.catalog.collections()))
        signature = tuple((n, self.catalog.count(Query(collection=n))) for n in names)
        with memo.lock:
            stale = signature != memo.signature or now - memo.values.get("_at", now) > CACHE_TTL_S
            if stale:
                memo.values = {"_at": now, "collections": list(names)}
            memo.signature, memo.checked = signature, now

    def invalidate(self) -> None:
        """Forget every cached catalog answer (after an ingest in this process)."""
        with self._memo.lock:
            self._memo.signature = None
            self._memo.values = {}

    def collection_names(self) -> list[str]:
        """Ids of the catalog's collections."""
        return list(self._cached("collections",
                                 lambda: [c.id for c in self.catalog.collections()]))

    def band_names(self, collection: str) -> list[str]:
        """Every name a band of the collection answers to (asset keys and common names)."""
        return list(self._cached(("bands", collection), lambda: collection_band_names(
            self.catalog.collection(collection))))

    def facts(self, collection: str) -> CollectionFacts:
        """Title, filterable properties and date range of a collection (cached)."""
        def read() -> CollectionFacts:
            col = self.catalog.collection(collection)
            try:
                queryables = frozenset(self.catalog.queryables(collection))
            except EOXError as exc:
                log.info("no queryables of %s: %s", collection, exc)
                queryables = frozenset()
            intervals = col.extent.temporal.intervals if col.extent else []
            first, last = (intervals[0] if intervals and intervals[0] else (None, None))
            return CollectionFacts(col.title or "", queryables, first, last)

        return self._cached(("facts", collection), read)

    def search(self, coll: Collection) -> SearchResult:
        """Items and table of a query (one catalog search; cached per process)."""
        def run() -> SearchResult:
            items = coll.items()
            return SearchResult(items=tuple(items), frame=items_dataframe(items))

        return self._cached(("search", repr(coll.query)), run)

    def newest(self) -> tuple[str, str] | None:
        """(collection, item id) of the newest scene of the catalog, or None if it is empty."""
        return self._cached("newest", self._find_newest)

    def _find_newest(self) -> tuple[str, str] | None:
        newest: tuple[datetime, str, str] | None = None
        for name in self.collection_names():
            try:
                item = Collection(name, catalog=self.catalog).sort(
                    "datetime", ascending=False).first()
            except EOXError as exc:
                log.warning("collection %s: %s", name, exc)
                continue
            when = item.datetime if item is not None else None
            if when is not None and (newest is None or when > newest[0]):
                newest = (when, name, item.id)
        return None if newest is None else (newest[1], newest[2])

    # -- chains -------------------------------------------------------------------------------
    def register(self, chain: Chain) -> str:
        """Check and store ``chain``; return its map tile URL template (``map_tile_url``)."""
        cid = chain.id
        if cid in self._memo.registered:
            return self.map_tile_url(cid)
        name = chain.source.collection
        try:
            coll = self.catalog.collection(name)
        except UnknownCollection as exc:
            raise ChainError(f"unknown collection {name!r}", choices=exc.choices or ()) from None
        known = collection_band_names(coll)
        if known:
            check_bands(chain.read_bands(), known, collection=name)
        else:
            chain.read_bands()
        chain_id = self.chain_store.put(chain)
        self._memo.registered.add(chain_id)
        return self.map_tile_url(chain_id)

    def tile_url(self, chain_id: str) -> str:
        """The XYZ template of a registered chain, in Bokeh's {X}/{Y}/{Z} form."""
        return f"{self.api_base}/chains/{chain_id}/tiles/{{Z}}/{{X}}/{{Y}}.png"

    @property
    def basemap_url(self) -> str:
        """XYZ template of the map's base layer: ``basemap``, else the offline one."""
        return self.basemap or f"{self.api_base.rstrip('/')}/basemap/{{Z}}/{{X}}/{{Y}}.png"

    def map_tile_url(self, chain_id: str) -> str:
        """``tile_url`` for a Bokeh tile layer: tiles without data come as transparent
        images, since Bokeh takes a 204 for a failed image, loads it again and never
        reports the map as drawn (so the page's onload callbacks would never run)."""
        return self.tile_url(chain_id) + "?empty=transparent"

    def statistics(self, chain: Chain, geometry: dict, *, bins: int = 64,
                   percentiles: Sequence[float] = (2, 98)) -> dict:
        """Per-band statistics of ``chain`` inside ``geometry``: histogram in ``bins`` bins,
        the given ``percentiles`` (see TileRenderer.statistics)."""
        return self.renderer.statistics(chain, geometry, bins=bins,
                                        percentiles=percentiles).as_dict()
