"""Standalone HTML export and the chain -> Python code writer.

The export is checked against a real tile service on a loopback socket (uvicorn in a
thread) over a small fixture catalog; the browser side is in tests/ui/test_sharing.py.
"""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
from datetime import UTC, datetime

import httpx
import matplotlib
import matplotlib.colors as mcolors
import numpy as np
import pytest
import uvicorn
from PIL import Image
from rasterio.transform import Affine
from render_fixtures import make_catalog, make_item, pattern

from engine import Collection
from engine.chain import Chain
from engine.chain.store import ChainStore
from engine.codegen import chain_code
from engine.errors import InvalidInput
from engine.export_html import LEAFLET_VERSION, export_html, legend_of, render_html

COLL = "s2-export"
ITEM = "S2A_EXPORT_20200601"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    transform = Affine(20.0, 0, 385_000.0, 0, -20.0, 5_825_000.0)  # UTM 33N, Berlin
    bands = {b: pattern((256, 256), seed=i) for i, b in enumerate(("B02", "B03", "B04", "B08"))}
    item = make_item(root / "cogs", ITEM, epsg=32633, transform=transform, bands=bands,
                     date=datetime(2020, 6, 1, 10, tzinfo=UTC))
    cat = make_catalog(root / "catalog.sqlite", {COLL: [item]})
    yield cat
    cat.close()


@pytest.fixture(scope="module")
def service_url(catalog):
    from service import create_service

    app = create_service(catalog, chain_store=ChainStore(catalog.path))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def _config(page: str) -> dict:
    m = re.search(r'<script id="eox-config" type="application/json">(.*?)</script>', page, re.DOTALL)
    assert m, "no config block"
    return json.loads(m.group(1))


def ndvi(catalog) -> Chain:
    return (Collection(COLL, catalog=catalog).ids(ITEM).process(mosaic="latest")
            .expression("(B08-B04)/(B08+B04)").scale(-0.5, 0.5).colormap("RdYlGn"))


def test_export_html_is_self_contained_and_its_tiles_have_data(catalog, service_url, tmp_path):
    chain = ndvi(catalog)
    out = chain.export_html(tmp_path / "page.html", service_url=service_url)
    page = out.read_text()
    # no CDN: no external script/style, Leaflet inlined, its images as data URIs
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", page)
    assert f"Leaflet {LEAFLET_VERSION}" in page and "L.tileLayer" in page
    assert "url(images/" not in page and "data:image/png;base64," in page
    cfg = _config(page)
    assert cfg["chain_id"] == chain.id and Chain.from_json(cfg["chain"]) == chain
    assert cfg["description"] == chain.describe()
    assert cfg["tiles"] == f"{service_url}/api/chains/{chain.id}/tiles/{{z}}/{{x}}/{{y}}.png"
    w, s, e, n = cfg["bounds"]
    assert 13.2 < w < e < 13.5 and 52.4 < s < n < 52.6  # the fixture scene near Berlin
    # the service knows the chain now, and the page's tile template yields real pixels
    import morecantile

    tile = morecantile.tms.get("WebMercatorQuad").tile((w + e) / 2, (s + n) / 2, 13)
    r = httpx.get(cfg["tiles"].format(z=13, x=tile.x, y=tile.y), timeout=30)
    assert r.status_code == 200
    rgba = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGBA"))
    assert (rgba[..., 3] > 0).mean() > 0.5
    # colorbar: RdYlGn ends, ticks from the scale step
    lg = cfg["legend"]
    cmap = matplotlib.colormaps["RdYlGn"]
    assert lg["kind"] == "colorbar" and lg["title"] == "(B08-B04)/(B08+B04)"
    assert lg["colors"][0] == mcolors.to_hex(cmap(0.0))
    assert lg["colors"][-1] == mcolors.to_hex(cmap(1.0))
    assert lg["ticks"] == ["-0.5", "0", "0.5"]


def test_export_html_reports_service_errors(catalog, service_url, tmp_path):
    bad = Chain.from_json({"source": {"collection": "nope"},
                           "steps": [{"name": "bands", "bands": ["B04"]}]})
    with pytest.raises(InvalidInput, match="answered 422"):
        export_html(bad, tmp_path / "x.html", service_url=service_url)
    with pytest.raises(InvalidInput, match="http"):
        export_html(bad, tmp_path / "x.html", service_url="ftp://host")
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(InvalidInput, match="cannot reach"):
        export_html(ndvi(catalog), tmp_path / "x.html", service_url=f"http://127.0.0.1:{port}",
                    timeout=2)
    assert not (tmp_path / "x.html").exists()


def test_rgb_legend_and_script_safe_config(catalog):
    chain = Collection(COLL, catalog=catalog).process().bands("B04", "B03", "B02").scale(0, 3000)
    assert legend_of(chain) == {"kind": "bands", "title": "RGB", "bands": [
        {"label": "R B04", "color": "#e53935"}, {"label": "G B03", "color": "#43a047"},
        {"label": "B B02", "color": "#1e88e5"}]}
    page = render_html(chain, tiles="http://x/{z}/{x}/{y}.png", bounds=(1, 2, 3, 4),
                       title="</script><b>hi</b>", center=(2.0, 3.0), zoom=7)
    assert "</script><b>" not in page  # neither in <title> nor in the JSON block
    cfg = _config(page)
    assert cfg["title"] == "</script><b>hi</b>" and cfg["center"] == [2.0, 3.0]
    with pytest.raises(InvalidInput, match="zoom"):
        render_html(chain, tiles="http://x/{z}/{x}/{y}.png", bounds=(1, 2, 3, 4),
                    center=(2.0, 3.0))


@pytest.mark.parametrize("build", [
    lambda c: c.ids(ITEM).process(mosaic="latest").bands("B04", "B03", "B02")
               .scale([0.0, 0.0, 0.0], [3000.0, 3000.0, 3000.0], gamma=1.3),
    lambda c: c.filter_point(13.3, 52.5).filter_date("2020-05", "2020-06-30")
               .filter("eo:cloud_cover", "<=", 20).filter("platform", "in", ["sentinel-2a"])
               .sort("datetime", ascending=False).limit(3).process()
               .expression("(B08-B04)/(B08+B04)").scale(p=(2, 98)).colormap("viridis"),
    lambda c: c.filter_bbox((13.0, 52.0, 14.0, 53.0)).process_multi(["B04", "B08"], times=True,
                                                                   mosaic="max")
               .reduce("median").band(1).mask(0, 1).scale(0, 4000).color_custom(["Lime"])
               .opacity(0.5),
    lambda c: c.filter_geometry({"type": "Polygon", "coordinates": [[[13, 52], [14, 52],
                                 [14, 53], [13, 52]]]}).process().bands("B08")
               .then({"name": "scale", "min": [1], "max": [2]}),
])
def test_chain_code_rebuilds_the_same_chain(catalog, build):
    chain = build(Collection(COLL, catalog=catalog))
    code = chain_code(chain, catalog=str(catalog.path))
    assert "Collection(" in code and "Chain.from_json" not in code
    namespace: dict = {}
    exec(compile(code, "<chain_code>", "exec"), namespace)  # noqa: S102 - our own output
    assert namespace["chain"].id == chain.id


def test_chain_code_falls_back_to_json_when_the_api_cannot_say_it(catalog):
    chain = Chain.from_json({"source": {"collection": COLL, "sortby": [["datetime", True],
                                                                       ["id", False]]},
                             "steps": [{"name": "bands", "bands": ["B04"]}]})
    code = chain_code(chain)
    assert "Chain.from_json" in code
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102
    assert namespace["chain"].id == chain.id


def test_export_html_takes_only_a_path(catalog, service_url, tmp_path, monkeypatch):
    """The service URL defaults to the settings' (EOX_SERVICE_URL), then to the service this
    process started, then to `eoexplorer serve`'s default address; an explicit one wins."""
    from engine.config import DEFAULT_SERVICE_URL, default_service_url, note_running_service

    chain = ndvi(catalog)
    monkeypatch.setenv("EOX_SERVICE_URL", service_url)
    out = chain.export_html(tmp_path / "page.html")
    cfg = _config(out.read_text())
    assert cfg["tiles"] == f"{service_url}/api/chains/{chain.id}/tiles/{{z}}/{{x}}/{{y}}.png"
    with pytest.raises(InvalidInput, match="cannot reach the tile service at http://127.0.0.1:9"):
        chain.export_html(tmp_path / "x.html", service_url="http://127.0.0.1:9", timeout=2)
    monkeypatch.delenv("EOX_SERVICE_URL")
    note_running_service("http://127.0.0.1:1234")
    try:
        assert default_service_url() == "http://127.0.0.1:1234"
    finally:
        note_running_service(None)
    assert default_service_url() == DEFAULT_SERVICE_URL == "http://127.0.0.1:5006"
