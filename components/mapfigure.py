"""Parts of the map's figure that need no session: footprint outlines (vectors, or rasterized
with Datashader when there are many) and the client-side readout, scale bar and aspect."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from bokeh.models import CustomJS, Label, Range1d, ScaleBar

from components.tilemath import R, to_mercator

#: Up to this many footprints are drawn as vectors; more are rasterized with Datashader.
VECTOR_MAX = 1000
FOOTPRINT_COLOUR = "#ffd54f"
def rings(geometry: dict) -> list[list[list[float]]]:
    """Outer rings of a GeoJSON (Multi)Polygon."""
    kind, coords = geometry.get("type"), geometry.get("coordinates") or []
    if kind == "Polygon":
        return [coords[0]] if coords else []
    if kind == "MultiPolygon":
        return [poly[0] for poly in coords if poly]
    return []


def outline_frame(footprints: dict) -> pd.DataFrame:
    """Footprint outlines in Mercator, one NaN-separated x/y table (fast to draw)."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for geom in footprints.values():
        for ring in rings(geom):
            arr = np.asarray(ring, dtype=float)
            x, y = to_mercator(arr[:, 0], arr[:, 1])
            xs += [x, np.array([np.nan])]
            ys += [y, np.array([np.nan])]
    if not xs:
        return pd.DataFrame({"x": np.array([], float), "y": np.array([], float)})
    return pd.DataFrame({"x": np.concatenate(xs), "y": np.concatenate(ys)})


def outline_raster(frame: pd.DataFrame, x_range: tuple, y_range: tuple,
                   size: tuple[int, int]) -> np.ndarray:
    """Outlines rasterized by Datashader for one view: RGBA packed as uint32 (bottom row first)."""
    import datashader as ds
    import datashader.transfer_functions as tf

    canvas = ds.Canvas(plot_width=max(int(size[0]), 10), plot_height=max(int(size[1]), 10),
                       x_range=tuple(x_range), y_range=tuple(y_range))
    agg = canvas.line(frame, "x", "y", agg=ds.count())
    img = tf.spread(tf.shade(agg, cmap=[FOOTPRINT_COLOUR], min_alpha=200), px=1)
    return np.asarray(img.data, dtype=np.uint32)


_READOUT_JS = """
const lon = cb_obj.x / 6378137 * 180 / Math.PI;
const lat = Math.atan(Math.sinh(cb_obj.y / 6378137)) * 180 / Math.PI;
label.text = `lon ${lon.toFixed(5)}  lat ${lat.toFixed(5)}`;
"""

# The scale bar measures a range in true metres: Mercator metres times cos(latitude).
_SCALE_JS = """
const yc = (y.start + y.end) / 2;
const k = Math.cos(Math.atan(Math.sinh(yc / 6378137)));
r.start = x.start * k; r.end = x.end * k;
"""

# Square pixels whatever the size of the plot: keep the centre and the x extent (the URL's
# zoom), give y the extent the plot's aspect asks for.
_ASPECT_JS = """
const w = fig.inner_width, h = fig.inner_height;
if (!(w > 0 && h > 0)) return;
const dx = x.end - x.start, yc = (y.start + y.end) / 2, dy = dx * h / w;
if (Math.abs((y.end - y.start) - dy) > 1e-6 * dy) {
  y.setv({start: yc - dy / 2, end: yc + dy / 2});
}
"""


def add_readout_and_scale(fig: Any) -> None:
    """Add the lon/lat readout under the mouse, a scale bar in true metres and square
    pixels whatever the plot's size (all client-side) to the map's figure."""
    label = Label(x=8, y=8, x_units="screen", y_units="screen", text="lon –  lat –",
                  text_font_size="12px", text_color="#ffffff",
                  background_fill_color="#000000", background_fill_alpha=0.55,
                  name="eox-readout")
    fig.add_layout(label)
    fig.js_on_event("mousemove", CustomJS(args={"label": label}, code=_READOUT_JS))
    x0, x1, y0, y1 = fig.x_range.start, fig.x_range.end, fig.y_range.start, fig.y_range.end
    k = math.cos(math.atan(math.sinh((y0 + y1) / 2 / R)))
    true_range = Range1d(x0 * k, x1 * k)
    # top right: the legend sits under the map's bottom-right corner (issue #14 item 8)
    fig.add_layout(ScaleBar(range=true_range, unit="m", location="top_right",
                            bar_length=150, bar_length_units="screen",
                            background_fill_alpha=0.7, name="eox-scalebar"))
    scale = CustomJS(args={"x": fig.x_range, "y": fig.y_range, "r": true_range},
                     code=_SCALE_JS)
    for rng in (fig.x_range, fig.y_range):
        rng.js_on_change("start", scale)
        rng.js_on_change("end", scale)
    aspect = CustomJS(args={"fig": fig, "x": fig.x_range, "y": fig.y_range}, code=_ASPECT_JS)
    fig.js_on_change("inner_width", aspect)
    fig.js_on_change("inner_height", aspect)
