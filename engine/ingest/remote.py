"""Ingest the items of a remote STAC API search into the embedded catalog, page by page.

``eoexplorer ingest "https://host/v1/search?collections=sentinel-2-l2a&bbox=...&limit=100"``
follows the API's ``next`` links (GET or POST, with ``merge``), commits each page in one
transaction (assets keep their https:// / s3:// hrefs: nothing is downloaded), and records
the next page's request in ``<data dir>/ingest-state/``. An interrupted run (Ctrl-C, a
network failure) keeps the pages it committed; the same command again resumes from the
recorded page, and items already present are skipped, so a rerun never duplicates.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pystac
from tqdm import tqdm

from engine.catalog.base import Catalog, IngestReport
from engine.errors import IngestError, InvalidInput
from engine.ingest.run import check_collection_id, check_one_sensor, commit_items

#: Seconds one page request may take.
PAGE_TIMEOUT_S = 60.0
_DROP_LINKS = ("self", "root", "parent", "collection")


@dataclass(frozen=True)
class PageRequest:
    """One page of a search: where and how to ask for it."""

    href: str
    method: str = "GET"
    body: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"href": self.href, "method": self.method, "body": self.body}


def is_search_url(text: str) -> bool:
    """True when ``text`` is an http(s) URL (an item search or items endpoint)."""
    return urlparse(str(text)).scheme in ("http", "https")


def state_path(data_dir: Path, url: str, collection: str) -> Path:
    """The resume file of one (search URL, collection) ingest."""
    key = hashlib.sha256(f"{url}|{collection}".encode()).hexdigest()[:24]
    return Path(data_dir) / "ingest-state" / f"{key}.json"


def ingest_search(catalog: Catalog, url: str, *, collection: str, data_dir: str | Path,
                  progress: bool = False, timeout_s: float = PAGE_TIMEOUT_S,
                  on_page: Callable[[int, int], None] | None = None,
                  client: httpx.Client | None = None) -> IngestReport:
    """Ingest every item a STAC API search URL returns into ``collection``.

    Args:
        url: ``.../search?...`` or ``.../collections/<id>/items?...`` (http or https).
        collection: the collection id in our catalog.
        data_dir: where the resume state lives (``<data_dir>/ingest-state``).
        progress: show a tqdm bar (total from the API's ``numberMatched`` when given).
        timeout_s: seconds one page request may take.
        on_page: called as ``on_page(pages_done, items_added)`` after each committed page.

    Returns:
        The report: items added, skipped (already present), failed (invalid features).
    """
    if not is_search_url(url):
        raise InvalidInput(f"not a STAC API URL: {url!r} (give http(s)://.../search?...)")
    check_collection_id(collection)
    state_file = state_path(Path(data_dir).expanduser(), url, collection)
    state = _load_state(state_file)
    request = PageRequest(**state["next"]) if state else PageRequest(url)
    pages = state["pages"] if state else 0
    report = IngestReport()
    own = client is None
    http = client or httpx.Client(timeout=timeout_s, follow_redirects=True)
    try:
        with tqdm(disable=not progress, unit="item", desc=f"ingest {collection}",
                  initial=state["items"] if state else 0) as bar:
            for page, following in _pages(http, request):
                if bar.total is None and isinstance(page.get("numberMatched"), int):
                    bar.total = page["numberMatched"]
                items = _items(page, report)
                new = [i for i in items if not catalog.has_item(collection, i.id)]
                report.skipped.extend(i.id for i in items if i not in new)
                if new:
                    check_one_sensor(catalog, collection, new)
                    commit_items(catalog, collection, None, new)
                    report.added.extend(i.id for i in new)
                pages += 1
                bar.update(len(items))
                if following is None:
                    break
                _save_state(state_file, {"url": url, "collection": collection, "pages": pages,
                                         "items": bar.n, "next": following.to_json()})
                if on_page is not None:
                    on_page(pages, len(report.added))
    except httpx.HTTPError as exc:
        host = urlparse(str(getattr(exc, "request", None) and exc.request.url) or url).netloc
        raise IngestError(
            f"STAC API at {host or urlparse(url).netloc} failed on page {pages + 1} "
            f"({type(exc).__name__}: {exc}); {len(report.added)} item(s) of this run are in "
            "the catalog: run the same command again to resume") from None
    finally:
        if own:
            http.close()
    state_file.unlink(missing_ok=True)
    return report


def _pages(http: httpx.Client, request: PageRequest
           ) -> Iterator[tuple[dict[str, Any], PageRequest | None]]:
    """Each page's JSON and the request of the page after it (None on the last)."""
    while True:
        if request.method.upper() == "POST":
            resp = http.post(request.href, json=request.body or {})
        else:
            resp = http.get(request.href)
        if resp.status_code >= 400:
            raise httpx.HTTPStatusError(
                f"HTTP {resp.status_code}: {resp.text[:300]}", request=resp.request,
                response=resp)
        try:
            page = resp.json()
        except ValueError:
            raise httpx.DecodingError("the answer is not JSON", request=resp.request) from None
        if not isinstance(page, dict) or not isinstance(page.get("features"), list):
            raise httpx.DecodingError("the answer is not a STAC ItemCollection (no "
                                      "'features')", request=resp.request)
        following = _next(page, request)
        yield page, following
        if following is None or not page["features"]:
            return
        request = following


def _next(page: dict[str, Any], current: PageRequest) -> PageRequest | None:
    for link in page.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "next" and link.get("href"):
            method = str(link.get("method") or "GET").upper()
            body = link.get("body")
            if method == "POST" and link.get("merge") and current.body:
                body = {**current.body, **(body or {})}
            return PageRequest(str(link["href"]), method, body)
    return None


def _items(page: dict[str, Any], report: IngestReport) -> list[pystac.Item]:
    """The page's features as items (links to the remote catalog dropped); an invalid
    feature goes to ``report.failed`` with why."""
    items = []
    for feature in page["features"]:
        fid = str(feature.get("id", "?")) if isinstance(feature, dict) else "?"
        try:
            item = pystac.Item.from_dict(feature, preserve_dict=False)
        except (KeyError, ValueError, TypeError, pystac.STACError) as err:
            report.failed.append((fid, f"not a valid STAC item ({type(err).__name__}: {err})"))
            continue
        if item.datetime is None:
            report.failed.append((fid, "the item has no datetime"))
            continue
        item.links = [ln for ln in item.links if ln.rel not in _DROP_LINKS]
        items.append(item)
    return items


def _load_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # a damaged state file: start over (present items are skipped)
    return state if isinstance(state, dict) and isinstance(state.get("next"), dict) else None


def _save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)
