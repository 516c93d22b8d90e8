"""Display tab: presets the collection allows, custom RGB bands, band math, colormap with a
colorbar legend and opacity (user functions have their own tab: components.functions).

A display error (a band the scene lacks, a bad expression) is a ``state.notice``; the shell
shows it once (its message bar and a toast), so this tab adds no alert of its own."""

from __future__ import annotations

import html
import json
from typing import Any

import matplotlib
import panel as pn
import param

from components.presets import (
    COMMON_COLORMAPS,
    CUSTOM_EXPRESSION,
    CUSTOM_RGB,
    RGB_VMAX,
    preset,
)
from components.state import AppState


def colorbar_html(name: str, vmin: float, vmax: float, *, title: str = "") -> str:
    """A horizontal colorbar (CSS gradient) with its min/max labels, for a legend."""
    cmap = matplotlib.colormaps[name]
    stops = ", ".join(matplotlib.colors.to_hex(cmap(i / 15)) for i in range(16))
    return (
        f'<div class="eox-colorbar" style="width:260px;font:12px sans-serif">'
        f'<div style="margin-bottom:2px">{html.escape(title)}</div>'
        f'<div style="height:12px;border-radius:2px;background:linear-gradient(to right, {stops})">'
        f'</div><div style="display:flex;justify-content:space-between">'
        f'<span>{vmin:g}</span><span>{(vmin + vmax) / 2:g}</span><span>{vmax:g}</span></div></div>'
    )


class DisplayPanel(pn.viewable.Viewer):
    """The Display tab of a session."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        s = self.state
        # one choice, shown as such: a column of buttons of which one is pressed (the FAST
        # design drew the radio boxes as squares, which read as independent checkboxes)
        self._preset = pn.widgets.RadioButtonGroup(
            name="Preset", options=self._preset_options(), value=s.preset,
            orientation="vertical", button_type="primary", button_style="outline",
            sizing_mode="stretch_width")
        self._preset.param.watch(self._preset_picked, "value")
        self._rgb = [pn.widgets.Select(name=c, options=list(s.bands), width=95)
                     for c in ("Red", "Green", "Blue")]
        for w in self._rgb:
            w.param.watch(self._rgb_picked, "value")
        self._expression = pn.widgets.TextInput(
            name="Band math (one band; ';' separates several)", value=s.expression,
            placeholder="(nir - red) / (nir + red)", sizing_mode="stretch_width")
        self._expression.param.watch(self._expression_entered, "value")
        self._colormap = pn.widgets.Select(
            name="Colormap", value=s.colormap, width=150,
            options=COMMON_COLORMAPS + sorted(set(matplotlib.colormaps) - set(COMMON_COLORMAPS)))
        self._colormap.param.watch(lambda e: setattr(self.state, "colormap", e.new), "value")
        self._opacity = pn.widgets.FloatSlider.from_param(s.param.opacity, name="Opacity",
                                                          step=0.05, sizing_mode="stretch_width")
        self._legend = pn.pane.HTML("", margin=(5, 10))
        self._chain = pn.pane.Markdown("", margin=(0, 10), name="chain-words")
        self._chain_json = pn.widgets.Toggle(name="Show the chain's JSON", width=170,
                                             button_type="light")
        self._json = pn.pane.JSON({}, depth=3, visible=False, sizing_mode="stretch_width",
                                  name="chain-json")
        self._chain_json.param.watch(lambda e: setattr(self._json, "visible", e.new), "value")
        self._sync()

    def _preset_options(self) -> dict[str, str]:
        opts = {preset(k).label: k for k in self.state.presets}
        opts["Custom RGB"] = CUSTOM_RGB
        opts["Band math"] = CUSTOM_EXPRESSION
        return opts

    # -- widgets -> state ---------------------------------------------------------------
    def _preset_picked(self, event: param.parameterized.Event) -> None:
        # new options (another collection) may reset the widget to None, and _sync sets it
        # back to the state's preset: neither is the user picking a preset
        if event.new is None or event.new == self.state.preset:
            return
        self.state.choose_preset(event.new)

    def _rgb_picked(self, event: param.parameterized.Event) -> None:
        # one channel changed: the others are the state's (widgets being set from the state
        # one by one show the same band as the state, so that echo changes nothing)
        rgb = list(self.state.rgb) if len(self.state.rgb) == 3 else [w.value for w in self._rgb]
        rgb[self._rgb.index(event.obj)] = event.new
        if rgb != list(self.state.rgb):
            changes: dict[str, Any] = {"rgb": rgb, "preset": CUSTOM_RGB}
            if self.state.single_band:
                changes.update(vmin=[0.0] * 3, vmax=[RGB_VMAX] * 3)
            self.state.param.update(**changes)

    def _expression_entered(self, event: param.parameterized.Event) -> None:
        text = (event.new or "").strip()
        if not text or text == self.state.expression:  # nothing, or the state's own text
            return
        changes: dict[str, Any] = {"expression": text, "preset": CUSTOM_EXPRESSION}
        if not self.state.single_band:
            changes.update(vmin=[-1.0], vmax=[1.0])
        self.state.param.update(**changes)

    # -- state -> widgets ---------------------------------------------------------------
    @param.depends("state.presets", "state.preset", "state.bands", "state.rgb",
                   "state.expression", "state.colormap", "state.vmin", "state.vmax",
                   "state.chain", watch=True)
    def _sync(self) -> None:
        s = self.state
        # widgets take the state's values: their watchers see the state's own values and
        # change nothing (no echo)
        self._preset.param.update(options=self._preset_options(), value=s.preset)
        for w, band in zip(self._rgb, s.rgb or [None] * 3, strict=False):
            w.param.update(options=list(s.bands), **({"value": band} if band in s.bands else {}))
        self._expression.value = s.expression
        self._colormap.value = s.colormap
        single = s.single_band
        for w in self._rgb:
            w.visible = not single
        self._colormap.visible = single
        if single and s.vmin and s.vmax:
            self._legend.object = colorbar_html(s.colormap, float(s.vmin[0]), float(s.vmax[0]),
                                                title=s.expression)
            self._legend.visible = True
        else:
            self._legend.visible = False
        self._chain.object = f"**Shown:** {s.plain_words()}" if s.chain else ""
        self._json.object = json.loads(s.chain.to_json()) if s.chain else {}

    @property
    def legend(self) -> pn.pane.HTML:
        """The colorbar legend (also shown under the map)."""
        return self._legend

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("**Preset**", margin=(0, 10)),
            self._preset,
            pn.pane.Markdown("**Custom bands**", margin=(5, 10, 0, 10)),
            pn.Row(*self._rgb),
            self._expression,
            self._colormap,
            self._legend,
            self._opacity,
            self._chain,
            self._chain_json,
            self._json,
            sizing_mode="stretch_width",
        )
