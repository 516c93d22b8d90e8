"""The per-session state every component reads and writes: one ``AppState`` per browser tab.

State flows one way: widgets set parameters here, the handlers here call the engine and set
derived parameters (results, chain, tile URL, statistics), and views redraw from those.
Engine errors never escape: they become a :class:`Notice` the UI shows.

``AppState`` is composed of pieces that each own their parameters and the handlers that
derive values from them: the map view (:mod:`components.viewstate`), the search
(:mod:`components.searchstate`), the display and its chain (:mod:`components.displaystate`),
the statistics (:mod:`components.statsstate`) and the user function (:class:`FunctionState`).
What joins them (a collection switch, zooming to scenes, prefetching presets, the first
open) lives here. Components keep reading one flat ``state`` (STYLE.md rule 9).
"""

from __future__ import annotations

import logging
from typing import Any

import param

from components.displaystate import DISPLAY_PARAMS, DisplayState
from components.presets import CUSTOM_EXPRESSION, CUSTOM_RGB, default_rgb, preset
from components.searchstate import SORTS, SearchState
from components.statebase import Notice, StateBase, bbox_polygon, union_box
from components.statsstate import StatisticsState
from components.tilemath import visible_tiles
from components.viewstate import ViewState
from engine.errors import EOXError

log = logging.getLogger(__name__)

__all__ = ["SORTS", "AppState", "FunctionState", "Notice", "bbox_polygon"]


class FunctionState(StateBase):
    """The user function of the Functions tab and the layer it draws."""

    function_code = param.String("", doc="Source of a user function (sandbox).")
    function_layer = param.String("", doc="Chain id of the user function drawn on the map "
                                  "(Functions tab, or a shared link); empty: none.")


class AppState(ViewState, SearchState, DisplayState, StatisticsState, FunctionState):
    """Collection, query, results, selection, display chain, stretch and viewport of a session."""

    def __init__(self, **params: Any) -> None:
        self._preset_ids: tuple[Any, list[str]] = (None, [])
        super().__init__(**params)
        names = self.backend.collection_names()
        self.param.collection.objects = names
        if self.collection is None and names:
            self.collection = names[0]
        elif self.collection is not None:
            self._collection_changed()

    # -- collection ---------------------------------------------------------------------
    @param.depends("collection", watch=True)
    def _collection_changed(self) -> None:
        if self.collection is None:
            return
        bands = self.backend.band_names(self.collection)
        rgb = default_rgb(bands)
        self.param.update(**self.search_reset(), **self.display_for(bands, rgb))
        self.default_display(rgb)

    @param.depends("selected", *DISPLAY_PARAMS, watch=True)
    def _refresh_chain(self) -> None:
        self.refresh_chain()

    # -- zoom ---------------------------------------------------------------------------
    def zoom_to_place(self) -> None:
        """Show the place named in the search form."""
        from engine.gazetteer import place

        try:
            found = place(self.place.strip())
        except EOXError as exc:
            self.fail(exc, "Place")
            return
        self.show_box(found.bbox)

    def zoom_to_selected(self) -> None:
        """Show the selected scenes, also those the last search did not list (a shared
        link, a search since): their bounds come from the catalog then."""
        self._zoom_to_boxes(self.selected_boxes(), "no scene is selected")

    def zoom_to_results(self) -> None:
        """Show every result."""
        self._zoom_to_boxes(list(self.bounds.values()), "the search has no results")

    def _zoom_to_boxes(self, boxes: list[tuple], empty: str) -> None:
        if not boxes:
            self.notify(f"Zoom: {empty}", "warning")
            return
        self.show_box(union_box(boxes))

    # -- what the map shows -------------------------------------------------------------
    def plain_words(self) -> str:
        """The displayed chain as a person says it: "Landsat 5/7 surface reflectance,
        2013-05-11, NDVI, RdYlGn -1..1" (collection title, scene dates, what, stretch)."""
        if self.chain is None:
            return ""
        try:
            title = self.backend.facts(self.collection).title.split(" (")[0] or self.collection
        except EOXError:
            title = self.collection
        days = self.selected_days()
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
