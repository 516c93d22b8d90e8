"""Stretch tab: min/max per band, automatic stretch between any two percentiles of the
visible pixels, gamma, and the histogram of the visible pixels with min/max drawn."""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import param
from bokeh.models import NumeralTickFormatter

from components.profiledata import polygon_features
from components.state import AppState

BAND_COLOURS = ["#e53935", "#43a047", "#1e88e5"]
#: Histogram bin counts offered.
BINS = [32, 64, 128, 256]
#: The "Statistics of" choice meaning the visible pixels.
VIEW_AREA = "The map's view (visible pixels)"


class StretchPanel(pn.viewable.Viewer):
    """The Stretch tab of a session."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    active = param.Boolean(False, doc="True while the tab is shown (the shell sets it).")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        s = self.state
        self._low = pn.widgets.FloatInput.from_param(s.param.stretch_low, name="Low percentile",
                                                     step=0.5, width=120)
        self._high = pn.widgets.FloatInput.from_param(s.param.stretch_high,
                                                      name="High percentile", step=0.5,
                                                      width=120)
        self._bins = pn.widgets.Select.from_param(s.param.histogram_bins, name="Bins",
                                                  options=BINS, width=90)
        self._auto = pn.widgets.Button(name="Auto stretch (visible pixels)",
                                       button_type="primary", sizing_mode="stretch_width")
        self._auto.on_click(lambda e: self.state.auto_stretch())
        self._refresh = pn.widgets.Button(name="Histogram of the view",
                                          sizing_mode="stretch_width")
        self._refresh.on_click(lambda e: self.state.compute_statistics())
        self._gamma = pn.widgets.FloatSlider.from_param(s.param.gamma, name="Gamma", step=0.05,
                                                        sizing_mode="stretch_width")
        # the pixels described: the map's view or a drawn area (a polygon, a box, an overlay
        # feature made an area in the Overlay tab)
        self._area = pn.widgets.Select(name="Statistics of", sizing_mode="stretch_width")
        self._area.param.watch(lambda e: self._area_picked(e.new), "value")
        self._areas_changed()
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

    @param.depends("state.drawings", watch=True)
    def _areas_changed(self) -> None:
        options = {VIEW_AREA: "", **polygon_features(self.state.drawings)}
        if self.state.statistics_area not in options.values():
            self.state.statistics_area = ""
        self._area.param.update(options=options, value=self.state.statistics_area)

    def _area_picked(self, area: str | None) -> None:
        if (area or "") == self.state.statistics_area:
            return
        self.state.statistics_area = area or ""
        if self.state.chain is not None:
            self.state.compute_statistics()

    @param.depends("active", watch=True)
    def _shown(self) -> None:
        """Opening the tab shows the histogram of the view (once per chain and view)."""
        s = self.state
        key = (s.chain_id, s.viewport, s.histogram_bins, s.statistics_area)
        if self.active and s.chain is not None and key != self._stats_for:
            self._stats_for = key
            s.compute_statistics()

    _stats_for: tuple | None = None

    @param.depends("state.statistics", watch=True)
    def _draw_histogram(self) -> None:
        stats = self.state.statistics or {}
        if not stats:
            self._hist.object = None
            return
        layers, spans, top = [], [], 1.0
        for i, (name, band) in enumerate(stats.items()):
            hist = band.get("histogram") or {}
            counts, edges = hist.get("counts") or [], hist.get("edges") or []
            if not counts:
                continue
            spans.append(central_span(edges, counts))
            top = max(top, float(max(counts)))
            colour = BAND_COLOURS[i % 3] if len(stats) == 3 else "#546e7a"
            # empty bins as NaN: nothing to draw on the log axis
            shown = np.where(np.asarray(counts, float) > 0, np.asarray(counts, float), np.nan)
            layers.append(hv.Histogram((np.asarray(edges, float), shown),
                                       kdims=["value"], vdims=["pixels"], label=name).opts(
                fill_color=colour, fill_alpha=0.35, line_color=colour))
            if i < len(self.state.vmin):
                for v in (self.state.vmin[i], self.state.vmax[i]):
                    spans.append((float(v), float(v)))
                    layers.append(hv.VLine(float(v)).opts(color=colour, line_dash="dashed",
                                                          line_width=2))
        if not layers:
            self._hist.object = None
            return
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        pad = (hi - lo) * 0.04 or 1.0
        # log counts (a few big bins no longer flatten the rest), the x axis clipped to the
        # central 99.8 % of the pixels and the min/max lines, compact tick labels (12k, 1.5M)
        self._hist.object = hv.Overlay(layers).opts(
            responsive=True, height=220, title="Visible pixels (log scale)",
            legend_position="top_right", toolbar=None, xlabel="value", ylabel="pixels",
            # an explicit floor below one pixel: bars start at 0, which a log axis cannot show
            logy=True, ylim=(0.5, top * 2), xlim=(lo - pad, hi + pad), xformatter=NumeralTickFormatter(format="0.[00]a"),
            yformatter=NumeralTickFormatter(format="0a"))

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("**Minimum / maximum per band**", margin=(0, 10)),
            self._rows,
            self._gamma,
            self._area,
            pn.Row(self._low, self._high, self._bins),
            self._auto,
            self._refresh,
            self._hist,
            sizing_mode="stretch_width",
        )


def central_span(edges: list[float], counts: list[float], share: float = 0.998) -> tuple[float, float]:
    """Values between which the central ``share`` of a histogram's pixels lie (bin edges)."""
    c = np.asarray(counts, float)
    e = np.asarray(edges, float)
    total = c.sum()
    if total <= 0:
        return float(e[0]), float(e[-1])
    cum = np.cumsum(c) / total
    tail = (1 - share) / 2
    first = int(np.searchsorted(cum, tail, side="right"))
    last = int(np.searchsorted(cum, 1 - tail, side="left"))
    return float(e[first]), float(e[min(last + 1, len(e) - 1)])

