"""POST /api/chains/{id}/extract through the real ASGI app: files that rasterio opens with the
right grid and pixels, and the status of every kind of bad request."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rasterio
import rasterio.warp
from PIL import Image
from rasterio.io import MemoryFile
from service_data import COLLECTION, CRS_UTM, ITEM_JUNE, RES, TRANSFORM, band_array

from service.routes.extract import ExtractRoutes


def _polygon(x0=500_500.0, y0=5_546_000.0, x1=502_500.0, y1=5_548_500.0) -> dict:
    xs, ys = rasterio.warp.transform(CRS_UTM, "EPSG:4326", [x0, x1, x1, x0, x0],
                                     [y0, y0, y1, y1, y0])
    return {"type": "Polygon", "coordinates": [[[x, y] for x, y in zip(xs, ys, strict=True)]]}


def _post(client, chain_id, **body):
    return client.post(f"/api/chains/{chain_id}/extract", json={"geometry": _polygon(), **body})


def test_bands_extract_is_a_cog_with_the_source_pixels(client, chain_id):
    r = _post(client, chain_id, what="bands")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/tiff"
    assert "attachment" in r.headers["content-disposition"]
    assert r.headers["x-extract-bands"] == "B04,B03,B02"
    with MemoryFile(r.content) as mem, mem.open() as ds:
        assert ds.crs == CRS_UTM and ds.res == (RES, RES) and ds.nodata == 0
        assert ds.count == 3 and ds.dtypes[0] == "uint16"
        data, t = ds.read(), ds.transform
        h, w = ds.height, ds.width
    # pixel (row, col) of the output is pixel (row + dr, col + dc) of the source
    dc = round((t.c - TRANSFORM.c) / RES)
    dr = round((TRANSFORM.f - t.f) / RES)
    src = band_array("B04")[dr:dr + h, dc:dc + w]
    valid = data[0] > 0
    assert valid.mean() > 0.9  # the box covers most of the output grid
    np.testing.assert_array_equal(data[0][valid], src[valid])


def test_rendered_png_is_rgba(client, chain_id):
    r = _post(client, chain_id, format="png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    w, h = (int(v) for v in r.headers["x-extract-size"].split("x"))
    assert img.shape == (h, w, 4) and img[..., 3].max() == 255


def test_rendered_cog_matches_png(client, chain_id):
    cog = _post(client, chain_id)
    png = _post(client, chain_id, format="png")
    with MemoryFile(cog.content) as mem, mem.open() as ds:
        rgba = ds.read()
    np.testing.assert_array_equal(np.moveaxis(np.asarray(Image.open(io.BytesIO(png.content))),
                                              -1, 0), rgba)


def test_resolution_and_crs_options(client, chain_id):
    r = _post(client, chain_id, what="bands", resolution=20)
    with MemoryFile(r.content) as mem, mem.open() as ds:
        assert ds.res == (20.0, 20.0)
    r = _post(client, chain_id, what="bands", crs="EPSG:4326", resolution=0.0005)
    assert r.status_code == 200, r.text
    with MemoryFile(r.content) as mem, mem.open() as ds:
        assert ds.crs.to_epsg() == 4326


@pytest.mark.parametrize("body, status, text", [
    ({"format": "jpeg"}, 422, "format"),
    ({"what": "everything"}, 422, "what"),
    ({"resolution": -1}, 422, "resolution"),
    ({"geometry": {"type": "Point", "coordinates": [15, 50]}}, 422, "geometry"),
    ({"geometry": {"type": "Polygon", "coordinates": []}}, 422, "geometry"),
    ({"crs": "EPSG:nope"}, 400, "not a CRS"),
    ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [0.01, 0], [0.01, 0.01],
                                                       [0, 0]]]}}, 424, "no scene"),
])
def test_bad_requests(client, chain_id, body, status, text):
    r = client.post(f"/api/chains/{chain_id}/extract", json={"geometry": _polygon(), **body})
    assert r.status_code == status, r.text
    assert text in r.json()["detail"]


def test_unknown_chain_is_404(client):
    r = _post(client, "0123456789abcdef")
    assert r.status_code == 404 and r.json()["type"] == "NotFound"


def test_png_of_values_is_refused(client):
    chain = {"source": {"collection": COLLECTION, "ids": [ITEM_JUNE]},
             "steps": [{"name": "expression", "expression": "(B08 - B04) / (B08 + B04)"}]}
    cid = client.post("/api/chains", json=chain).json()["id"]
    r = _post(client, cid, format="png")
    assert r.status_code == 400 and "PNG holds 8-bit colours" in r.json()["detail"]
    r = _post(client, cid)
    with MemoryFile(r.content) as mem, mem.open() as ds:
        assert ds.dtypes[0].startswith("float")


def test_self_intersecting_polygon_is_repaired_and_said(client, chain_id):
    ring = _polygon()["coordinates"][0]
    bowtie = {"type": "Polygon", "coordinates": [[ring[0], ring[2], ring[1], ring[3],
                                                  ring[0]]]}
    r = client.post(f"/api/chains/{chain_id}/extract", json={"geometry": bowtie})
    assert r.status_code == 200 and "repaired" in r.headers["x-extract-note"]


def test_too_large_is_400_and_leaves_no_file(scene, tmp_path, monkeypatch):
    import tempfile

    from fastapi import FastAPI
    from service_data import true_colour
    from starlette.testclient import TestClient

    from engine.catalog import SQLiteCatalog
    from engine.chain import Chain
    from engine.chain.store import ChainStore
    from service.errors import add_exception_handlers

    store = ChainStore(scene.db)
    cid = store.put(Chain.from_json(true_colour()))
    app = FastAPI()
    add_exception_handlers(app)
    app.include_router(ExtractRoutes(catalog=SQLiteCatalog(scene.db), chain_store=store,
                                     max_pixels=10_000).router)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with TestClient(app) as c:
        r = _post(c, cid)
    assert r.status_code == 400
    assert "too large" in r.json()["detail"] and "10,000" in r.json()["detail"]
    assert list(tmp_path.iterdir()) == []


def test_configured_limit_is_honoured_and_the_message_says_size_and_limit(
        client, chain_id, scene, tmp_path, monkeypatch):
    """EOX_EXTRACT_MAX_PIXELS reaches the route through app.wiring: a small box that the
    default limit accepts is refused with 400 naming its size and the configured limit."""
    import tempfile

    from service_data import true_colour
    from starlette.testclient import TestClient

    from app.settings import Settings
    from app.wiring import build_service
    from engine.chain import get_executor, set_executor

    ok = _post(client, chain_id, what="bands")
    assert ok.status_code == 200, ok.text
    w, h = (int(v) for v in ok.headers["x-extract-size"].split("x"))
    assert Settings(catalog=str(scene.db), data_dir=tmp_path).extract_max_pixels == 36_000_000

    def service(limit: int):
        monkeypatch.setenv("EOX_EXTRACT_MAX_PIXELS", str(limit))
        settings = Settings(catalog=str(scene.db), data_dir=tmp_path, functions_enabled=False)
        assert settings.extract_max_pixels == limit
        previous = get_executor()
        try:
            return build_service(settings)
        finally:
            set_executor(previous)

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with TestClient(service(w * h - 1), base_url="http://localhost") as c:
        cid = c.post("/api/chains", json=true_colour()).json()["id"]
        r = _post(c, cid, what="bands")
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert "too large" in detail and f"{w} x {h} px = {w * h:,} pixels" in detail
        assert f"limit of {w * h - 1:,} pixels" in detail
        assert list(temp.iterdir()) == []  # refused before any folder was made
    with TestClient(service(w * h), base_url="http://localhost") as c:  # just at the limit
        cid = c.post("/api/chains", json=true_colour()).json()["id"]
        assert _post(c, cid, what="bands").status_code == 200


def test_failure_mid_extract_leaves_no_folder_or_file(client, chain_id, tmp_path, monkeypatch,
                                                      extract_fails_mid_run):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = _post(client, chain_id, what="bands", resolution=2)  # 1000 x 1250 px: 6 blocks
    assert r.status_code == 424 and "source vanished" in r.json()["detail"]
    assert list(tmp_path.iterdir()) == []
