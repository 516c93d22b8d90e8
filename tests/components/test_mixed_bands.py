"""A collection whose scenes have different bands (a Sentinel-1-like VV/VH scene among
Sentinel-2 ones), and one of masks plus one data band: the display always fits the
selected scene and says why it changed (QA issues: silent empty map, RGB of masks)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from component_data import S2_BANDS, SIZE, _cog, _item

from components.backend import Backend
from components.display import DisplayPanel
from components.presets import default_band, default_rgb, is_mask_band
from components.state import AppState
from engine.catalog import SQLiteCatalog
from engine.chain.store import ChainStore
from engine.ingest.items import BandAsset, build_collection, make_item
from engine.render import TileRenderer

MIXED = "mixed-test"
MASKS = "masks-test"
S2_ID, S1_ID, EOP_ID = "S2A_33UUU_20200801", "S1A_IW_GRDH_20200802", "EOPATCH_20200803"


def _grid(low: float, step: float) -> np.ndarray:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    return (low + step * (rows + cols)).astype(np.float32)


def _float_cog(path: Path, array: np.ndarray) -> Path:
    import rasterio
    from component_data import CRS_UTM, ORIGIN, RES
    from rasterio.transform import from_origin

    profile = {"driver": "COG", "dtype": "float32", "count": 1, "width": SIZE, "height": SIZE,
               "crs": CRS_UTM, "transform": from_origin(*ORIGIN, RES, RES), "nodata": -9999,
               "compress": "DEFLATE", "blocksize": 256, "overviews": "AUTO"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)
    return path


def _plain_item(folder: Path, item_id: str, arrays: dict[str, np.ndarray], when: datetime,
                collection: str):
    folder.mkdir(parents=True, exist_ok=True)
    assets = []
    for key, arr in arrays.items():
        path = folder / f"{item_id}_{key}.tif"
        href = _float_cog(path, arr) if arr.dtype == np.float32 else _cog(path, arr)
        assets.append(BandAsset(key=key, href=href, eo_band={"name": key}))
    return make_item(item_id, when, assets, properties={"platform": "test"},
                     collection=collection)


@pytest.fixture(scope="module")
def mixed_backend(tmp_path_factory) -> Backend:
    root = tmp_path_factory.mktemp("mixed")
    folder = root / "cogs"
    s2 = _item(folder, S2_ID, S2_BANDS, datetime(2020, 8, 1, 10, tzinfo=UTC), 5.0, 0, MIXED)
    # Sentinel-1-like backscatter in dB (about -25..-5): only VV and VH
    s1 = _plain_item(folder, S1_ID, {"VV": _grid(-25, 0.04), "VH": _grid(-30, 0.04)},
                     datetime(2020, 8, 2, 6, tzinfo=UTC), MIXED)
    flag = np.ones((SIZE, SIZE), dtype=np.uint16)
    eop = _plain_item(folder, EOP_ID, {"CLM": flag, "CLP": flag * 3, "IS_DATA": flag,
                                       "IS_VALID": flag, "NDVI": _grid(-0.2, 0.002)},
                      datetime(2020, 8, 3, 10, tzinfo=UTC), MASKS)
    db = root / "catalog.sqlite"
    with SQLiteCatalog(db) as cat:
        cat.add_collection(build_collection(MIXED, [s2, s1]))
        cat.add_items([s2, s1], collection=MIXED)
        cat.add_collection(build_collection(MASKS, [eop]))
        cat.add_items([eop], collection=MASKS)
    catalog = SQLiteCatalog(db)
    return Backend(catalog=catalog, chain_store=ChainStore(db), renderer=TileRenderer(catalog))


def _searched(backend: Backend, collection: str) -> AppState:
    state = AppState(backend=backend, collection=collection)
    assert state.search() > 0
    return state


def test_s1_scene_falls_back_to_a_band_it_has_and_says_why(mixed_backend):
    state = _searched(mixed_backend, MIXED)
    assert "true-colour" in state.presets  # the collection (S2 + S1) offers it
    state.choose_preset("true-colour")
    state.selected = [S2_ID]
    assert state.chain is not None and state.rgb == ["red", "green", "blue"]
    state.selected = [S1_ID]
    # not silently kept on true colour (the service answers 422 for 'red' there)
    assert state.chain is not None and S1_ID in state.chain.to_json()
    assert set(state.chain.read_bands()) <= {"VV", "VH"}
    assert state.single_band and state.expression == "VV" and state.colormap == "gray"
    # stretched to the scene's dB values, not 0..4000
    assert -26 < state.vmin[0] < state.vmax[0] < -3
    assert state.notice is not None and state.notice.level == "info"
    assert "'red'" in state.notice.text and "VV" in state.notice.text
    assert "greyscale" in state.notice.text
    # the tiles of the displayed chain render (what the browser fetches)
    cid = state.chain_id
    assert mixed_backend.chain_store.get(cid) is not None
    img = mixed_backend.renderer.tile(state.chain, 13, 4399, 2686)
    assert img is not None and int((~img.array.mask).sum()) > 0
    # back on the S2 scene, a preset it can draw comes back
    state.selected = [S2_ID]
    assert not state.single_band and set(state.rgb) <= {"red", "green", "blue", "nir"}
    assert S2_ID in state.chain.to_json()


def test_refused_chain_is_an_error_notice_not_a_silent_map(mixed_backend, monkeypatch):
    state = _searched(mixed_backend, MIXED)
    state.choose_preset("true-colour")
    state.selected = [S2_ID]
    good = state.chain_id
    # scenes whose bands are not described: only the service finds out ('red' unknown)
    monkeypatch.setattr(AppState, "selected_band_names", lambda self: [], raising=False)
    state.selected = [S1_ID]
    assert state.chain_id == good  # the refused chain is not drawn
    n = state.notice
    assert n is not None and n.level == "error" and "unknown band 'red'" in n.text
    assert "VV" in n.text and "pick a preset" in n.text
    state.param.update(preset="custom-expression", expression="VH", vmin=[-30.0],
                       vmax=[-5.0])
    assert state.chain_id != good and "VH" in state.chain.to_json()  # the app keeps working


def test_masks_collection_defaults_to_one_data_band_in_grey(mixed_backend):
    assert is_mask_band("CLM") and is_mask_band("IS_DATA") and is_mask_band("SCL")
    assert not is_mask_band("NDVI") and not is_mask_band("B04") and not is_mask_band("VV")
    bands = ["CLM", "CLM_INTERSSIM", "CLP", "IS_DATA", "IS_VALID", "NDVI"]
    assert default_rgb(bands) is None and default_band(bands) == "NDVI"
    assert default_rgb(["B1", "B2", "B3", "SCL"]) == ("B1", "B2", "B3")
    state = AppState(backend=mixed_backend, collection=MASKS)
    assert state.presets == [] and state.single_band
    assert state.expression == "NDVI" and state.colormap == "gray"
    panel = DisplayPanel(state=state)
    state.search()
    state.selected = [EOP_ID]
    assert "NDVI" in state.chain.to_json() and "CLM" not in state.chain.to_json()
    assert -0.25 < state.vmin[0] < state.vmax[0] < 1.0  # stretched to the NDVI values
    assert panel._legend.visible and "linear-gradient" in panel._legend.object


def test_profile_index_follows_what_the_collection_can_compute(mixed_backend):
    from components.profile import ProfilePanel
    from engine.timeseries import DEFAULT_EXPRESSION

    state = AppState(backend=mixed_backend, collection=MASKS)  # masks + NDVI, no red/nir
    panel = ProfilePanel(state=state)
    assert panel.expression == "NDVI"  # the display's band, not an NDVI it cannot compute
    state.collection = MIXED  # has red and nir: back to NDVI
    assert panel.expression == DEFAULT_EXPRESSION
    panel.expression = "(nir - red) / (nir + red + 1)"  # the user's own index...
    state.collection = MASKS  # ...cannot be computed here: replaced, not left to fail
    assert panel.expression == "NDVI"


def test_the_fallback_display_is_drawn_once(mixed_backend):
    """The fit to the S1 scene changes the display from inside the chain refresh: the chain
    is still set once (the stretched grey band), not once per nested change."""
    state = _searched(mixed_backend, MIXED)
    state.choose_preset("true-colour")
    state.selected = [S2_ID]
    calls: dict[str, list] = {}
    state.param.watch(lambda *evs: [calls.setdefault(e.name, []).append(e.new) for e in evs],
                      ["chain", "preset", "expression", "vmin"], onlychanged=False)
    state.selected = [S1_ID]
    assert len(calls["chain"]) == 1 and len(calls["preset"]) == 1
    assert calls["expression"] == ["VV"]
    assert sorted(v[0] for v in calls["vmin"])[1] == 0.0  # grey 0..1, and stretched:
    assert -26 < state.vmin[0] < -3 and calls["chain"][0].id == state.chain_id
    assert calls["chain"][0].id == state.chain_id and not state.stretch_pending


def test_s2_scenes_without_common_names_keep_true_colour(tmp_path):
    """A Sentinel-2 catalog whose assets name B02/B03/B04 only (no common_name, as a
    bench mosaic or an agency's own STAC may): selecting a scene keeps true colour - the
    engine reads 'red' as B04 there - instead of falling back to B04 in grey stretched
    0..1 (all white) with a notice saying the scene has no band 'red' (found by hand,
    session 8)."""
    folder = tmp_path / "cogs"
    folder.mkdir()
    arrays = {k: (_grid(200 + 300 * i, 2.0)).astype(np.uint16)
              for i, k in enumerate(("B02", "B03", "B04"))}
    assets = [BandAsset(key=k, href=_cog(folder / f"{k}.tif", a), eo_band={"name": k})
              for k, a in arrays.items()]
    item = make_item("S2B_NOCOMMON_20200801", datetime(2020, 8, 1, 10, tzinfo=UTC), assets,
                     properties={"platform": "sentinel-2b", "constellation": "sentinel-2"},
                     collection="s2-nocommon")
    db = tmp_path / "catalog.sqlite"
    with SQLiteCatalog(db) as cat:
        cat.add_collection(build_collection("s2-nocommon", [item]))
        cat.add_items([item], collection="s2-nocommon")
    catalog = SQLiteCatalog(db)
    backend = Backend(catalog=catalog, chain_store=ChainStore(db),
                      renderer=TileRenderer(catalog))
    state = _searched(backend, "s2-nocommon")
    assert state.preset == "true-colour"
    state.selected = [item.id]
    assert state.preset == "true-colour" and not state.single_band
    assert list(state.chain.read_bands()) == ["red", "green", "blue"]
    assert state.vmax == [4000.0] * 3  # reflectance 0..0.4, not a grey 0..1
    assert state.notice is None or "no band" not in state.notice.text
    img = backend.renderer.tile(state.chain, 13, 4399, 2686)  # and it draws
    assert img is not None and int((~img.array.mask).sum()) > 0
    catalog.close()
