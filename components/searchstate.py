"""The search side of the session state: the query form, its results and the selection."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import param

from components.statebase import StateBase
from engine.chain.bands import common_band_names
from engine.collection import Collection
from engine.errors import EOXError

log = logging.getLogger(__name__)

#: Sort choices of the search form -> (property, ascending).
SORTS: dict[str, tuple[str, bool]] = {
    "Newest first": ("datetime", False),
    "Oldest first": ("datetime", True),
    "Least cloudy": ("eo:cloud_cover", True),
}


def day(value: date | datetime | None) -> date | None:
    """The UTC day of a date or datetime (None stays None)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    return value


class SearchState(StateBase):
    """Collection, query, results and the ids of the scenes displayed."""

    collection = param.Selector(objects=[], doc="Collection searched and displayed.")
    place = param.String("", doc="Place name (gazetteer) the search is limited to.")
    point = param.Tuple(default=None, length=2, allow_None=True, doc="Search point lon, lat.")
    bbox = param.Tuple(default=None, length=4, allow_None=True, doc="Search box W, S, E, N.")
    start = param.Date(default=None, allow_None=True, doc="First day searched.")
    end = param.Date(default=None, allow_None=True, doc="Last day searched.")
    max_cloud = param.Number(100.0, bounds=(0, 100), doc="Highest cloud cover, percent.")
    cloud_reason = param.String("", doc="Why the cloud filter does not apply to the "
                                "collection (empty: it does).")
    date_range = param.Tuple(default=None, length=2, allow_None=True,
                             doc="First and last scene day of the collection (or None).")
    sort = param.Selector(objects=list(SORTS), default="Newest first")
    limit = param.Integer(100, bounds=(1, 10_000), doc="Most scenes listed.")

    results = param.DataFrame(default=pd.DataFrame(), doc="Date, Platform, ... id per scene.")
    footprints = param.Dict(default={}, doc="Scene id -> GeoJSON footprint (WGS84).")
    bounds = param.Dict(default={}, doc="Scene id -> (W, S, E, N).")
    selected = param.List(default=[], item_type=str, doc="Ids of the scenes displayed.")
    status = param.String("", doc="One line about the results.")

    def __init__(self, **params: Any) -> None:
        self._coll: tuple[Any, Collection | None] = (None, None)  # name -> checked query
        self._found: dict[str, Any] = {}  # id -> item of the last search
        # (collection, selected ids) -> band names every selected scene has, their boxes
        self._selected_info: tuple[Any, list[str], list[tuple]] = (None, [], [])
        super().__init__(**params)

    def search_reset(self) -> dict[str, Any]:
        """The parameter changes that fit the search form to a new collection (the cloud
        filter only where scenes carry eo:cloud_cover, the dates the collection spans) and
        empty the results; the caller applies them with its own."""
        self._found = {}
        changes: dict[str, Any] = {"results": pd.DataFrame(), "footprints": {}, "bounds": {},
                                   "selected": [], "status": ""}
        try:
            facts = self.backend.facts(self.collection)
        except EOXError as exc:
            log.info("no facts about %s: %s", self.collection, exc)
            return {**changes, "cloud_reason": "", "date_range": None}
        reason = "" if "eo:cloud_cover" in facts.queryables else \
            f"{self.collection} scenes carry no cloud cover: the cloud filter does not apply"
        span = (day(facts.first), day(facts.last)) if facts.first and facts.last else None
        return {**changes, "cloud_reason": reason, "date_range": span}

    def query(self) -> Collection:
        """The engine query the search form describes (errors propagate)."""
        coll = Collection(self.collection, catalog=self.backend.catalog)
        if self.bbox is not None:
            coll = coll.filter_bbox(self.bbox)
        elif self.point is not None:
            coll = coll.filter_point(*self.point)
        elif self.place.strip():
            coll = coll.filter_place(self.place.strip())
        if self.start is not None or self.end is not None:
            coll = coll.filter_date(day(self.start), day(self.end))
        if self.max_cloud < 100 and not self.cloud_reason:
            coll = coll.filter("eo:cloud_cover", "<=", float(self.max_cloud))
        prop, ascending = SORTS[self.sort]
        return coll.sort(prop, ascending=ascending).limit(int(self.limit))

    def search(self) -> int:
        """Run the search; fill results and footprints. Returns the number of scenes."""
        try:
            found = self.backend.search(self.query())
        except EOXError as exc:
            self.fail(exc, "Search")
            return 0
        items, frame = found.items, found.frame.copy()
        self._found = {it.id: it for it in items}
        footprints = {it.id: it.geometry for it in items if it.geometry}
        bounds = {it.id: tuple(it.bbox) for it in items if it.bbox}
        self.param.update(results=frame, footprints=footprints, bounds=bounds)
        if frame.empty:
            self.status = "No scenes match"
            self.notify("No scenes match the search: widen the dates, raise the cloud limit "
                        "or move the point/place.", "warning")
        else:
            self.status = f"{len(frame)} scene(s) of {self.collection}"
            self.resolved()
        return len(frame)

    def collection_query(self) -> Collection:
        """The displayed collection as an engine query, checked against the catalog once
        per collection rather than for every chain built (each preset, each date played)."""
        if self._coll[0] != self.collection or self._coll[1] is None:
            self._coll = (self.collection,
                          Collection(self.collection, catalog=self.backend.catalog))
        return self._coll[1]

    def selected_band_names(self) -> list[str]:
        """Band names every selected scene has (empty when unknown or nothing selected)."""
        return self._selected_scenes()[0]

    def selected_boxes(self) -> list[tuple]:
        """(W, S, E, N) of each selected scene: from its item, else from the last search."""
        return self._selected_scenes()[1] or [self.bounds[i] for i in self.selected
                                              if i in self.bounds]

    def _selected_scenes(self) -> tuple[list[str], list[tuple]]:
        key = (self.collection, tuple(self.selected))
        if self._selected_info[0] != key:
            items = [self._found[i] for i in self.selected if i in self._found]
            if len(items) < len(self.selected):  # not from the last search (a shared link)
                try:
                    items = self.collection_query().ids(self.selected).items()
                except EOXError as exc:
                    log.info("selected scenes not read: %s", exc)
                    items = []
            boxes = [tuple(item.bbox) for item in items if item.bbox]
            self._selected_info = (key, common_band_names(items), boxes)
        return self._selected_info[1], self._selected_info[2]

    def selected_days(self) -> list[str]:
        """The sorted days (YYYY-MM-DD) of the selected scenes found by the last search."""
        if self.results.empty or "id" not in self.results:
            return []
        dates = self.results.get("Date", pd.Series(dtype=object))
        return sorted({str(d)[:10] for d in dates[self.results["id"].isin(self.selected)]})
