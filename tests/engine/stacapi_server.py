"""A real STAC API server for tests: stac-fastapi-geoparquet on 127.0.0.1 (uvicorn thread).

Items are written as stac-geoparquet (one file per collection) and served by
stac-fastapi-geoparquet, which answers searches with DuckDB (rustac). Two setups:

- ``extensions=("filter", "sort")`` (default): the server declares and implements the
  Filter (CQL2) and Sort extensions, so the backend sends both to the server;
- ``extensions=()``: core + item search only, so the backend filters and sorts itself.

Neither setup offers the Query extension (rustac's DuckDB search does not implement it).

Three shims keep this third-party server working offline with today's packages, all in
:func:`_make_app` and pyproject.toml: (1) DuckDB's spatial extension comes from the
rustac-duckdb-extensions wheel (no download), built for DuckDB 1.5.1, hence rustac pinned
to 0.9.9 which embeds that DuckDB; (2) stac-fastapi is pinned < 6.3 (the geoparquet server
imports ``stac_fastapi.extensions.core.*``); (3) the app is built here rather than by
``stac_fastapi.geoparquet.api.create``, which passes ``FastAPI(**extra)`` keywords that the
installed FastAPI (0.165) refuses.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import socket
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pystac

EXTENSIONS_ALL: tuple[str, ...] = ("filter", "sort")
#: Items as a flat iterable (each with its collection set) or a dict collection id -> items.
ItemsArg = Iterable[pystac.Item] | Mapping[str, Iterable[pystac.Item]]
_GEOPARQUET = "application/vnd.apache.parquet"

# rustac logs every written item collection at INFO
logging.getLogger("stac_io").setLevel(logging.WARNING)


@functools.cache
def _duckdb_client() -> Any:
    """One DuckDB client for every server (creating one loads the spatial extension)."""
    import rustac
    import rustac_duckdb_extensions

    return rustac.DuckdbClient(
        extension_directory=rustac_duckdb_extensions.extension_directory(),
        install_extensions=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_app(collections_href: Path, extensions: Sequence[str]) -> Any:
    """The stac-fastapi-geoparquet app serving the collections listed in a JSON file."""
    from fastapi import FastAPI

    with warnings.catch_warnings():
        # stac-fastapi 6.2 imports ORJSONResponse, which FastAPI now flags as deprecated
        warnings.simplefilter("ignore")
        from stac_fastapi.api import models
        from stac_fastapi.api.app import StacApi
        from stac_fastapi.extensions.core import (
            FieldsExtension,
            OffsetPaginationExtension,
            SearchFilterExtension,
            SortExtension,
        )
        from stac_fastapi.geoparquet import api as geoparquet_api
        from stac_fastapi.geoparquet.client import Client
        from stac_fastapi.geoparquet.search import FixedSearchGetRequest
        from stac_fastapi.geoparquet.settings import Settings
        from stac_fastapi.types.search import BaseSearchPostRequest

    unknown = set(extensions) - set(EXTENSIONS_ALL)
    if unknown:
        raise ValueError(f"unknown extensions {sorted(unknown)}; choose from {EXTENSIONS_ALL}")
    exts: list[Any] = [OffsetPaginationExtension(), FieldsExtension()]
    if "filter" in extensions:
        exts.append(SearchFilterExtension())
    if "sort" in extensions:
        exts.append(SortExtension())

    settings = Settings(
        stac_fastapi_landing_id="eox-test-stac-api",
        stac_fastapi_title="stac-fastapi-geoparquet (tests)",
        stac_fastapi_description="stac-fastapi-geoparquet serving test items",
        stac_fastapi_collections_href=str(collections_href),
        # reloading is driven by load() below, never by a timer
        stac_fastapi_collections_reload_seconds=10**9,
    )
    app = FastAPI(lifespan=geoparquet_api.lifespan, openapi_url=settings.openapi_url)
    # what geoparquet's create() passes as FastAPI(**extra); read back by its lifespan
    app.extra = {"settings": settings, "collections": [], "duckdb_client": _duckdb_client()}
    app.middleware("http")(geoparquet_api.make_collections_middleware(settings, []))
    StacApi(
        settings=settings,
        client=Client(),
        app=app,
        search_get_request_model=models.create_get_request_model(
            base_model=FixedSearchGetRequest, extensions=exts
        ),
        search_post_request_model=models.create_post_request_model(
            base_model=BaseSearchPostRequest, extensions=exts
        ),
        items_get_request_model=models.create_get_request_model(
            base_model=models.ItemCollectionUri, extensions=exts
        ),
        extensions=exts,
    )
    return app, settings


def _pairs(items: ItemsArg) -> Iterator[tuple[str | None, pystac.Item]]:
    if isinstance(items, Mapping):
        for collection_id, found in items.items():
            for item in found:
                yield collection_id, item
    else:
        for item in items:
            yield item.collection_id, item


def write_geoparquet(
    items: ItemsArg, collections: Iterable[pystac.Collection], folder: Path
) -> Path:
    """Write one stac-geoparquet file per collection and the collections.json listing them."""
    import rustac

    folder.mkdir(parents=True, exist_ok=True)
    by_collection: dict[str, list[dict[str, Any]]] = {}
    for collection_id, item in _pairs(items):
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        d["collection"] = collection_id
        if not d.get("collection"):
            raise ValueError(f"item {item.id!r} has no collection")
        d["links"] = [ln for ln in d.get("links", []) if ln.get("rel") not in _TREE_RELS]
        by_collection.setdefault(d["collection"], []).append(d)
    docs = []
    for collection in collections:
        d = collection.to_dict(include_self_link=False, transform_hrefs=False)
        d["links"] = [ln for ln in d.get("links", []) if ln.get("rel") not in _TREE_RELS]
        d.setdefault("assets", {})
        rows = by_collection.pop(collection.id, [])
        if rows:
            path = folder / f"{collection.id}.parquet"
            rustac.write_sync(str(path), rows)
            d["assets"]["geoparquet"] = {"href": str(path), "type": _GEOPARQUET}
        docs.append(d)
    if by_collection:
        raise ValueError(f"items of collections not given: {sorted(by_collection)}")
    listing = folder / "collections.json"
    listing.write_text(json.dumps(docs))
    return listing


_TREE_RELS = ("self", "root", "parent", "collection", "item", "child")


class StacApiServer:
    """stac-fastapi-geoparquet on a free 127.0.0.1 port, in a uvicorn thread.

    ``load()`` sets the served items the way the server's own hot reload does (re-read
    collections.json).
    """

    def __init__(self, workdir: Path, *, extensions: Sequence[str] = EXTENSIONS_ALL) -> None:
        import uvicorn

        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._listing = workdir / "collections.json"
        self._listing.write_text("[]")
        self.app, self._settings = _make_app(self._listing, extensions)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> StacApiServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the STAC API server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def load(
        self,
        items: ItemsArg,
        collections: Iterable[pystac.Collection],
        folder: Path,
    ) -> None:
        """Serve these items and collections (replacing what was served before)."""
        from stac_fastapi.geoparquet import api as geoparquet_api

        listing = write_geoparquet(items, collections, folder)
        raw = json.loads(listing.read_text())
        # the same steps as the server's hot-reload task (api.make_collections_middleware)
        by_id, hrefs = geoparquet_api._parse_collections(raw, self._settings)
        self.app.state.collections = by_id
        self.app.state.hrefs = hrefs


@contextlib.contextmanager
def serve_stac_api(
    items: ItemsArg,
    collections: Iterable[pystac.Collection],
    tmp_path: Path,
    *,
    extensions: Sequence[str] = EXTENSIONS_ALL,
) -> Iterator[str]:
    """Serve the items through a real STAC API on 127.0.0.1; yields its base URL."""
    server = StacApiServer(tmp_path / "stac-api", extensions=extensions).start()
    try:
        server.load(items, collections, tmp_path / "stac-api" / "data")
        yield server.url
    finally:
        server.stop()


def make_stacapi_catalog(
    items: ItemsArg,
    collections: Sequence[pystac.Collection],
    tmp_path: Path,
    *,
    extensions: Sequence[str] = EXTENSIONS_ALL,
) -> Any:
    """A StacApiCatalog over its own server serving exactly these items.

    The server is stopped when the catalog is closed (or at interpreter exit), so a
    session-scoped catalog fixture keeps one server for the whole session.
    """
    from engine.catalog.stacapi import StacApiCatalog

    server = StacApiServer(tmp_path / "stac-api", extensions=extensions).start()
    atexit.register(server.stop)
    server.load(items, collections, tmp_path / "stac-api" / "data")

    class _ServedStacApiCatalog(StacApiCatalog):
        def close(self) -> None:
            super().close()
            server.stop()

    return _ServedStacApiCatalog(server.url)


def make_stacapi_basic_catalog(
    items: ItemsArg, collections: Sequence[pystac.Collection], tmp_path: Path
) -> Any:
    """Like :func:`make_stacapi_catalog`, on a server without Filter and Sort."""
    return make_stacapi_catalog(items, collections, tmp_path, extensions=())
