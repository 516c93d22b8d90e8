"""The user-function editor without a browser: examples, Test in the sandbox (off the UI
thread), errors at the user's line, Apply -> a registered chain drawn as a map layer."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime

import morecantile
import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from components.backend import Backend
from components.functions import LAYER, TEMPLATE, FunctionPanel
from components.map import MapView
from components.state import AppState
from engine import algorithms
from engine.catalog import SQLiteCatalog
from engine.chain.store import ChainStore
from engine.ingest.items import BandAsset, build_collection, make_item
from engine.render import TileRenderer

COLLECTION = "s2-fn"
BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B06": "rededge", "B08": "nir",
         "B11": "swir16"}
SIZE = 128
TMS = morecantile.tms.get("WebMercatorQuad")


def band(name: str, k: int) -> np.ndarray:
    """Gradients crossing stubble's thresholds inside the scene (0 = nodata corner)."""
    r, c = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    arr = {"B02": 500 + 300 * c, "B03": 600 + 500 * k + 200 * r, "B04": 500 + 1000 * c,
           "B06": 700 + 1000 * r, "B08": 800 + 800 * r + 200 * k, "B11": 400 + 1500 * c}[name]
    out = arr.astype(np.uint16)
    out[:8, :8] = 0
    return out


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    from engine.chain import set_executor
    from engine.chain.executor import get_executor
    from engine.sandbox import (
        close_default_pool,
        configure,
        default_pool,
        install_executor,
        set_default_imports,
    )

    root = tmp_path_factory.mktemp("functions")
    items = []
    for k, when in enumerate([datetime(2021, 6, 1, 10, tzinfo=UTC),
                              datetime(2021, 7, 1, 10, tzinfo=UTC)]):
        item_id = f"S2A_33UUU_{when:%Y%m%d}"
        assets = []
        for name, common in BANDS.items():
            path = root / f"{item_id}_{name}.tif"
            with rasterio.open(path, "w", driver="COG", dtype="uint16", count=1, width=SIZE,
                               height=SIZE, crs=CRS.from_epsg(32633), nodata=0,
                               transform=from_origin(385_000.0, 5_825_000.0, 20.0, 20.0)) as d:
                d.write(band(name, k), 1)
            assets.append(BandAsset(key=name, href=path,
                                    eo_band={"name": name, "common_name": common}))
        items.append(make_item(item_id, when, assets, collection=COLLECTION,
                               properties={"constellation": "sentinel-2",
                                           "platform": "sentinel-2a", "eo:cloud_cover": 1.0}))
    db = root / "catalog.sqlite"
    with SQLiteCatalog(db) as cat:
        cat.add_collection(build_collection(COLLECTION, items))
        cat.add_items(items, collection=COLLECTION)

    previous = get_executor()
    configure(size=1, timeout_s=5.0, memory_mb=768)
    install_executor()
    if not default_pool().wait_ready(timeout_s=60):
        pytest.skip(f"sandbox workers do not start here: {default_pool().capabilities()}")
    catalog = SQLiteCatalog(db)
    try:
        yield Backend(catalog=catalog, chain_store=ChainStore(db),
                      renderer=TileRenderer(catalog), functions_enabled=True)
    finally:
        set_executor(previous)
        configure(size=2)
        set_default_imports(None)
        close_default_pool()


@pytest.fixture
def state(backend) -> AppState:
    s = AppState(backend=backend)
    assert s.open_latest()
    return s


def test_examples_fill_code_bands_arguments_and_display(state):
    panel = FunctionPanel(state=state)
    assert panel.source == TEMPLATE and panel.function == "my_function"
    panel.example = "stubble"
    source, name, defaults = algorithms.load("stubble")
    assert panel.source == source and state.function_code == source
    assert panel.function == name and panel.bands == ["red", "B06", "nir", "swir16"]
    assert json.loads(panel.arguments) == defaults and not panel.times
    assert panel.display == "Mask in one colour" and panel.colour == "Lime"
    assert panel._colour.visible and not panel._colormap.visible
    panel.example = "maxNDI"
    assert panel.times and panel.bands == ["swir16", "nir", "red", "green", "blue"]
    assert panel.display == "RGB (3 bands)" and (panel.vmin, panel.vmax) == (0, 3000)
    panel.source = "def a(img):\n    return img\n\ndef b(img):\n    return img[0]\n"
    assert panel.function == "b"  # the name follows the code when it no longer exists


def test_test_runs_in_the_sandbox_off_the_ui_thread(state):
    panel = FunctionPanel(state=state)
    panel.example = "stubble"
    threads = []
    run = panel.run_test

    def spy():
        threads.append(threading.current_thread())
        return run()

    panel.run_test = spy
    loop_thread = []

    async def click():
        loop_thread.append(threading.current_thread())
        await panel._on_test()

    # a thread of its own: the loop must not clash with one already running (Playwright)
    runner = threading.Thread(target=asyncio.run, args=(click(),))
    runner.start()
    runner.join(60)
    assert threads and loop_thread and threads[0] is not loop_thread[0]
    assert panel.result.ok and "(4, 256, 256)" in panel.result.message
    assert "uint8" in panel.result.message and "values 0..1" in panel.result.message
    assert panel._status.alert_type == "success" and panel._status.visible
    assert state.notice.level == "success" and not panel._test.disabled and not panel.busy


def test_maxndi_is_tested_on_a_time_stack(state):
    panel = FunctionPanel(state=state)
    panel.example = "maxNDI"
    assert panel.test(), panel.result.message
    assert "(2, 5, 256, 256)" in panel.result.message and "(3, 256, 256)" in panel.result.message


@pytest.mark.parametrize("source, line, mentions", [
    ("import numpy as np\n\ndef f(img):\n    return img[7]\n", 4, "IndexError"),
    ("import os\n\ndef f(img):\n    return img\n", 1, "os"),
    ("def f(img):\n    x = ().__class__.__bases__\n    return img\n", 2, "__bases__"),
    ("def f(img):\n    return img[0] +* 1\n", 2, "invalid syntax"),
])
def test_errors_show_the_users_line_and_the_app_keeps_working(state, source, line, mentions):
    panel = FunctionPanel(state=state)
    panel.bands = ["B04", "B08"]
    panel.source = source
    panel.function = "f"
    assert not panel.test()
    assert panel.result.lineno == line and mentions in panel.result.message
    assert panel._status.alert_type == "danger" and f"line {line}" in panel._status.object
    assert panel._editor.annotations[0]["row"] == line - 1
    assert state.notice.level == "error" and state.notice.text.startswith("Function test")
    panel.source = "def f(img):\n    return img[1] - img[0]\n"
    assert panel.test() and panel._editor.annotations == []


@pytest.mark.parametrize("change, mentions", [
    ({"arguments": "{threshold: 3"}, "not a JSON object"),
    ({"arguments": "[1, 2]"}, "give a JSON object"),
    ({"function": "nope"}, "defines no function 'nope'"),
    ({"bands": []}, "pick the input bands"),
])
def test_bad_inputs_are_explained(state, change, mentions):
    panel = FunctionPanel(state=state)
    panel.example = "stubble"
    panel.param.update(**change)
    assert not panel.test() and mentions in panel.result.message
    assert not panel.apply() and not panel.chain_id


def test_apply_registers_the_chain_and_draws_a_layer_with_data(state, backend):
    view = MapView(state=state)
    panel = FunctionPanel(state=state)  # the Functions tab; the map follows the state
    panel.example = "stubble"
    assert panel.apply(), panel.result.message
    chain = backend.chain_store.get(panel.chain_id)
    assert chain.source.bands == ("red", "B06", "nir", "swir16")  # the declared names
    assert list(chain.source.ids) == state.selected and not chain.source.times
    assert [s.name for s in chain.steps] == ["execute", "band", "scale", "color_custom"]
    assert chain.steps[0].function == "stubble" and chain.steps[3].colors == ["Lime"]
    assert panel.layer_url == backend.map_tile_url(panel.chain_id)
    assert LAYER in [s.name for s in view.layers]
    assert view._tiles[LAYER].tile_source.url == panel.layer_url
    assert "pixels with data" in panel.result.message
    # the layer's tile: opaque lime exactly where the rule holds on the tile's input pixels
    z, x, y = (int(v) for v in panel.result.message.split("tile ")[1].split(":")[0].split("/"))
    img = backend.renderer.tile(chain, z, x, y)
    raw = backend.renderer.render_bbox(
        chain.model_copy(update={"steps": ()}), tuple(TMS.xy_bounds(morecantile.Tile(x, y, z))), 256, 256,
        bbox_crs="EPSG:3857", analytic=True)
    b4, b6, b8, b11 = raw.array.filled(0).astype(int)
    rule = (b4 < 1000) & (b6 < 1200) & (b8 < 1200) & (b11 > 500) & (b11 < 1600)
    alpha = img.array[3].filled(0)
    assert 0.02 < rule.mean() < 0.98
    np.testing.assert_array_equal(alpha, np.where(rule, 255, 0))


def test_apply_a_time_stack_function(state):
    state.search()
    state.selected = [str(i) for i in state.results["id"]]
    panel = FunctionPanel(state=state)
    panel.example = "maxNDI"
    assert panel.apply(), panel.result.message
    chain = state.backend.chain_store.get(panel.chain_id)
    assert chain.source.times and [s.name for s in chain.steps] == ["execute", "scale"]


def test_disabled_functions(backend):
    off = Backend(catalog=backend.catalog, chain_store=backend.chain_store,
                  renderer=backend.renderer, functions_enabled=False)
    s = AppState(backend=off)
    s.open_latest()
    panel = FunctionPanel(state=s)
    assert panel._test.disabled and panel._apply.disabled
    assert "not enabled" in panel._note.object and panel._note.alert_type == "warning"
    panel.example = "stubble"
    assert not panel.test() and "not enabled" in panel.result.message


def test_examples_offered_only_where_the_collection_has_their_bands(state):
    """Landsat (red, nir, swir16, no blue/green) is offered ndvi and morphclean, not the
    cloud mask or max-NDI that raised IndexError on it; the panel says why."""
    from components.functions import OWN, missing_bands, offered_examples

    landsat = ["red", "nir", "nir08", "swir1", "swir16", "fmask"]
    offered = offered_examples(landsat)
    assert offered[0] == OWN and {"ndvi", "morphclean"} <= set(offered)
    assert "cloudmask" not in offered and "maxNDI" not in offered and "stubble" not in offered
    assert missing_bands("cloudmask", landsat) == ["blue", "green"]
    panel = FunctionPanel(state=state)
    panel.example = "cloudmask"
    state.bands = landsat  # as a switch to Landsat sets it
    assert panel.example == OWN and "cloudmask" not in panel.param.example.objects
    assert "cloudmask (needs blue, green)" in panel._not_offered.object


def test_too_few_input_bands_is_said_plainly(state):
    panel = FunctionPanel(state=state)
    panel.example = "cloudmask"
    panel.bands = panel.bands[:2]  # the function reads five
    assert not panel.test()
    assert "reads more input bands than the 2 chosen" in panel.result.message


def test_share_link_and_standalone_page_carry_the_function_layer(state, backend):
    """The applied function's chain id goes into the URL (``fn``); a session opened on that
    URL draws the layer again; the standalone page lists it over the chain."""
    import re as _re

    from app.urlstate import apply_query, to_query
    from components.exports import ExportsPanel
    from components.layerspec import FUNCTION_LAYER

    panel = FunctionPanel(state=state)
    panel.example = "ndvi"
    assert panel.apply(), panel.result.message
    q = to_query(state)
    assert q["fn"] == panel.chain_id == state.function_layer
    other = AppState(backend=backend)
    view = MapView(state=other)
    apply_query(other, q)
    assert other.function_layer == panel.chain_id and other.notice is None
    assert view._tiles[FUNCTION_LAYER].tile_source.url == backend.map_tile_url(panel.chain_id)
    assert FUNCTION_LAYER in [s.name for s in view.layers]
    third = AppState(backend=backend)
    apply_query(third, {**q, "fn": "0123456789abcdef"})
    assert not third.function_layer and "fn='0123456789abcdef'" in third.notice.text
    exports = ExportsPanel(state=other)
    exports.page_url = lambda: "http://h:5006/"  # type: ignore[method-assign] # served here
    html = exports.html_page()
    cfg = json.loads(_re.search(r'id="eox-config" type="application/json">(.*?)</script>',
                                html, _re.DOTALL).group(1))
    tiles = f"http://h:5006/api/chains/{panel.chain_id}/tiles/{{z}}/{{x}}/{{y}}.png"
    assert cfg["overlays"] == [{"name": FUNCTION_LAYER, "tiles": tiles}]
