"""The display side of the session state: bands or band math, stretch, and the chain they make.

The displayed chain is derived from the selection and the display parameters: a watcher
(``AppState``'s, as it joins the search's selection) rebuilds it when one of them changes. When the display reads a band the selected scenes
lack, the rebuild first switches the display to one they can draw; that switch re-enters the
watcher, which draws it, and the outer call sees the chain already drawn from the same inputs
(``_drawn``), so nothing is built twice and no guard flag is needed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import param

from components.presets import (
    CUSTOM_EXPRESSION,
    CUSTOM_RGB,
    PRESETS,
    RGB_VMAX,
    data_bands,
    default_band,
    preset,
    presets_for,
)
from components.statebase import StateBase, bbox_polygon, union_box
from engine.chain import Bands, Chain, Colormap, Expression, Scale, process
from engine.collection import Collection
from engine.errors import EOXError, InvalidInput
from engine.render.renderer import percentile_key

log = logging.getLogger(__name__)

#: The display parameters the chain is made of (with the selection).
DISPLAY_PARAMS = ("preset", "rgb", "expression", "colormap", "vmin", "vmax", "gamma")


class DisplayState(StateBase):
    """Bands or expression, colormap and stretch of the selected scenes, and their chain.

    Reads the selection from :class:`~components.searchstate.SearchState` (``collection``,
    ``selected``, ``collection_query``, ``selected_band_names``, ``selected_boxes``,
    ``selected_days``), which ``AppState`` is composed with."""

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
    stretch_pending = param.Boolean(False, doc="Stretch the next display between the 2 and "
                                    "98 % percentiles of the selected scenes' pixels (one "
                                    "band shown alone, before any scene was displayed).")

    chain = param.ClassSelector(class_=Chain, default=None, allow_None=True,
                                doc="The displayed chain.")
    chain_id = param.String("", doc="Id of the displayed chain.")
    tile_url = param.String("", doc="XYZ template of the displayed chain ({X}/{Y}/{Z}).")

    # provided by SearchState in AppState
    collection: str | None
    selected: list[str]
    collection_query: Callable[[], Collection]
    selected_band_names: Callable[[], list[str]]
    selected_boxes: Callable[[], list[tuple]]

    def __init__(self, **params: Any) -> None:
        self._drawn: tuple[tuple, bool] | None = None  # inputs of the last rebuild, success
        super().__init__(**params)

    @property
    def single_band(self) -> bool:
        """True when the display is one band through a colormap."""
        return self.preset == CUSTOM_EXPRESSION or (
            self.preset not in (CUSTOM_RGB, CUSTOM_EXPRESSION) and preset(self.preset).single_band
        )

    # -- choosing -----------------------------------------------------------------------
    def display_for(self, bands: list[str], rgb: tuple[str, ...] | None) -> dict[str, Any]:
        """The parameter changes that fit the display to a collection's bands (the caller
        applies them, then calls :meth:`default_display`)."""
        return {"bands": bands, "presets": [p.key for p in presets_for(bands)],
                "rgb": list(rgb) if rgb else (bands * 3)[:3]}

    def default_display(self, rgb: tuple[str, ...] | None) -> None:
        """Keep the preset if the collection offers it, else its first preset, else custom
        RGB, else one band in greyscale (masks plus at most two data bands)."""
        if self.presets:
            self.choose_preset(self.preset if self.preset in self.presets else self.presets[0])
        elif rgb is not None:
            self.choose_preset(CUSTOM_RGB)
        elif self.bands:
            self.show_band(default_band(self.bands) or self.bands[0])

    def choose_preset(self, key: str) -> None:
        """Switch to a preset: sets bands or expression, colormap and stretch together.
        A key the collection does not offer is refused with a notice naming those it does."""
        if key not in (*(p.key for p in PRESETS), CUSTOM_RGB, CUSTOM_EXPRESSION):
            offered = ", ".join([*self.presets, CUSTOM_RGB, CUSTOM_EXPRESSION])
            self.notify(f"Display: {self.collection} has no preset {key!r}; choose one of "
                        f"{offered}", "warning")
            return
        if key in (CUSTOM_RGB, CUSTOM_EXPRESSION):
            single = key == CUSTOM_EXPRESSION
            if single == self.single_band and self.vmin:  # same kind: keep the stretch
                lo, hi = self.vmin[0], self.vmax[0]
            else:  # an index is about -1..1, reflectance x 1e4 about 0..4000
                lo, hi = (-1.0, 1.0) if single else (0.0, RGB_VMAX)
            n = 1 if single else 3
            self.param.update(preset=key, vmin=[lo] * n, vmax=[hi] * n, stretch_pending=False)
            return
        self.param.update(preset=key, stretch_pending=False, **preset_values(key))

    def show_band(self, band: str) -> None:
        """Show one band alone in greyscale (with a legend), stretched to the 2..98 %
        percentiles of the selected scenes' pixels once a scene is displayed."""
        self.param.update(preset=CUSTOM_EXPRESSION, expression=band, colormap="gray",
                          vmin=[0.0], vmax=[1.0], stretch_pending=True)

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
        # the link's stretch wins over a pending one
        self.param.update(selected=list(src.ids or ()), stretch_pending=False, **changes)

    def _matching_preset(self, changes: dict[str, Any]) -> str:
        for key in self.presets:
            p = preset(key)
            if p.single_band and changes.get("expression") == p.expression:
                return key
            if not p.single_band and changes.get("rgb") == list(p.bands):
                return key
        return changes["preset"]

    # -- chains -------------------------------------------------------------------------
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
        values = {**self._display(), **preset_values(key)}
        values["single"] = preset(key).single_band
        return self._displayed(**values)

    def _inputs(self) -> tuple:
        return (self.collection, tuple(self.selected), self.single_band,
                *(tuple(v) if isinstance(v, list) else v
                  for v in (getattr(self, k) for k in DISPLAY_PARAMS)))

    def refresh_chain(self) -> bool:
        """Rebuild and register the display chain; on an error keep the last good one.

        A display reading a band the selected scenes lack (true colour on a Sentinel-1
        scene) falls back to one they have, with a notice saying why; a chain the tile
        service would still refuse is not shown, and its error is."""
        if not self.selected:
            self._drawn = None
            if self.chain is not None or self.chain_id or self.tile_url:
                self.param.update(chain=None, chain_id="", tile_url="")
            return False
        why = self._fit_selected()  # a change re-enters here through the watcher
        if self.stretch_pending:
            self.stretch_pending = False
            self._stretch_to_scenes()  # likewise
        inputs = self._inputs()
        if self._drawn is not None and self._drawn[0] == inputs:
            ok = self._drawn[1]  # the re-entered call drew these inputs already
        else:
            ok = self._draw()
            self._drawn = (inputs, ok)
        if ok and why:
            self.notify(why, "info")
        return ok

    def _draw(self) -> bool:
        try:
            chain = self.display_chain()
            url = self.backend.register(chain)
            if not self.selected_band_names():  # the scenes' bands were not checked above
                self._check_tiles(chain)
        except EOXError as exc:
            log.info("Display failed: %s", exc)
            self.notify(f"Display: {exc} — pick a preset or bands the selected scene(s) "
                        "have, or fix the expression.", "error")
            return False
        self.param.update(chain=chain, chain_id=chain.id, tile_url=url)
        self.resolved()
        return True

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
        boxes = self.selected_boxes()
        if not boxes:
            return
        try:
            stats = self.backend.statistics(self.analytic_chain(), bbox_polygon(union_box(boxes)),
                                            bins=8, percentiles=(2, 98))
        except EOXError as exc:
            log.info("no stretch from the scenes' pixels: %s", exc)
            return
        stretch = percentile_stretch(stats, 2, 98)
        if isinstance(stretch, tuple):
            self.param.update(vmin=stretch[0], vmax=stretch[1])

    def _check_tiles(self, chain: Chain) -> None:
        """Raise the error the tile service would answer this chain's tiles with (resolving
        every selected scene's band files, as a tile request does first)."""
        self.backend.renderer.scenes(chain)


def preset_values(key: str) -> dict[str, Any]:
    """Bands or expression, colormap and stretch of a preset (what choosing it sets)."""
    p = preset(key)
    if p.single_band:
        return {"expression": p.expression, "colormap": p.colormap or "viridis",
                "vmin": [p.vmin], "vmax": [p.vmax]}
    return {"rgb": list(p.bands), "vmin": [p.vmin] * 3, "vmax": [p.vmax] * 3}


def percentile_stretch(stats: dict, low: float, high: float) -> tuple[list, list] | str:
    """(vmin, vmax) per band between two percentiles of ``statistics`` output, or the name of
    the first band without them."""
    pl, ph = percentile_key(low), percentile_key(high)
    lo, hi = [], []
    for name, band in stats.items():
        p = band.get("percentiles") or {}
        a, b = p.get(pl), p.get(ph)
        if a is None or b is None:
            return str(name)
        if b <= a:
            b = a + max(abs(a) * 1e-3, 1e-6)
        lo.append(_round(a)); hi.append(_round(b))
    return lo, hi


def _round(v: float) -> float:
    if v == 0 or not math.isfinite(v):
        return float(v)
    digits = max(0, 3 - math.floor(math.log10(abs(v))))
    return round(float(v), digits)
