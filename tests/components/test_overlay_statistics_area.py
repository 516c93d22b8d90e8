"""An overlay polygon as the Statistics area (issue #14 item 9): made an area in the Overlay
tab, the Stretch tab offers it, and its histogram and auto stretch then describe only the
pixels inside it (as the engine computes for that polygon), not the whole view."""

from __future__ import annotations

import json

import holoviews as hv
import numpy as np
import pytest
import rasterio.warp

from components.overlay import OverlayPanel
from components.stretch import VIEW_AREA, StretchPanel

hv.extension("bokeh")

# inside the fixture scenes (UTM 33N, origin 385000/5825000, 256 px at 20 m): 40 x 30 px
UTM_BOX = (386_000.0, 5_821_000.0, 386_800.0, 5_821_600.0)


def _field() -> bytes:
    w, s, e, n = UTM_BOX
    xs, ys = rasterio.warp.transform("EPSG:32633", "EPSG:4326", [w, e, e, w, w],
                                     [s, s, n, n, s])
    ring = [[round(x, 7), round(y, 7)] for x, y in zip(xs, ys, strict=True)]
    return json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"name": "Field 7"},
        "geometry": {"type": "Polygon", "coordinates": [ring]}}]}).encode()


def _pixels(stats: dict) -> int:
    return int(sum(sum(b["histogram"]["counts"]) for b in stats.values()))


def test_overlay_polygon_is_a_statistics_area(state):
    state.open_latest()
    state.viewport = (13.0, 52.0, 14.0, 53.0)
    overlay, panel = OverlayPanel(state=state), StretchPanel(state=state)
    assert list(panel._area.options) == [VIEW_AREA]
    view = state.compute_statistics()
    assert overlay.load_bytes(_field(), "fields.geojson") is not None
    fid = overlay.use_as_area("fields", 0)
    assert fid is not None and "Stretch" in state.notice.text
    name = next(f["properties"]["name"] for f in state.drawings if f["id"] == fid)
    assert panel._area.options[name] == fid
    panel._area.value = fid  # pick it: the histogram is recomputed over the polygon
    assert state.statistics_area == fid
    inside = state.statistics
    geometry = next(f["geometry"] for f in state.drawings if f["id"] == fid)
    expected = state.backend.statistics(state.analytic_chain(), geometry,
                                        bins=state.histogram_bins,
                                        percentiles=(state.stretch_low, state.stretch_high))
    assert inside == expected
    assert 0 < _pixels(inside) < _pixels(view) / 10
    # auto stretch follows the area's pixels
    assert state.auto_stretch()
    lows = [b["percentiles"] for b in inside.values()]
    assert state.vmin == pytest.approx([float(np.asarray(list(p.values()))[0]) for p in lows])
    # the area removed: back to the view, said plainly if it was still picked
    state.drawings = []
    assert state.statistics_area == "" and panel._area.value == ""
