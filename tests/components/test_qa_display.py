"""QA pass fixes: colour presets stretched like EO Browser, one message per error, a
one-date profile chart labelled in dates, the date fields fitting the sidebar."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import panel as pn
import pytest
from component_data import NEW, ORIGIN, RES, S2
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from components.display import DisplayPanel
from components.presets import PRESETS, preset
from components.profile import ProfilePanel
from components.search import SearchPanel

RKH_RED = Path("/work/shared/data/s2-l2a-29RKH-20200219/B04.tif")


def _lonlat(row: int, col: int) -> tuple[float, float]:
    x, y = ORIGIN[0] + (col + 0.5) * RES, ORIGIN[1] - (row + 0.5) * RES
    lon, lat = warp_transform(CRS.from_epsg(32633), "EPSG:4326", [x], [y])
    return round(lon[0], 6), round(lat[0], 6)


def test_colour_presets_map_reflectance_0_to_0_4(state):
    # EO Browser / Copernicus Browser: gain 2.5 on reflectance, i.e. 0..4000 for x 1e4
    for key in ("true-colour", "false-colour", "swir", "agriculture", "urban"):
        p = preset(key)
        assert (p.vmin, p.vmax) == (0.0, 4000.0), key
    assert all(p.vmax == 4000.0 for p in PRESETS if not p.single_band)
    state.open_latest()
    state.choose_preset("true-colour")
    assert state.vmax == [4000.0] * 3 and '"max":[4000.0,4000.0,4000.0]' in \
        state.chain.to_json().replace(" ", "")
    state.choose_preset("ndvi")
    state.choose_preset("custom-rgb")  # from an index back to bands: the same scale
    assert state.vmax == [4000.0] * 3


@pytest.mark.realdata
@pytest.mark.skipif(not RKH_RED.exists(), reason="real sample /work/shared/data absent")
def test_true_colour_does_not_saturate_a_bright_desert_scene():
    import rasterio

    with rasterio.open(RKH_RED) as src:
        red = src.read(1)
    valid = red[red > 0]
    saturated = float((valid >= preset("true-colour").vmax).mean())
    assert saturated < 0.10, f"{saturated:.1%} of the red pixels of 29RKH saturate"


def test_profile_error_is_said_once(state):
    state.collection = S2
    panel = ProfilePanel(state=state)
    state.notice = None
    panel.expression = "(B05 - B04) / (B05 + B04)"  # a band the collection lacks
    assert panel.run(*_lonlat(100, 100)) is None
    assert state.notice.level == "error" and "B05" in state.notice.text
    assert not panel._alert.visible and not panel.chart_shown
    # a profile that runs but has nothing clear still explains itself in the tab
    panel.expression = "(B08 - B04) / (B08 + B04)"
    assert panel.run(*_lonlat(100, 100)) is not None


def test_display_error_is_said_once(state):
    state.open_latest()
    panel = DisplayPanel(state=state)
    panel._expression.value = "red / (nir + red"
    assert state.notice.level == "error" and "expression" in state.notice.text
    alerts = [o for o in panel.__panel__().select(pn.pane.Alert)
              if o.visible and o.alert_type == "danger"]
    assert alerts == []
    panel._expression.value = "red / (nir + red)"  # fixed: drawn again
    assert "red" in state.chain.to_json()


def test_one_date_profile_chart_spans_days(state):
    panel = ProfilePanel(state=state)
    state.start = state.end = datetime(2020, 7, 1)
    state.collection = S2
    df = panel.run(*_lonlat(100, 100))
    assert df is not None and len(df) == 1 and panel.chart_shown
    rng = panel._chart.x_range
    # Bokeh spans a single x value over default_span (ms); 2 ms gave microsecond ticks
    assert rng.default_span >= 2 * 86_400_000
    assert rng.min_interval is not None and rng.min_interval >= 86_400_000


def test_date_fields_fit_the_sidebar_width(state):
    """Each date is a row of a calendar (fixed width) and a text box that takes the rest."""
    panel = SearchPanel(state=state)
    for field in (panel._start, panel._end):
        row = field.__panel__()
        assert row.sizing_mode == "stretch_width"
        assert field._text.sizing_mode == "stretch_width" and field._text.min_width <= 200
        assert field._pick.width + field._text.min_width <= 440  # a 470 px sidebar
    assert NEW  # fixture scenes exist
