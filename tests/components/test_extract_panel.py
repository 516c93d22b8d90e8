"""The Extract tab's size limit and failures, driven by setting values (no browser): an area
over the limit is refused before anything is read, saying its size, the limit and what to
do; a failed extract leaves no file or folder behind; drawings made as the browser's
double-click makes them (a repeated vertex) are measured without the repeat."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import rasterio.warp

from components.backend import Backend
from components.draw import DrawPanel, features_from_sources
from components.extract import ExtractPanel
from components.state import AppState
from components.tilemath import to_mercator
from engine import extract as ex

# a box inside the fixture scenes (UTM 33N, origin 385000/5825000, 256 px at 20 m)
UTM_BOX = (386_000.0, 5_821_000.0, 388_000.0, 5_823_500.0)


def _draw_box(draw: DrawPanel) -> None:
    xs, ys = rasterio.warp.transform("EPSG:32633", "EPSG:4326", [UTM_BOX[0], UTM_BOX[2]],
                                     [UTM_BOX[1], UTM_BOX[3]])
    (x0, x1), (y0, y1) = to_mercator(np.array(xs), np.array(ys))
    draw.sources["box"].data = {"x": [(x0 + x1) / 2], "y": [(y0 + y1) / 2],
                                "width": [x1 - x0], "height": [y1 - y0]}


@pytest.fixture
def shown(state):
    state.open_latest()
    return state


def _panel(state: AppState, **params) -> ExtractPanel:
    draw, panel = DrawPanel(state=state), ExtractPanel(state=state, **params)
    _draw_box(draw)
    assert panel.shape == "box-1"
    panel.what = "Original band values"
    return panel


def test_too_large_is_refused_up_front_with_size_limit_and_what_to_do(shown, monkeypatch):
    panel = _panel(shown)
    job = panel.check()
    assert job is not None and 100 <= job.width < job.height < 140  # about 2 x 2.5 km at 20 m
    assert "limit 36,000,000 pixels" in panel._info.object

    size, pixels = (job.width, job.height), job.width * job.height
    panel.max_pixels = pixels - 1
    read = []
    monkeypatch.setattr(ex, "iter_blocks", lambda *a, **k: read.append(1) or iter(()))
    assert panel.extract() is None
    notice = shown.notice
    assert notice.level == "error"
    for text in (f"{size[0]} x {size[1]} px = {pixels:,} pixels",
                 f"more than the limit of {pixels - 1:,} pixels",
                 "Zoom in and draw a smaller box or polygon"):
        assert text in notice.text and text in panel._info.object, (text, notice.text)
    assert read == [] and panel._folder is None and not panel._download.visible

    panel.max_pixels = pixels  # just at the limit: accepted
    assert panel.check() is not None


def test_limit_defaults_to_the_backends_setting(backend):
    @dataclasses.dataclass(frozen=True)
    class Limited(Backend):
        extract_max_pixels: int = 1234

    limited = Limited(catalog=backend.catalog, chain_store=backend.chain_store,
                      renderer=backend.renderer)
    assert ExtractPanel(state=AppState(backend=limited)).max_pixels == 1234
    assert ExtractPanel(state=AppState(backend=limited), max_pixels=99).max_pixels == 99


def test_failed_extract_leaves_no_file_or_folder(shown, monkeypatch, extract_fails_mid_run):
    panel = _panel(shown, resolution=2.0)  # about 1000 x 1300 px: several blocks
    made: list[Path] = []
    target = panel._target
    monkeypatch.setattr(panel, "_target", lambda job: made.append(target(job)) or made[-1])
    assert panel.extract() is None
    assert "source vanished" in shown.notice.text and shown.notice.level == "error"
    assert made and not made[0].parent.exists()  # the private folder is gone too
    assert panel._folder is None and not panel._progress.visible


def test_double_click_repeats_are_not_vertices():
    """The browser's polygon while drawing repeats the vertex under the mouse; a shape is
    its distinct vertices (no zero-length edge, the table's vertex count is right)."""
    lon = [13.0, 13.1, 13.1, 13.1, 13.0]
    lat = [52.0, 52.0, 52.1, 52.1, 52.1]
    x, y = to_mercator(np.array(lon), np.array(lat))
    feats = features_from_sources({"polygon": {"xs": [list(x)], "ys": [list(y)]},
                                   "line": {"xs": [list(x[:2]) + [x[1]]],
                                            "ys": [list(y[:2]) + [y[1]]]}})
    poly, line = feats
    assert len(poly["geometry"]["coordinates"][0]) == 5  # 4 vertices + closing
    assert len(line["geometry"]["coordinates"]) == 2
    # a polygon still being drawn ([A, B, B]) is not a polygon yet
    assert features_from_sources({"polygon": {"xs": [list(x[:2]) + [x[1]]],
                                              "ys": [list(y[:2]) + [y[1]]]}}) == []
