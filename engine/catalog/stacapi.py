"""A read-only catalog backed by a remote STAC API (through pystac-client).

It answers the same :class:`~engine.catalog.base.Query` as the embedded backend, using
whatever the API offers and doing the rest itself, so callers get the same answer:

- property filters go to the server as CQL2-JSON when the API conforms to the Filter
  extension, else through the Query extension; an API with neither gets only the
  spatio-temporal part of the query and the filters are applied here (logged once);
- sorting goes to the server when it conforms to Sort, else is done here over the
  whole spatio-temporal result (so the limit is applied after sorting, as it must);
- an API that does not declare its conformance classes on the landing page is asked
  at ``/conformance``; one that offers no item search at all is read through the OGC
  ``/collections/{id}/items`` endpoint.

Every result is put in the canonical order here (the sort keys, then ``id``; missing
values last) so that ties and missing values come out as from the embedded backend.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pystac
from pystac_client import Client
from pystac_client.conformance import ConformanceClasses
from pystac_client.errors import ClientTypeError
from pystac_client.exceptions import APIError
from pystac_client.item_search import ItemSearch
from pystac_client.warnings import PystacClientWarning

from engine.catalog.base import CORE_PROPERTIES, Catalog, Query
from engine.catalog.stacquery import (
    api_status,
    canonical_sortby,
    canonical_sorted,
    cql2,
    cql2_and,
    datetime_interval,
    is_null,
    item_geometry,
    item_predicate,
    matches_ogc_leftovers,
    plain_collection,
    query_ext,
    strip_properties,
    validate_query,
)
from engine.errors import CatalogError, NotFound, UnknownCollection
from engine.timeutil import bbox_geometry

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Items requested per page (STAC APIs commonly cap the page size at 1000 or 10000).
PAGE_SIZE = 500
#: Items read to guess the queryables of an API that does not publish them.
QUERYABLES_SAMPLE = 500


# conformance URIs (pystac-client only knows the STAC ones, not the OGC/CQL2 ones)
_OGC_FILTER = "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter"
_CQL2_JSON = "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json"
_STAC_CORE = "https://api.stacspec.org/v1.0.0/core"
_STAC_ITEM_SEARCH = "https://api.stacspec.org/v1.0.0/item-search"


@dataclass
class ApiSearch:
    """How one query is answered: what the server is asked, what is done here."""

    params: dict[str, Any]  # pystac-client ItemSearch keyword arguments
    local: list[Callable[[pystac.Item], bool]]  # tests applied here, on each item
    sortby: tuple[tuple[str, bool], ...]  # the canonical order, applied here at the end
    max_items: int | None  # the limit, when the server can apply it exactly
    split: str | None  # a first sort key some items may lack (see search())


class StacApiCatalog(Catalog):
    """A STAC API as a read-only :class:`Catalog`.

    Args:
        url: The API's landing page, e.g. ``https://earth-search.aws.element84.com/v1``.
        headers: Extra HTTP headers sent with every request (e.g. an API key).
        timeout: Seconds to wait for each HTTP request.

    Raises:
        CatalogError: the API is unreachable, answers with an HTTP error or is not a
            STAC API.
    """

    kind = "stac-api"

    def __init__(
        self, url: str, *, headers: dict[str, str] | None = None, timeout: float = 30.0
    ) -> None:
        self.location = url.rstrip("/")
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._collection_ids: list[str] | None = None
        self._logged: set[str] = set()
        self._client = self._call("open the API", self._open)
        conforms = self._client.get_conforms_to()
        self.supports_search = self._client.conforms_to(ConformanceClasses.ITEM_SEARCH)
        self.supports_filter = _CQL2_JSON in conforms and (
            _OGC_FILTER in conforms or self._client.conforms_to(ConformanceClasses.FILTER)
        )
        self.supports_query = self._client.conforms_to(ConformanceClasses.QUERY)
        self.supports_sort = self._client.conforms_to(ConformanceClasses.SORT)
        self.supports_fields = self._client.conforms_to(ConformanceClasses.FIELDS)

    def __repr__(self) -> str:
        return f"StacApiCatalog({self.location!r})"

    # -- connection ------------------------------------------------------------------
    def _open(self) -> Client:
        """Open the landing page; read /conformance when the page does not declare it."""
        with warnings.catch_warnings():
            # we look at conformance ourselves; pystac-client only warns about it
            warnings.simplefilter("ignore", PystacClientWarning)
            client = Client.open(self.location, headers=self._headers, timeout=self._timeout)
        if not client.get_conforms_to():
            link = client.get_single_link("conformance")
            href = link.absolute_href if link else f"{self.location}/conformance"
            try:
                conforms = client._stac_io.read_json(href).get("conformsTo", [])
            except APIError as exc:
                if api_status(exc) != 404:
                    raise
                conforms = []
            if not conforms and client.get_links("search"):
                # an API with a search link but no declared classes: trust the link
                conforms = [_STAC_CORE, _STAC_ITEM_SEARCH]
            client.set_conforms_to(conforms)
            self._log_once(
                "conformance",
                "STAC API %s does not declare its conformance classes on its landing page; "
                "using %s",
                self.location,
                conforms or "none (items are read from /collections/{id}/items)",
            )
        return client

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one request, turning HTTP and connection failures into CatalogError."""
        try:
            return fn()
        except APIError as exc:
            status = api_status(exc)
            detail = str(exc).strip().replace("\n", " ")[:300]
            if status is None:
                raise CatalogError(
                    f"cannot {what}: STAC API {self.location} is unreachable ({detail})"
                ) from exc
            raise CatalogError(
                f"cannot {what}: STAC API {self.location} answered HTTP {status}: {detail}"
            ) from exc
        except (ClientTypeError, pystac.STACError, ValueError, KeyError) as exc:
            # raised on a response that is not STAC JSON (ValueError: not JSON at all)
            raise CatalogError(
                f"cannot {what}: {self.location} did not answer like a STAC API "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def close(self) -> None:
        """Close the HTTP session."""
        self._client._stac_io.session.close()

    def _log_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.info(msg, *args)

    # -- collections -----------------------------------------------------------------
    def collections(self) -> list[pystac.Collection]:
        """All collections, sorted by id."""

        def read() -> list[pystac.Collection]:
            return [plain_collection(c) for c in self._client.get_collections()]

        found = sorted(self._call("list the collections", read), key=lambda c: c.id)
        self._collection_ids = [c.id for c in found]
        return found

    def collection(self, name: str) -> pystac.Collection:
        """One collection; raises UnknownCollection listing the valid names."""
        self._check_collection(name)

        def read() -> pystac.Collection | None:
            found = self._client.get_collection(name)
            return plain_collection(found) if found is not None else None

        found = self._call(f"read the collection {name!r}", read)
        if found is None:
            raise UnknownCollection(f"unknown collection {name!r}", choices=self._ids())
        return found

    def _ids(self, *, refresh: bool = False) -> list[str]:
        if self._collection_ids is None or refresh:
            self.collections()
        assert self._collection_ids is not None
        return self._collection_ids

    def _check_collection(self, name: str) -> None:
        """Raise UnknownCollection unless the API has the collection (re-reads once)."""
        if name in self._ids() or name in self._ids(refresh=True):
            return
        raise UnknownCollection(f"unknown collection {name!r}", choices=self._collection_ids)

    # -- items -----------------------------------------------------------------------
    def search(self, query: Query) -> list[pystac.Item]:
        """Items matching the query, sorted and limited as it says."""
        plan = self._plan(query)
        if plan is None:
            return []
        if plan.split is not None:
            # Top-N by a property some items lack: the server sorts the items that have
            # it; those without it (last in our order) are read only if N is not reached.
            prop = plan.split
            has = cql2_and(plan.params.get("filter"), {"op": "not", "args": [is_null(prop)]})
            items = self._items({**plan.params, "filter": has}, query.limit)
            if query.limit is None or len(items) < query.limit:
                lacks = cql2_and(plan.params.get("filter"), is_null(prop))
                items += self._items({**plan.params, "filter": lacks}, None)
        else:
            items = self._items(plan.params, plan.max_items)
            items = [it for it in items if all(test(it) for test in plan.local)]
        items = canonical_sorted(items, plan.sortby)
        return items[: query.limit] if query.limit is not None else items

    def count(self, query: Query) -> int:
        """How many items match (ignoring the limit); skips the assets when it can."""
        plan = self._plan(query.with_(limit=None, sortby=()))
        if plan is None:
            return 0
        if plan.local or not self.supports_fields:
            return len(self.search(query.with_(limit=None, sortby=())))
        params = {k: v for k, v in plan.params.items() if k != "sortby"}
        # only "exclude": an "include" list makes some servers drop the filtered columns
        params["fields"] = {"exclude": ["assets", "links"]}
        return len(self._fetch(params, None))

    def _plan(self, query: Query) -> ApiSearch | None:
        """What to ask the server and what to do here; None when nothing can match."""
        validate_query(query)
        self._check_collection(query.collection)
        if query.limit == 0 or query.ids == ():
            return None
        sortby = canonical_sortby(query.sortby)
        params: dict[str, Any] = {"collections": [query.collection]}
        local: list[Callable[[pystac.Item], bool]] = []

        # space and time: always the server's job (bbox is checked here when the query
        # also has a geometry, as a STAC API takes only one of them)
        if query.intersects is not None:
            params["intersects"] = query.intersects
            if query.bbox is not None:
                box = bbox_geometry(query.bbox)
                local.append(lambda it: item_geometry(it).intersects(box))
        elif query.bbox is not None:
            params["bbox"] = list(query.bbox)
        if query.start is not None or query.end is not None:
            params["datetime"] = datetime_interval(query.start, query.end)
        if query.ids is not None:
            params["ids"] = list(query.ids)

        if query.filters:
            if self.supports_filter and self.supports_search:
                params["filter"] = cql2(query.filters)
            elif self.supports_query and self.supports_search:
                params["query"] = query_ext(query.filters)
            else:
                self._log_once(
                    "filters",
                    "STAC API %s supports neither the Filter nor the Query extension: "
                    "property filters are applied client-side over its spatio-temporal "
                    "result",
                    self.location,
                )
                local.extend(item_predicate(f) for f in query.filters)

        # Sorting and the limit go to the server only when it can do them exactly: it
        # sorts and does all the filtering, and no sort key can be missing (missing
        # values go last here; servers differ on where they put them). A first sort key
        # that may be missing is handled by splitting the search (see search()).
        server_sorts = self.supports_sort and self.supports_search
        if server_sorts:
            params["sortby"] = [
                {"field": p, "direction": "asc" if asc else "desc"} for p, asc in sortby
            ]
        elif query.sortby:
            self._log_once(
                "sort",
                "STAC API %s does not support the Sort extension: results are sorted "
                "client-side",
                self.location,
            )
        optional = [p for p, _ in sortby if p not in CORE_PROPERTIES]
        max_items = query.limit if server_sorts and not optional and not local else None
        split = None
        if (
            server_sorts
            and self.supports_filter
            and not local
            and query.limit is not None
            and optional == [sortby[0][0]]
        ):
            split = optional[0]
        if "filter" in params or split is not None:
            params["filter_lang"] = "cql2-json"
        return ApiSearch(params, local, sortby, max_items, split)

    def _items(self, params: dict[str, Any], max_items: int | None) -> list[pystac.Item]:
        return [
            pystac.Item.from_dict(d, preserve_dict=False, migrate=False)
            for d in self._fetch(params, max_items)
        ]

    def _fetch(self, params: dict[str, Any], max_items: int | None) -> list[dict[str, Any]]:
        """Run one search (or read the OGC items endpoint); every matching item dict."""
        page = min(PAGE_SIZE, max_items) if max_items else PAGE_SIZE

        def read() -> list[dict[str, Any]]:
            if self.supports_search:
                method = "POST" if self._posts() else "GET"
                search = self._client.search(
                    method=method, max_items=max_items, limit=page, **params
                )
            else:
                # OGC API Features: bbox and datetime only; the rest is done here
                (collection,) = params["collections"]
                search = ItemSearch(
                    f"{self.location}/collections/{collection}/items",
                    method="GET",
                    max_items=max_items,
                    limit=page,
                    client=self._client,
                    **{k: v for k, v in params.items() if k in ("bbox", "datetime")},
                )
            return list(search.items_as_dicts())

        found = self._call(f"search {params['collections'][0]!r}", read)
        if not self.supports_search:
            found = [d for d in found if matches_ogc_leftovers(d, params)]
        return found

    def _posts(self) -> bool:
        """True when the API advertises POST /search (needed for long CQL2 bodies)."""
        links = self._client.get_links("search")
        return any((ln.extra_fields.get("method") or "GET").upper() == "POST" for ln in links)

    def get_item(self, collection: str, item_id: str) -> pystac.Item:
        """One item; raises NotFound."""
        found = self.search(Query(collection=collection, ids=(item_id,)))
        if not found:
            raise NotFound(f"no item {item_id!r} in the collection {collection!r}")
        return found[0]

    def queryables(self, collection: str) -> set[str]:
        """Property names from the API's /queryables, else from a sample of items."""
        self._check_collection(collection)
        if self.supports_filter:
            names = self._published_queryables(collection)
            if names:
                return names
        sample = self._fetch({"collections": [collection]}, QUERYABLES_SAMPLE)
        names = {key for item in sample for key in item.get("properties", {})}
        return names | {"datetime"}

    def _published_queryables(self, collection: str) -> set[str]:
        """Property names the API publishes for the collection (empty if it does not)."""
        for href in (
            f"{self.location}/collections/{collection}/queryables",
            f"{self.location}/queryables",
        ):
            try:
                doc = self._client.get_queryables_from(href)
            except APIError as exc:
                if api_status(exc) in (404, 405, 501):
                    continue
                raise CatalogError(
                    f"cannot read the queryables: STAC API {self.location} answered "
                    f"HTTP {api_status(exc)} for {href}"
                ) from exc
            props = doc.get("properties") or {}
            names = {strip_properties(k) for k in props} - {"geometry", "bbox"}
            if names:
                return names
        return set()


# -- helpers ---------------------------------------------------------------------------
