"""Exports tab without a server: link and iframe from the page location, the code shown, the
standalone page of the displayed chain; and the notebook Map's layers over the same backend."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from component_data import NEW, S2
from panel.io.location import Location

from components.exports import ExportsPanel, embed_url, iframe_snippet, view_of_viewport
from components.notebook import Map, legend_html, view_box
from components.state import AppState
from components.tilemath import WORLD, to_mercator
from engine.chain import Chain
from engine.errors import InvalidInput


def location(href: str) -> Location:
    loc = Location()
    for name, value in (("href", href), ("search", "?" + href.split("?", 1)[1])):
        p = loc.param[name]
        p.readonly = p.constant = False
        setattr(loc, name, value)
    return loc


@pytest.fixture
def shown(backend):
    state = AppState(backend=backend)
    state.collection = S2
    state.search()
    state.selected = [NEW]
    assert state.chain is not None
    state.viewport = (13.2, 52.45, 13.35, 52.55)
    return state


def test_link_and_embed_follow_the_page_location(shown):
    loc = location("http://eo.example:5006/app/?center=13.3,52.5&zoom=11&chain=abc")
    panel = ExportsPanel(state=shown, location=loc)
    assert panel.link == "http://eo.example:5006/app/?center=13.3,52.5&zoom=11&chain=abc"
    assert panel._embed.value == iframe_snippet(panel.link)
    assert 'src="http://eo.example:5006/app/?center=13.3,52.5&amp;zoom=11&amp;chain=abc' \
           '&amp;embed=true"' in panel._embed.value
    # the URL state moves on: the link follows
    loc.search = "?center=1,2&zoom=3&chain=def"
    assert panel.link.endswith("/app/?center=1,2&zoom=3&chain=def")
    assert embed_url(panel.link + "&embed=false").endswith("chain=def&embed=true")


def test_without_a_page_there_is_no_link(shown):
    panel = ExportsPanel(state=shown)
    assert panel.link == "" and panel._copy.disabled
    with pytest.raises(InvalidInput, match="address is unknown"):
        panel.tiles_template()


def test_code_names_no_catalog_path_by_default_and_runs_on_eox_catalog(shown, monkeypatch):
    """Paths hidden (the default, EOX_EXPOSE_PATHS): the code opens the default catalog
    (EOX_CATALOG) instead of the server's path, never a made-up '.../catalog.sqlite'."""
    from engine.security.redact import set_expose_paths

    set_expose_paths(False)
    location = str(shown.backend.catalog.location)
    code = ExportsPanel(state=shown).code
    assert location not in code and "..." not in code and "open_catalog" not in code
    monkeypatch.setenv("EOX_CATALOG", location)
    namespace: dict = {}
    exec(code.split("# show it on a map")[0], namespace)  # noqa: S102 - our own output
    assert namespace["chain"].id == shown.chain.id


def test_code_rebuilds_the_displayed_chain(shown):
    from engine.security.redact import set_expose_paths

    set_expose_paths(True)  # the operator shows paths: the code runs on the server as is
    panel = ExportsPanel(state=shown)
    code = panel.code
    assert code == panel._code.value
    assert f"Collection({S2!r}, catalog=catalog)" in code and ".process(mosaic='latest')" in code
    assert "m.add_layer(chain" in code and "m.zoom_to(" in code
    namespace: dict = {}
    exec(code.split("# show it on a map")[0], namespace)  # noqa: S102 - our own output
    assert namespace["chain"].id == shown.chain.id
    # stretch edits change the chain, and the code with it
    before = shown.chain.id
    shown.vmax = [0.625] * len(shown.vmin)
    assert shown.chain.id != before
    namespace = {}
    exec(panel.code.split("# show it on a map")[0], namespace)  # noqa: S102
    assert namespace["chain"].id == shown.chain.id and "0.625" in panel.code


def test_view_of_viewport_inverts_view_box():
    (lon, lat), zoom = view_of_viewport(view_box(13.3, 52.5, 11.25))
    assert (lon, lat, zoom) == (13.3, 52.5, 11.25)
    w, _, e, _ = view_box(0.0, 0.0, 3)
    (x0, x1), _ = to_mercator([w, e], [0, 0])
    assert abs((x1 - x0) - WORLD / 8) < 1e-6


def test_standalone_page_of_the_displayed_chain(shown, backend):
    shown_abs = AppState(backend=replace(backend, api_base="http://tiles.example:8000/api"))
    shown_abs.collection = S2
    shown_abs.search()
    shown_abs.selected = [NEW]
    shown_abs.viewport = shown.viewport
    panel = ExportsPanel(state=shown_abs)
    page = panel.html_page()
    cfg = json.loads(re.search(r'id="eox-config" type="application/json">(.*?)</script>',
                               page, re.DOTALL).group(1))
    chain = shown_abs.chain
    assert cfg["tiles"] == f"http://tiles.example:8000/api/chains/{chain.id}/tiles/{{z}}/{{x}}/{{y}}.png"
    assert Chain.from_json(cfg["chain"]) == chain
    (lon, lat), zoom = view_of_viewport(shown.viewport)
    assert cfg["center"] == [lon, lat] and cfg["zoom"] == zoom
    assert shown_abs.single_band  # the fixture collection opens on an index preset
    assert cfg["legend"]["kind"] == "colorbar"
    assert cfg["legend"]["ticks"][::2] == [f"{shown_abs.vmin[0]:g}", f"{shown_abs.vmax[0]:g}"]
    # relative api_base: resolved against the page's address
    served = ExportsPanel(state=shown, location=location("http://h:5006/eox/?chain=1"))
    assert served.tiles_template() == \
        f"http://h:5006/eox/api/chains/{shown.chain.id}/tiles/{{z}}/{{x}}/{{y}}.png"
    data = served._html_file()
    assert data is not None and b"L.tileLayer" in data.getvalue()
    assert served._download.filename == f"eoexplorer-{shown.chain.id}.html"


def test_notebook_map_layers_legends_split_and_zoom(backend, shown):
    m = Map(backend=backend)
    chain = shown.chain
    ndvi = (chain.model_copy(update={"steps": ()})
            .expression("(nir-red)/(nir+red)").scale(-1, 1).colormap("RdYlGn"))
    m.add_layer(chain, name="True colour").add_layer(ndvi, name="NDVI")
    names = [spec.name for spec in m.shell.map.layers]
    assert names[-2:] == ["True colour", "NDVI"]
    assert m.shell.map._layer_url("NDVI") == backend.register(ndvi)  # idempotent
    assert backend.chain_store.get(ndvi.id) == ndvi  # registered, so the service serves it
    legends = [p.object for p in m._legends.objects]
    assert "True colour" in legends[0] and "linear-gradient" in legends[1]
    assert legend_html("x", None) == ""
    # the first layer zoomed to its data
    w, s, e, n = backend.renderer.info(chain).bounds
    assert m.state.view_request == (w, s, e, n)
    m.zoom_to_extent((13.0, 52.0, 14.0, 53.0))
    assert m.state.view_request == (13.0, 52.0, 14.0, 53.0)
    m.split(chain, ndvi, names=("before", "after"))
    assert m.split_view is not None and m.split_view.right == ndvi
    assert m.split_view.url("right") == backend.register(ndvi)
    with pytest.raises(InvalidInput, match="takes a chain"):
        m.add_layer("not a chain")
    with pytest.raises(InvalidInput, match="out of range"):
        m.zoom_to(0, 100, 3)
    assert m.__panel__() is not None
