"""The Batch tab: "Run over this area" on Dask equals ``chain.to_cog`` on the same grid, the
size limit and missing inputs are clear messages, and the result becomes a raster layer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import rasterio
import xarray as xr
from component_data import NEW

from components.batch import VISIBLE, BatchPanel, bbox_of
from components.state import AppState


@pytest.fixture(scope="module")
def client():
    """An in-process Dask cluster (the panel's real path is a process LocalCluster)."""
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=None) as c:
        yield c


@pytest.fixture
def bstate(backend, tmp_path):
    b = dataclasses.replace(backend, batch_dir=tmp_path / "batch", raster_dirs=(tmp_path,))
    state = AppState(backend=b)
    state.open_latest()
    assert state.selected == [NEW] and state.chain is not None
    w, s, e, n = state.bounds[NEW]
    dx, dy = (e - w) / 5, (n - s) / 5
    state.param.update(viewport=(w + dx, s + dy, e - dx, n - 2 * dy), map_size=(400, 300))
    return state


def _run(panel: BatchPanel) -> None:
    thread = panel.start()
    assert thread is not None
    thread.join(120)
    assert not thread.is_alive() and not panel.running


def test_run_over_the_visible_area_equals_to_cog(bstate, client, tmp_path):
    panel = BatchPanel(state=bstate, client_factory=lambda: client)
    assert panel.area == VISIBLE and panel.analytic
    _run(panel)
    out = panel.result
    assert out is not None and out.exists() and out.parent == tmp_path / "batch", panel.message
    assert panel.done == panel.total >= 1 and "Done" in panel.message
    ref = bstate.chain.to_cog(tmp_path / "ref.tif", bbox=bstate.viewport, analytic=True,
                              catalog=bstate.backend.catalog)
    with rasterio.open(out) as got, rasterio.open(ref) as want:
        assert (got.crs, got.transform, got.count) == (want.crs, want.transform, want.count)
        assert got.count == 3 and got.dtypes[0] == "uint16"
        np.testing.assert_array_equal(got.read(), want.read())
        assert got.overviews(1) == want.overviews(1)
    # shown on the map as a raster layer (RGB composite of the analytic bands)
    layer = panel.layer
    assert layer is not None and layer.source.path == out.resolve() and layer.band is None
    assert layer.last is not None and np.isfinite(layer.last.values).any()
    assert panel._download.visible and panel._download_file() == str(out)


def test_too_large_area_is_refused_before_any_work(bstate, tmp_path):
    state = AppState(backend=dataclasses.replace(bstate.backend, batch_max_pixels=1000))
    state.open_latest()
    state.viewport = bstate.viewport
    panel = BatchPanel(state=state, client_factory=lambda: pytest.fail("no cluster needed"))
    _run(panel)
    assert panel.result is None
    assert "more than the limit of 1,000" in panel.message
    assert state.notice.level == "error" and "coarser resolution" in state.notice.text
    assert panel._error.visible
    assert not list((tmp_path / "batch").glob("*.tif"))


def test_zarr_output_at_a_coarser_resolution_becomes_a_layer(bstate, client):
    panel = BatchPanel(state=bstate, client_factory=lambda: client)
    panel.param.update(output="Zarr", resolution=40.0)
    _run(panel)
    out = panel.result
    assert out is not None and out.suffix == ".zarr" and out.is_dir(), panel.message
    with xr.open_zarr(out) as ds:
        data = ds["result"].values
        assert ds["result"].attrs["transform"][0] == 40.0
    assert panel.layer is not None and panel.layer.source.kind == "zarr"
    assert panel.layer.source.band_names == ("red", "green", "blue")
    zipped = panel._download_file()
    assert zipped.endswith(".zarr.zip")
    assert data.shape[0] == 3 and (data > 0).any()


def test_missing_inputs_and_drawn_areas(bstate, client):
    empty = AppState(backend=bstate.backend)
    panel = BatchPanel(state=empty)
    assert panel.start() is None
    assert "select a scene" in panel.message and empty.notice.level == "error"

    box = {"type": "Polygon", "coordinates": [[[13.33, 52.52], [13.36, 52.52], [13.36, 52.54],
                                               [13.33, 52.54], [13.33, 52.52]]]}
    bstate.drawings = [{"type": "Feature", "geometry": box,
                        "properties": {"id": "box-1", "kind": "box", "name": "Box 1"}},
                       {"type": "Feature", "geometry": {"type": "Point",
                                                        "coordinates": [13.3, 52.5]},
                        "properties": {"id": "point-1", "kind": "point", "name": "P"}}]
    panel = BatchPanel(state=bstate, client_factory=lambda: client)
    assert panel.param.area.objects == [VISIBLE, "Drawn: Box 1"]
    panel.area = "Drawn: Box 1"
    assert panel.area_bbox() == bbox_of(box) == (13.33, 52.52, 13.36, 52.54)
    bstate.drawings = []
    assert panel.area == VISIBLE

    off = BatchPanel(state=AppState(backend=dataclasses.replace(bstate.backend,
                                                                 batch_dir=None)))
    off.state.open_latest()
    off.state.viewport = bstate.viewport
    assert off.start() is None and "batch runs are off" in off.message


def test_cancel_stops_the_run_without_output(bstate, client):
    panel = BatchPanel(state=bstate, client_factory=lambda: client)
    thread = panel.start()
    panel.cancel()
    thread.join(120)
    assert panel.message.startswith("Cancelled") and panel.result is None
    assert not list(bstate.backend.batch_dir.glob("*.tif"))
    assert not list(bstate.backend.batch_dir.glob(".*"))  # no temporary file left
