"""The per-session state every component reads and writes: one ``AppState`` per browser tab.

State flows one way: widgets set parameters here, the handlers here call the engine and set
derived parameters (results, chain, tile URL, statistics), and views redraw from those.
Engine errors never escape: they become a :class:`Notice` the UI shows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import count
from typing import Any

import pandas as pd
import param

from components.backend import Backend
from components.presets import (
    CUSTOM_EXPRESSION,
    CUSTOM_RGB,
    PRESETS,
    RGB_VMAX,
    data_bands,
    default_band,
    default_rgb,
    preset,
    presets_for,
)
from components.tilemath import GUESS_SIZE, visible_tiles
from engine.chain import Bands, Chain, Colormap, Expression, Scale, process
from engine.chain.bands import common_band_names
from engine.collection import Collection
from engine.errors import EOXError, InvalidInput
from engine.render.renderer import percentile_key

log = logging.getLogger(__name__)

#: Sort choices of the search form -> (property, ascending).
SORTS: dict[str, tuple[str, bool]] = {
    "Newest first": ("datetime", False),
    "Oldest first": ("datetime", True),
    "Least cloudy": ("eo:cloud_cover", True),
}

_notice_ids = count(1)


@dataclass(frozen=True)
class Notice:
    """A message for the user: level is "info", "success", "warning" or "error"."""

    text: str
    level: str = "info"
    detail: str = ""  # technical detail, shown on demand (a traceback)
    serial: int = field(default_factory=lambda: next(_notice_ids))


BBox = tuple[float, float, float, float]


def bbox_polygon(bbox: BBox) -> dict:
    """GeoJSON polygon of a (W, S, E, N) box."""
    w, s, e, n = bbox
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


class AppState(param.Parameterized):
    """Collection, query, results, selection, display chain, stretch and viewport of a session."""

    backend = param.ClassSelector(class_=Backend, constant=True, doc="Engine handles.")

    # -- query ------------------------------------------------------------------------
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

    # -- results ----------------------------------------------------------------------
    results = param.DataFrame(default=pd.DataFrame(), doc="Date, Platform, ... id per scene.")
    footprints = param.Dict(default={}, doc="Scene id -> GeoJSON footprint (WGS84).")
    bounds = param.Dict(default={}, doc="Scene id -> (W, S, E, N).")
    selected = param.List(default=[], item_type=str, doc="Ids of the scenes displayed.")

    # -- display ----------------------------------------------------------------------
    presets = param.List(default=[], doc="Keys of the presets the collection allows.")
    bands = param.List(default=[], item_type=str, doc="Band names of the collection.")
    preset = param.String(default="true-colour", doc="Preset key, or custom-rgb/-expression.")
    rgb = param.List(default=[], item_type=str, doc="Red, green, blue band names.")
    expression = param.String("", doc="Band math for a single-band product.")
    colormap = param.String("viridis", doc="Colormap of a single-band product.")
    vmin = param.List(default=[0.0], doc="Stretch low value per output band.")
    vmax = param.List(default=[RGB_VMAX], doc="Stretch high value per output band.")
    gamma = param.Number(1.0, bounds=(0.1, 5.0), doc="Stretch gamma.")
    opacity = param.Number(1.0, bounds=(0.0, 1.0), doc="Opacity of the scene layer.")
    function_code = param.String("", doc="Source of a user function (sandbox).")
    function_layer = param.String("", doc="Chain id of the user function drawn on the map "
                                  "(Functions tab, or a shared link); empty: none.")

    chain = param.ClassSelector(class_=Chain, default=None, allow_None=True,
                                doc="The displayed chain.")
    chain_id = param.String("", doc="Id of the displayed chain.")
    tile_url = param.String("", doc="XYZ template of the displayed chain ({X}/{Y}/{Z}).")
    statistics = param.Dict(default={}, doc="Statistics of the visible pixels, per band.")
    stretch_low = param.Number(2.0, bounds=(0.0, 100.0), doc="Percentile auto stretch maps to min.")
    stretch_high = param.Number(98.0, bounds=(0.0, 100.0),
                                doc="Percentile auto stretch maps to max.")
    histogram_bins = param.Integer(64, bounds=(8, 512), doc="Bins of the histogram of the view.")
    statistics_area = param.String("", doc="Id of the drawn area (``drawings``) the statistics "
                                   "and auto stretch describe; empty: the visible pixels.")

    # -- map --------------------------------------------------------------------------
    viewport = param.Tuple(default=None, length=4, allow_None=True,
                           doc="Visible W, S, E, N (WGS84), reported by the map.")
    map_size = param.Tuple(default=GUESS_SIZE, length=2,
                           doc="Inner width, height of the map in pixels, reported by the map.")
    view_request = param.Tuple(default=None, length=4, allow_None=True,
                               doc="W, S, E, N the map should show next (zoom actions); a box "
                                   "of zero height asks for exactly its width at its centre.")
    pick = param.Selector(objects=["off", "point", "box"], default="off",
                          doc="What a click (point) or box-select drag (box) on the map sets.")
    playing = param.Boolean(False, doc="True while the time slider plays its dates (the "
                            "tiles of the next dates go first: no preset prefetch then).")
    notice = param.ClassSelector(class_=Notice, default=None, allow_None=True)
    status = param.String("", doc="One line about the results.")
    drawings = param.List(default=[], item_type=dict,
                          doc="Shapes drawn on the map: GeoJSON Features (WGS84), each with "
                              "properties id, kind (polygon/box/line/point) and name.")

    def __init__(self, **params: Any) -> None:
        self._preset_ids: tuple[Any, list[str]] = (None, [])
        self._coll: tuple[Any, Collection | None] = (None, None)  # name -> checked query
        self._found: dict[str, Any] = {}  # id -> item of the last search
        # (collection, selected ids) -> band names every selected scene has, their boxes
        self._selected_info: tuple[Any, list[str], list[tuple]] = (None, [], [])
        self._adjusting = False  # refresh_chain is changing the display itself
        self._range_pending = False  # stretch the next display to its pixels (2..98 %)
        super().__init__(**params)
        names = self.backend.collection_names()
        self.param.collection.objects = names
        if self.collection is None and names:
            self.collection = names[0]
        elif self.collection is not None:
            self._collection_changed()

    # -- helpers ------------------------------------------------------------------------
    def notify(self, text: str, level: str = "info", *, detail: str = "") -> None:
        """Tell the user something (the shell shows it as a notification)."""
        self.notice = Notice(text, level, detail)

    def resolved(self) -> None:
        """An action succeeded: the banner about an earlier problem goes away."""
        if self.notice is not None and self.notice.level in ("error", "warning"):
            self.notice = None

    def fail(self, exc: EOXError, action: str) -> None:
        """Show an engine error with what was being done."""
        log.info("%s failed: %s", action, exc)
        self.notice = Notice(f"{action}: {exc}", "error")

    @property
    def single_band(self) -> bool:
        """True when the display is one band through a colormap."""
        return self.preset == CUSTOM_EXPRESSION or (
            self.preset not in (CUSTOM_RGB, CUSTOM_EXPRESSION) and preset(self.preset).single_band
        )

    # -- collection ---------------------------------------------------------------------
    @param.depends("collection", watch=True)
    def _collection_changed(self) -> None:
        if self.collection is None:
            return
        bands = self.backend.band_names(self.collection)
        allowed = [p.key for p in presets_for(bands)]
        rgb = default_rgb(bands)
        self._found = {}
        self._fit_filters()
        self.param.update(bands=bands, presets=allowed,
                          rgb=list(rgb) if rgb else (bands * 3)[:3],
                          results=pd.DataFrame(), footprints={}, bounds={}, selected=[],
                          status="")
        if allowed:
            self.choose_preset(self.preset if self.preset in allowed else allowed[0])
        elif rgb is not None:
            self.choose_preset(CUSTOM_RGB)
        elif bands:  # masks plus at most two data bands: one band in greyscale, with a legend
            self.show_band(default_band(bands) or bands[0])

    def _fit_filters(self) -> None:
        """Fit the search form to the collection: the cloud filter only where scenes carry
        eo:cloud_cover, the dates the collection spans."""
        try:
            facts = self.backend.facts(self.collection)
        except EOXError as exc:
            log.info("no facts about %s: %s", self.collection, exc)
            self.param.update(cloud_reason="", date_range=None)
            return
        reason = "" if "eo:cloud_cover" in facts.queryables else \
            f"{self.collection} scenes carry no cloud cover: the cloud filter does not apply"
        span = (_day(facts.first), _day(facts.last)) if facts.first and facts.last else None
        self.param.update(cloud_reason=reason, date_range=span)

    def choose_preset(self, key: str) -> None:
        """Switch to a preset: sets bands or expression, colormap and stretch together.
        A key the collection does not offer is refused with a notice naming those it does."""
        if key not in (*(p.key for p in PRESETS), CUSTOM_RGB, CUSTOM_EXPRESSION):
            offered = ", ".join([*self.presets, CUSTOM_RGB, CUSTOM_EXPRESSION])
            self.notify(f"Display: {self.collection} has no preset {key!r}; choose one of "
                        f"{offered}", "warning")
            return
        self._range_pending = False
        if key in (CUSTOM_RGB, CUSTOM_EXPRESSION):
            single = key == CUSTOM_EXPRESSION
            if single == self.single_band and self.vmin:  # same kind: keep the stretch
                lo, hi = self.vmin[0], self.vmax[0]
            else:  # an index is about -1..1, reflectance x 1e4 about 0..4000
                lo, hi = (-1.0, 1.0) if single else (0.0, RGB_VMAX)
            n = 1 if single else 3
            self.param.update(preset=key, vmin=[lo] * n, vmax=[hi] * n)
            return
        self.param.update(preset=key, **_preset_values(key))

    def show_band(self, band: str) -> None:
        """Show one band alone in greyscale (with a legend), stretched to the 2..98 %
        percentiles of the selected scenes' pixels once a scene is displayed."""
        self.param.update(preset=CUSTOM_EXPRESSION, expression=band, colormap="gray",
                          vmin=[0.0], vmax=[1.0])
        self._range_pending = True

    # -- search -------------------------------------------------------------------------
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
            coll = coll.filter_date(_day(self.start), _day(self.end))
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

    def zoom_to_place(self) -> None:
        """Show the place named in the search form."""
        from engine.gazetteer import place

        try:
            found = place(self.place.strip())
        except EOXError as exc:
            self.fail(exc, "Place")
            return
        self.show_box(found.bbox)

    # -- display ------------------------------------------------------------------------
    def collection_query(self) -> Collection:
        """The displayed collection as an engine query, checked against the catalog once
        per collection rather than for every chain built (each preset, each date played)."""
        if self._coll[0] != self.collection or self._coll[1] is None:
            self._coll = (self.collection,
                          Collection(self.collection, catalog=self.backend.catalog))
        return self._coll[1]

    def _display(self) -> dict[str, Any]:
        return {"single": self.single_band, "rgb": self.rgb, "expression": self.expression,
                "colormap": self.colormap, "vmin": self.vmin, "vmax": self.vmax}

    def _analytic(self, *, single: bool, rgb: list, expression: str, **_: Any) -> Chain:
        if not self.selected:
            raise InvalidInput("select at least one scene in the results")
        chain = process(self.collection_query().ids(self.selected), mosaic="latest")
        if single:
            if not expression.strip():
                raise InvalidInput("the band-math expression is empty")
            return chain.expression(expression.strip())
        if len(rgb) != 3 or not all(rgb):
            raise InvalidInput("pick three bands for red, green and blue")
        return chain.bands(*rgb)

    def _displayed(self, **display: Any) -> Chain:
        chain = self._analytic(**display).scale(list(display["vmin"]), list(display["vmax"]),
                                                gamma=self.gamma)
        return chain.colormap(display["colormap"]) if display["single"] else chain

    def analytic_chain(self) -> Chain:
        """The chain before stretching (values the statistics describe)."""
        return self._analytic(**self._display())

    def display_chain(self) -> Chain:
        """The chain drawn on the map: analytic chain, stretch, colormap."""
        return self._displayed(**self._display())

    def preset_chain(self, key: str) -> Chain:
        """The display chain preset ``key`` would draw for the selected scenes (the state
        is not changed): what a click on the preset shows."""
        values = {**self._display(), **_preset_values(key)}
        values["single"] = preset(key).single_band
        return self._displayed(**values)

    @param.depends("chain_id", "viewport", "map_size", watch=True)
    def _view_changed(self) -> None:
        self.prefetch_presets()

    def prefetch_presets(self, *, include_current: bool = False, group: str = "") -> int:
        """Ask the backend to render the visible tiles of the other presets ahead of a click,
        so switching preset only swaps a URL to cached tiles. Returns the tiles asked for."""
        if (self.backend.prefetch is None or not self.chain_id or self.viewport is None
                or self.playing):
            return 0
        key = (self.collection, tuple(self.selected), self.gamma, tuple(self.presets))
        if self._preset_ids[0] != key:
            ids = []
            have = {b.lower() for b in self.selected_band_names()}
            for name in self.presets:
                if have and not all(b.lower() in have for b in preset(name).needs):
                    continue  # a band the selected scenes lack: the service would refuse it
                try:
                    chain = self.preset_chain(name)
                    self.backend.register(chain)
                except EOXError as exc:
                    log.info("preset %s not prefetched: %s", name, exc)
                    continue
                ids.append(chain.id)
            self._preset_ids = (key, ids)
        chains = [c for c in self._preset_ids[1] if c != self.chain_id]
        if include_current:
            chains.insert(0, self.chain_id)
        boxes = [self.bounds[i] for i in self.selected if i in self.bounds]
        tiles = visible_tiles(self.viewport, self.map_size, within=boxes)
        if chains and tiles:
            self.backend.prefetch(chains, tiles, group or f"session-{id(self)}")
        return len(chains) * len(tiles)

    @param.depends("selected", "preset", "rgb", "expression", "colormap", "vmin", "vmax",
                   "gamma", watch=True)
    def _refresh_chain(self) -> None:
        if not self._adjusting:
            self.refresh_chain()

    def refresh_chain(self) -> bool:
        """Rebuild and register the display chain; on an error keep the last good one.

        A display reading a band the selected scenes lack (true colour on a Sentinel-1
        scene) falls back to one they have, with a notice saying why; a chain the tile
        service would still refuse is not shown, and its error is."""
        if not self.selected:
            self.param.update(chain=None, chain_id="", tile_url="")
            return False
        self._adjusting = True
        try:
            why = self._fit_selected()
            if self._range_pending:
                self._range_pending = False
                self._stretch_to_scenes()
        finally:
            self._adjusting = False
        try:
            chain = self.display_chain()
            url = self.backend.register(chain)
            if not self.selected_band_names():  # the scenes' bands were not checked above
                self._check_tiles(chain)
        except EOXError as exc:
            log.info("Display failed: %s", exc)
            self.notice = Notice(f"Display: {exc} — pick a preset or bands the selected "
                                 "scene(s) have, or fix the expression.", "error")
            return False
        self.param.update(chain=chain, chain_id=chain.id, tile_url=url)
        self.resolved()
        if why:
            self.notify(why, "info")
        return True

    def selected_band_names(self) -> list[str]:
        """Band names every selected scene has (empty when unknown or nothing selected)."""
        return self._selected_scenes()[0]

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

    def _fit_selected(self) -> str:
        """Switch to a display the selected scenes can draw when the current one reads a
        band they lack; returns why (empty when nothing changed)."""
        have = self.selected_band_names()
        if not have:
            return ""
        try:
            needed = self._analytic(**self._display()).read_bands()
        except EOXError:
            return ""  # refresh_chain reports it
        low = {b.lower() for b in have}
        missing = [b for b in needed if b.lower() not in low]
        if not missing:
            return ""
        fits = [p.key for p in presets_for(have)]
        if fits:
            key = next((k for k in fits if k in self.presets), fits[0])
            self.choose_preset(key)
            instead = preset(key).label.lower()
        else:
            band = default_band(have) or have[0]
            self.show_band(band)
            instead = f"band {band} in greyscale"
        scenes = "the selected scene has" if len(self.selected) == 1 else \
            "the selected scenes share"
        shown = ", ".join(data_bands(have)[:12]) or ", ".join(have[:12])
        return (f"Display: {scenes} no band {missing[0]!r} (only {shown}), so it shows "
                f"{instead} instead. Pick another preset or bands in the Display tab.")

    def _stretch_to_scenes(self) -> None:
        """Stretch the display between the 2 and 98 % percentiles of the selected scenes."""
        boxes = self._selected_scenes()[1] or [self.bounds[i] for i in self.selected
                                               if i in self.bounds]
        if not boxes:
            return
        box = (min(b[0] for b in boxes), min(b[1] for b in boxes),
               max(b[2] for b in boxes), max(b[3] for b in boxes))
        try:
            stats = self.backend.statistics(self.analytic_chain(), bbox_polygon(box),
                                            bins=8, percentiles=(2, 98))
        except EOXError as exc:
            log.info("no stretch from the scenes' pixels: %s", exc)
            return
        lo, hi = [], []
        for band in stats.values():
            p = band.get("percentiles") or {}
            a, b = p.get(percentile_key(2)), p.get(percentile_key(98))
            if a is None or b is None:
                return
            if b <= a:
                b = a + max(abs(a) * 1e-3, 1e-6)
            lo.append(_round(a)); hi.append(_round(b))
        self.param.update(vmin=lo, vmax=hi)

    def _check_tiles(self, chain: Chain) -> None:
        """Raise the error the tile service would answer this chain's tiles with (resolving
        every selected scene's band files, as a tile request does first)."""
        scenes = getattr(self.backend.renderer, "scenes", None)
        if scenes is not None:
            scenes(chain)

    def apply_chain(self, chain: Chain) -> None:
        """Show a stored chain (from a link): its collection, scenes, bands and stretch."""
        src = chain.source
        changes: dict[str, Any] = {}
        for step in chain.steps:
            if isinstance(step, Bands) and len(step.bands) == 3:
                changes.update(rgb=list(step.bands), preset=CUSTOM_RGB)
            elif isinstance(step, Expression):
                changes.update(expression=step.expression, preset=CUSTOM_EXPRESSION)
            elif isinstance(step, Scale) and step.min is not None and step.max is not None:
                changes.update(vmin=list(step.min), vmax=list(step.max), gamma=step.gamma)
            elif isinstance(step, Colormap):
                changes["colormap"] = step.colormap
        if "preset" in changes:
            changes["preset"] = self._matching_preset(changes)
        if src.collection != self.collection:
            self.collection = src.collection
        self._range_pending = False  # the link's stretch wins
        self.param.update(selected=list(src.ids or ()), **changes)

    def _matching_preset(self, changes: dict[str, Any]) -> str:
        for key in self.presets:
            p = preset(key)
            if p.single_band and changes.get("expression") == p.expression:
                return key
            if not p.single_band and changes.get("rgb") == list(p.bands):
                return key
        return changes["preset"]

    def plain_words(self) -> str:
        """The displayed chain as a person says it: "Landsat 5/7 surface reflectance,
        2013-05-11, NDVI, RdYlGn -1..1" (collection title, scene dates, what, stretch)."""
        if self.chain is None:
            return ""
        try:
            title = self.backend.facts(self.collection).title.split(" (")[0] or self.collection
        except EOXError:
            title = self.collection
        days = sorted({str(d)[:10] for d in self.results.get("Date", pd.Series(dtype=object))
                       [self.results["id"].isin(self.selected)]} if not self.results.empty
                      and "id" in self.results else set())
        when = ", ".join(days[:3]) + (f" (+{len(days) - 3})" if len(days) > 3 else "")
        if self.preset not in (CUSTOM_RGB, CUSTOM_EXPRESSION):
            what = preset(self.preset).label
        elif self.single_band:
            what = self.expression
        else:
            what = "RGB " + " ".join(self.rgb)
        lo, hi = (f"{v:g}" for v in (self.vmin[0], self.vmax[0])) if self.vmin else ("", "")
        stretch = f"{self.colormap} {lo}..{hi}" if self.single_band else f"{lo}..{hi}"
        return ", ".join(p for p in (title, when, what, stretch) if p)

    # -- stretch ------------------------------------------------------------------------
    def visible_geometry(self) -> dict:
        """The visible area (clipped to the selected scenes) as a GeoJSON polygon."""
        boxes = [self.bounds[i] for i in self.selected if i in self.bounds]
        view = self.viewport
        if view is None and not boxes:
            raise InvalidInput("the map has not reported its view yet")
        if boxes:
            w = min(b[0] for b in boxes); s = min(b[1] for b in boxes)
            e = max(b[2] for b in boxes); n = max(b[3] for b in boxes)
            if view is not None:
                w, s = max(w, view[0]), max(s, view[1])
                e, n = min(e, view[2]), min(n, view[3])
                if w >= e or s >= n:
                    raise InvalidInput("the selected scenes are outside the visible map: "
                                       "zoom to them first")
            return bbox_polygon((w, s, e, n))
        return bbox_polygon(view)  # type: ignore[arg-type]

    def compute_statistics(self) -> dict:
        """Statistics of the visible pixels (or of ``statistics_area``) of the analytic chain:
        histogram in ``histogram_bins`` bins, percentiles ``stretch_low`` and ``stretch_high``."""
        try:
            area = next((f["geometry"] for f in self.drawings
                         if f["id"] == self.statistics_area), None)
            if self.statistics_area and area is None:
                raise InvalidInput(f"the statistics area {self.statistics_area!r} is no longer "
                                   "drawn: pick another area or the map's view")
            stats = self.backend.statistics(
                self.analytic_chain(), area or self.visible_geometry(), bins=self.histogram_bins,
                percentiles=(self.stretch_low, self.stretch_high))
        except EOXError as exc:
            self.fail(exc, "Statistics")
            return {}
        self.statistics = stats
        return stats

    def auto_stretch(self, low: float | None = None, high: float | None = None) -> bool:
        """Stretch each band between two percentiles of the visible pixels (by default
        ``stretch_low`` and ``stretch_high``; given values become those)."""
        low = self.stretch_low if low is None else float(low)
        high = self.stretch_high if high is None else float(high)
        if not 0 <= low < high <= 100:
            self.notify(f"Auto stretch: the low percentile ({low:g}) must be below the high "
                        f"one ({high:g}), both within 0..100", "warning")
            return False
        self.param.update(stretch_low=low, stretch_high=high)
        stats = self.compute_statistics()
        if not stats:
            return False
        pl, ph = percentile_key(low), percentile_key(high)
        lo, hi = [], []
        for name, band in stats.items():
            p = band.get("percentiles") or {}
            a, b = p.get(pl), p.get(ph)
            if a is None or b is None:
                self.notify(f"Auto stretch: band {name} has no valid pixel in view", "warning")
                return False
            if b <= a:
                b = a + max(abs(a) * 1e-3, 1e-6)
            lo.append(_round(a)); hi.append(_round(b))
        self.param.update(vmin=lo, vmax=hi)
        return True

    # -- zoom ---------------------------------------------------------------------------
    def show_box(self, box: Any) -> None:
        """Move the map to W, S, E, N, also when it is the box asked for last (the user
        panned away since): a zoom action always zooms, and clears an earlier problem."""
        box = tuple(float(v) for v in box)
        self.resolved()
        if box == self.view_request:
            self.param.trigger("view_request")
        else:
            self.view_request = box

    def zoom_to_selected(self) -> None:
        """Show the selected scenes, also those the last search did not list (a shared
        link, a search since): their bounds come from the catalog then."""
        boxes = (self._selected_scenes()[1] if self.selected else []) or [
            self.bounds[i] for i in self.selected if i in self.bounds]
        self._zoom_to_boxes(boxes, "no scene is selected")

    def zoom_to_results(self) -> None:
        """Show every result."""
        self._zoom_to_boxes(list(self.bounds.values()), "the search has no results")

    def zoom_to_coordinates(self, lon: float, lat: float, *, span_km: float = 20.0) -> None:
        """Show a square of ``span_km`` around lon/lat."""
        if not (-180 <= lon <= 180 and -85 <= lat <= 85):
            self.notify(f"Zoom: {lon}, {lat} is not a lon/lat within -180..180, -85..85",
                        "error")
            return
        dlat = span_km / 2 / 111.32
        dlon = dlat / max(math.cos(math.radians(lat)), 0.05)
        self.show_box((lon - dlon, lat - dlat, lon + dlon, lat + dlat))

    def _zoom_to_boxes(self, boxes: list[tuple], empty: str) -> None:
        if not boxes:
            self.notify(f"Zoom: {empty}", "warning")
            return
        self.show_box((min(b[0] for b in boxes), min(b[1] for b in boxes),
                       max(b[2] for b in boxes), max(b[3] for b in boxes)))

    # -- first open ---------------------------------------------------------------------
    def open_latest(self) -> bool:
        """Show the newest scene of the catalog in its first preset, zoomed to it."""
        newest = self.backend.newest()
        if newest is None:
            return False
        collection, item_id = newest
        self.collection = collection
        if self.presets:  # else the collection's default (custom RGB or one grey band) stays
            self.choose_preset(self.presets[0])
        if not self.search():
            return False
        ids = [str(i) for i in self.results["id"]]
        self.selected = [item_id if item_id in ids else ids[0]]
        self.zoom_to_selected()
        return True


def _day(value: date | datetime | None) -> date | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    return value


def _preset_values(key: str) -> dict[str, Any]:
    """Bands or expression, colormap and stretch of a preset (what choosing it sets)."""
    p = preset(key)
    if p.single_band:
        return {"expression": p.expression, "colormap": p.colormap or "viridis",
                "vmin": [p.vmin], "vmax": [p.vmax]}
    return {"rgb": list(p.bands), "vmin": [p.vmin] * 3, "vmax": [p.vmax] * 3}


def _round(v: float) -> float:
    if v == 0 or not math.isfinite(v):
        return float(v)
    digits = max(0, 3 - math.floor(math.log10(abs(v))))
    return round(float(v), digits)
