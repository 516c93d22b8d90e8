"""The view in the URL query: map centre and zoom, collection, query, selection, chain id.

A copied link (or an iframe src) reproduces the view. ``to_query``/``apply_query`` are pure
(testable without a browser); ``bind_location`` keeps ``pn.state.location`` in sync.
"""

from __future__ import annotations

import logging
import math
from datetime import date
from typing import Any

import numpy as np
import panel as pn

from components.state import SORTS, AppState
from components.tilemath import WORLD, to_lonlat, to_mercator
from engine.errors import EOXError

log = logging.getLogger(__name__)

#: URL keys, in the order they appear.
KEYS = ("center", "zoom", "collection", "place", "point", "bbox", "start", "end", "cloud",
        "sort", "limit", "items", "chain", "fn")


def _num(v: float, digits: int = 5) -> str:
    return f"{round(float(v), digits):g}"


def to_query(state: AppState) -> dict[str, str]:
    """URL query parameters describing the session's view (empty values left out)."""
    q: dict[str, str] = {}
    if state.viewport is not None:
        w, s, e, n = state.viewport
        (x0, x1), (y0, y1) = to_mercator(np.array([w, e]), np.array([s, n]))
        lon, lat = to_lonlat((x0 + x1) / 2, (y0 + y1) / 2)
        q["center"] = f"{_num(lon)},{_num(lat)}"
        q["zoom"] = _num(math.log2(WORLD / max(x1 - x0, 1e-3)), 3)
    if state.collection:
        q["collection"] = state.collection
    if state.place:
        q["place"] = state.place
    if state.point is not None:
        q["point"] = ",".join(_num(v) for v in state.point)
    if state.bbox is not None:
        q["bbox"] = ",".join(_num(v) for v in state.bbox)
    if state.start is not None:
        q["start"] = state.start.isoformat()[:10]
    if state.end is not None:
        q["end"] = state.end.isoformat()[:10]
    if state.max_cloud < 100:
        q["cloud"] = _num(state.max_cloud, 1)
    if state.sort != "Newest first":
        q["sort"] = state.sort
    if state.limit != state.param.limit.default:
        q["limit"] = str(state.limit)
    if state.selected:
        q["items"] = ",".join(state.selected)
    if state.chain_id:
        q["chain"] = state.chain_id
    if state.function_layer:
        q["fn"] = state.function_layer
    return q


def _floats(text: str, n: int) -> tuple[float, ...]:
    parts = tuple(float(v) for v in text.split(","))
    if len(parts) != n or not all(math.isfinite(v) for v in parts):
        raise ValueError(f"expected {n} numbers, got {text!r}")
    return parts


def view_of(center: str, zoom: str) -> tuple[float, float, float, float]:
    """W, S, E, N for centre + zoom: a box of zero height, which the map shows at exactly
    that width around that centre (the map's aspect decides the height)."""
    lon, lat = _floats(center, 2)
    z = float(zoom)
    if not (-180 <= lon <= 180 and -85 <= lat <= 85 and 0 <= z <= 30):
        raise ValueError(f"centre {center} / zoom {zoom} out of range")
    cx, _ = to_mercator(np.array(lon), np.array(lat))
    half = WORLD / 2**z / 2
    w, e = to_lonlat(np.array([cx - half, cx + half]), np.array([0.0, 0.0]))[0]
    return (float(w), lat, float(e), lat)


def _sort(v: str) -> dict[str, str]:
    if v not in SORTS:
        raise ValueError(f"unknown sort; use one of {', '.join(SORTS)}")
    return {"sort": v}


def apply_query(state: AppState, query: dict[str, Any]) -> bool:
    """Restore a view from URL parameters; returns True if it set something to show.

    Bad values are reported as a notice and skipped; the rest still applies.
    """
    q = {k: (v[0] if isinstance(v, list) else v) for k, v in query.items() if k in KEYS}
    q = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in q.items()}
    if not q:
        return False
    problems: list[str] = []
    changes: dict[str, Any] = {}

    def take(key: str, fn: Any) -> None:
        if key in q:
            try:
                changes.update(fn(q[key]))
            except (ValueError, TypeError) as exc:
                problems.append(f"{key}={q[key]!r} ({exc})")

    if "collection" in q:
        if q["collection"] in state.param.collection.objects:
            state.collection = q["collection"]
        else:
            problems.append(f"collection={q['collection']!r} (not in the catalog)")
    take("place", lambda v: {"place": v})
    take("point", lambda v: {"point": _floats(v, 2)})
    take("bbox", lambda v: {"bbox": _floats(v, 4)})
    take("start", lambda v: {"start": date.fromisoformat(v)})
    take("end", lambda v: {"end": date.fromisoformat(v)})
    take("cloud", lambda v: {"max_cloud": min(100.0, max(0.0, float(v)))})
    take("sort", _sort)
    take("limit", lambda v: {"limit": max(1, min(10_000, int(v)))})
    state.param.update(**changes)
    shown = False
    if any(k in q for k in ("collection", "place", "point", "bbox", "start", "end", "cloud",
                            "items", "chain")):
        state.search()
    if "chain" in q:
        try:
            chain = state.backend.chain_store.get(q["chain"])
        except EOXError as exc:
            problems.append(f"chain={q['chain']!r} ({exc})")
        else:
            state.apply_chain(chain)
            shown = True
    elif "items" in q:
        ids = [i for i in q["items"].split(",") if i]
        state.selected = ids
        shown = bool(ids)
    if "fn" in q:
        try:
            state.backend.chain_store.get(q["fn"])
        except EOXError as exc:
            problems.append(f"fn={q['fn']!r} ({exc})")
        else:
            state.function_layer = q["fn"]
    if "center" in q and "zoom" in q:
        try:
            state.view_request = view_of(q["center"], q["zoom"])
        except ValueError as exc:
            problems.append(f"center/zoom ({exc})")
    elif shown:
        state.zoom_to_selected()
    if problems:
        state.notify("Some link parameters were ignored: " + "; ".join(problems), "warning")
    return shown


def bind_location(state: AppState, location: Any) -> None:
    """Keep ``location.search`` (the browser URL) in step with the state."""

    def push(*_: Any) -> None:
        location.search = "?" + "&".join(
            f"{k}={_quote(v)}" for k, v in to_query(state).items())

    state.param.watch(push, ["viewport", "collection", "place", "point", "bbox", "start", "end",
                             "max_cloud", "sort", "limit", "selected", "chain_id",
                             "function_layer"])
    push()
    pn.state.onload(push)


def _quote(v: str) -> str:
    from urllib.parse import quote

    return quote(v, safe=",.-:")


__all__ = ["KEYS", "apply_query", "bind_location", "to_query", "view_of"]
