"""The Stretch tab's histogram is readable (issue #14 item 8): counts on a log axis, the value
axis clipped to where the pixels are (outliers and nodata spikes do not squeeze it), compact
tick labels."""
from __future__ import annotations

import holoviews as hv
import numpy as np
from bokeh.models import LogScale, NumeralTickFormatter

from components.stretch import StretchPanel, central_span

hv.extension("bokeh")


def _figure(panel):
    return hv.render(panel._hist.object, backend="bokeh")


def test_histogram_log_counts_clipped_values_compact_ticks(state, caplog):
    state.open_latest()
    panel = StretchPanel(state=state)
    rng = np.random.default_rng(7)
    edges = np.linspace(0, 65535, 257)  # a 16-bit range, pixels between 500 and 3000
    pixels = rng.normal(1500, 300, 200_000).clip(500, 3000)
    counts, _ = np.histogram(np.concatenate([pixels, np.full(5, 65000.0)]), bins=edges)
    counts[0] = 150_000  # a big spike: a nodata-like zero bin
    state.param.update(vmin=[600.0], vmax=[2800.0])
    state.statistics = {"b1": {"histogram": {"counts": counts.tolist(),
                                             "edges": edges.tolist()}}}
    with caplog.at_level("WARNING"):
        fig = _figure(panel)
    assert isinstance(fig.y_scale, LogScale)
    # the log axis has an explicit floor below one pixel: no "Logarithmic axis range
    # encountered value less than or equal to zero" in the server log on every redraw
    assert not [r for r in caplog.records if "Logarithmic" in r.getMessage()]
    assert 0 < fig.y_range.start < 1 and fig.y_range.end >= 150_000
    # the value axis spans the pixels and the min/max lines, not 0..65535
    assert -500 < fig.x_range.start < 600 and 2800 < fig.x_range.end < 10_000, (
        fig.x_range.start, fig.x_range.end)
    # compact labels: 150000 pixels reads "150k", a value 2500 reads "2.5k"
    assert isinstance(fig.yaxis[0].formatter, NumeralTickFormatter)
    assert fig.yaxis[0].formatter.format == "0a"
    assert isinstance(fig.xaxis[0].formatter, NumeralTickFormatter)
    assert fig.xaxis[0].formatter.format == "0.[00]a"


def test_central_span_edges():
    edges = [0, 1, 2, 3, 4, 5]
    assert central_span(edges, [0, 0, 10, 0, 0]) == (2.0, 3.0)
    assert central_span(edges, [1000, 0, 0, 0, 1]) == (0.0, 1.0)  # 1 in 1001 is left out
    assert central_span(edges, [0, 0, 0, 0, 0]) == (0.0, 5.0)
