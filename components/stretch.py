"""Stretch tab: min/max per band, automatic stretch from percentiles of the visible pixels,
gamma, and the histogram of the visible pixels with min/max drawn."""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import param

from components.state import AppState

#: Percentiles the statistics report (see TileRenderer.statistics).
LOW_PERCENTILES = [2, 5, 25]
HIGH_PERCENTILES = [98, 95, 75]
BAND_COLOURS = ["#e53935", "#43a047", "#1e88e5"]


class StretchPanel(pn.viewable.Viewer):
    """The Stretch tab of a session."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        s = self.state
        self._low = pn.widgets.Select(name="Low percentile", options=LOW_PERCENTILES, value=2,
                                      width=120)
        self._high = pn.widgets.Select(name="High percentile", options=HIGH_PERCENTILES,
                                       value=98, width=120)
        self._auto = pn.widgets.Button(name="Auto stretch (visible pixels)",
                                       button_type="primary", sizing_mode="stretch_width")
        self._auto.on_click(lambda e: self.state.auto_stretch(self._low.value, self._high.value))
        self._refresh = pn.widgets.Button(name="Histogram of the view",
                                          sizing_mode="stretch_width")
        self._refresh.on_click(lambda e: self.state.compute_statistics())
        self._gamma = pn.widgets.FloatSlider.from_param(s.param.gamma, name="Gamma", step=0.05,
                                                        sizing_mode="stretch_width")
        self._rows = pn.Column(sizing_mode="stretch_width")
        self._hist = pn.pane.HoloViews(None, sizing_mode="stretch_width", height=230)
        self._inputs: list[tuple[Any, Any]] = []
        self._build_inputs()
        self._draw_histogram()

    def _labels(self) -> list[str]:
        s = self.state
        if s.single_band:
            return ["value"]
        return list(s.rgb) if len(s.rgb) == 3 else ["R", "G", "B"]

    @param.depends("state.vmin", "state.vmax", "state.preset", "state.rgb", watch=True)
    def _build_inputs(self) -> None:
        s = self.state
        labels = self._labels()
        if len(self._inputs) == len(s.vmin) and len(labels) == len(s.vmin):
            for (lo, hi), a, b in zip(self._inputs, s.vmin, s.vmax, strict=False):
                lo.value, hi.value = float(a), float(b)
            for (lo, _), name in zip(self._inputs, labels, strict=False):
                lo.name = f"{name} min"
            self._draw_histogram()
            return
        self._inputs = []
        rows = []
        for i, (a, b) in enumerate(zip(s.vmin, s.vmax, strict=False)):
            name = labels[i] if i < len(labels) else f"band {i + 1}"
            lo = pn.widgets.FloatInput(name=f"{name} min", value=float(a), width=130)
            hi = pn.widgets.FloatInput(name="max", value=float(b), width=130)
            lo.param.watch(self._edited, "value")
            hi.param.watch(self._edited, "value")
            self._inputs.append((lo, hi))
            rows.append(pn.Row(lo, hi))
        self._rows.objects = rows
        self._draw_histogram()

    def _edited(self, event: param.parameterized.Event) -> None:
        vmin = [float(lo.value) for lo, _ in self._inputs]
        vmax = [float(hi.value) for _, hi in self._inputs]
        if vmin == list(self.state.vmin) and vmax == list(self.state.vmax):
            return
        bad = [i for i, (a, b) in enumerate(zip(vmin, vmax, strict=True)) if a >= b]
        if bad:
            self.state.notify("Stretch: each min must be below its max", "warning")
            return
        self.state.param.update(vmin=vmin, vmax=vmax)

    @param.depends("state.statistics", watch=True)
    def _draw_histogram(self) -> None:
        stats = self.state.statistics or {}
        if not stats:
            self._hist.object = None
            return
        layers = []
        for i, (name, band) in enumerate(stats.items()):
            hist = band.get("histogram") or {}
            counts, edges = hist.get("counts") or [], hist.get("edges") or []
            if not counts:
                continue
            colour = BAND_COLOURS[i % 3] if len(stats) == 3 else "#546e7a"
            layers.append(hv.Histogram((np.asarray(edges), np.asarray(counts)),
                                       kdims=["value"], vdims=["pixels"], label=name).opts(
                fill_color=colour, fill_alpha=0.35, line_color=colour))
            if i < len(self.state.vmin):
                for v in (self.state.vmin[i], self.state.vmax[i]):
                    layers.append(hv.VLine(float(v)).opts(color=colour, line_dash="dashed",
                                                          line_width=2))
        if not layers:
            self._hist.object = None
            return
        self._hist.object = hv.Overlay(layers).opts(
            responsive=True, height=220, title="Visible pixels", legend_position="top_right",
            toolbar=None, xlabel="value", ylabel="pixels")

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("**Minimum / maximum per band**", margin=(0, 10)),
            self._rows,
            self._gamma,
            pn.Row(self._low, self._high),
            self._auto,
            self._refresh,
            self._hist,
            sizing_mode="stretch_width",
        )
