"""Notebook parity: ``app.Map`` over a background tile service, the show-code text run as a
user would paste it, and ``assets/example.ipynb`` executed top to bottom on the demo data."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import httpx
import morecantile
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DEMO = Path(os.environ.get("EOX_TEST_DEMO_DIR", ROOT / ".cache" / "demo"))
DB = DEMO / "catalog.sqlite"

pytestmark = pytest.mark.skipif(
    not DB.exists(), reason=f"no demo catalog at {DB}: run `eoexplorer demo --catalog {DB} "
    f"--data-dir {DEMO / 'data'}` once")


@pytest.fixture(autouse=True, scope="module")
def _keep_chain_executor():
    """Building a service installs the sandbox executor process-wide: restore it after."""
    from engine.chain import get_executor, set_executor

    before = get_executor()
    yield
    set_executor(before)


@pytest.fixture(scope="module")
def env():
    """Settings for the demo catalog through the environment (as a notebook user has)."""
    from app.launcher import stop_background

    old = {k: os.environ.get(k) for k in ("EOX_CATALOG", "EOX_DATA_DIR")}
    os.environ["EOX_CATALOG"], os.environ["EOX_DATA_DIR"] = str(DB), str(DEMO / "data")
    yield
    stop_background()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _tile_with_data(template: str, bounds) -> np.ndarray:
    w, s, e, n = bounds
    t = morecantile.tms.get("WebMercatorQuad").tile((w + e) / 2, (s + n) / 2, 14)
    url = template.replace("{Z}", "14").replace("{X}", str(t.x)).replace("{Y}", str(t.y))
    r = httpx.get(url, timeout=60)
    assert r.status_code == 200, (url, r.status_code)
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGBA"))


def test_map_serves_its_layers_from_a_background_service(env):
    from app import Map
    from engine import Collection
    from engine.gazetteer import place

    m = Map()
    coll = Collection("sentinel-2-l3a", catalog=m.backend.catalog)
    first = coll.sort("datetime", ascending=False).first()
    ndvi = (coll.ids(first.id).process(mosaic="latest").expression("(B08-B04)/(B08+B04)")
            .scale(-0.2, 0.9).colormap("RdYlGn"))
    m.add_layer(ndvi, name="NDVI")
    url = m.shell.map._layer_url("NDVI")
    assert url.startswith("http://127.0.0.1:") and ndvi.id in url
    rgba = _tile_with_data(url, first.bbox)
    assert (rgba[..., 3] > 0).mean() > 0.2
    m.split(ndvi, ndvi)
    m.zoom_to_extent(place("Toulouse"))
    assert m.state.view_request == tuple(place("Toulouse").bbox)
    bundle = m._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.holoviews_exec.v0+json" in data or "text/html" in data
    assert Map() is not m and Map().backend is m.backend  # one service per process


def test_show_code_text_runs_as_pasted(env):
    """The Exports tab's code, executed whole (Map included), rebuilds the same chain."""
    from app.create import create_state
    from app.settings import Settings
    from components.exports import ExportsPanel

    state = create_state(Settings())
    assert state.chain is not None
    state.viewport = (1.20, 43.63, 1.26, 43.67)
    code = ExportsPanel(state=state).code
    namespace: dict = {}
    exec(compile(code, "<show code>", "exec"), namespace)  # noqa: S102 - our own output
    assert namespace["chain"].id == state.chain.id
    m = namespace["m"]
    assert m.state.view_request is not None and list(m.layers.values()) == [state.chain]


def test_example_notebook_runs_top_to_bottom(env, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "assets" / "example.ipynb", as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = NotebookClient(nb, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    assert nb.cells[0].outputs[0]["text"].strip() == sys.executable  # the .venv kernel
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    rendered = [o for o in outputs if "application/vnd.holoviews_exec.v0+json" in
                o.get("data", {})]
    assert len(rendered) >= 2  # the map cell and the split cell rendered Panel views
    text = "".join(o.get("text", "") for o in outputs)
    assert "ndvi.html" in text and ".expression('(B08 - B04) / (B08 + B04)')" in text
    assert ":Polygons" in text and "('band', 'y', 'x')" in text  # footprints, compute()
