"""The time endpoints through the real ASGI app: GET /api/profile (JSON, CSV, errors) and
POST /api/timelapse (MP4/GIF files, limits), over 3 dates of small COGs with an SCL band."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image
from rasterio.transform import xy
from rasterio.warp import transform as warp_transform
from service_data import CRS_UTM, SIZE, TRANSFORM, write_cog
from starlette.testclient import TestClient

from engine.catalog import SQLiteCatalog
from engine.chain.store import ChainStore
from engine.ingest.items import BandAsset, build_collection, make_item
from service import create_service

NAME = "s2-time"
DATES = [datetime(2021, 5, 2, 10, tzinfo=UTC), datetime(2021, 6, 1, 10, tzinfo=UTC),
         datetime(2021, 7, 1, 10, tzinfo=UTC)]
CLOUD = [5.0, 90.0, 20.0]
ROW, COL = 100, 200
(_LON,), (_LAT,) = warp_transform(CRS_UTM, "EPSG:4326", *[[v] for v in xy(TRANSFORM, ROW, COL)])
LON, LAT = float(_LON), float(_LAT)


def bands(t: int) -> dict[str, np.ndarray]:
    """B04/B08 gradients that change per date; SCL cloudy (9) everywhere on date 1."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    b04 = (500 + rows + 100 * t).astype(np.uint16)
    b08 = (2000 + cols + 700 * t).astype(np.uint16)
    scl = np.full((SIZE, SIZE), 9 if t == 1 else 4, np.uint16)
    return {"B04": b04, "B08": b08, "SCL": scl}


def expected_ndvi(t: int) -> float:
    b = bands(t)
    b04, b08 = float(b["B04"][ROW, COL]), float(b["B08"][ROW, COL])
    return (b08 - b04) / (b08 + b04)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("time")
    items = []
    for t, when in enumerate(DATES):
        folder = root / f"d{t}"
        folder.mkdir()
        assets = []
        for key, arr in bands(t).items():
            path = write_cog(folder / f"{key}.tif", arr)
            common = {"B04": "red", "B08": "nir"}.get(key)
            assets.append(BandAsset(key=key, href=path,
                                    eo_band={"name": key, **({"common_name": common}
                                                             if common else {})},
                                    roles=["data", "cloud-mask"] if key == "SCL" else ["data"]))
        items.append(make_item(f"S2A_T{t}", when, assets, collection=NAME, properties={
            "platform": "sentinel-2a", "constellation": "sentinel-2", "eo:cloud_cover": CLOUD[t],
            "processing:level": "L2A", "grid:code": "MGRS-33UVR"}))
    db = root / "catalog.sqlite"
    with SQLiteCatalog(db) as catalog:
        catalog.add_collection(build_collection(NAME, items))
        catalog.add_items(items, collection=NAME)
    app = create_service(SQLiteCatalog(db), chain_store=ChainStore(db))
    with TestClient(app) as c:
        yield c


def get_profile(client, **params):
    return client.get("/api/profile", params={"collection": NAME, "lon": LON, "lat": LAT,
                                              **params})


def test_profile_json(client):
    r = get_profile(client, expression="(B08-B04)/(B08+B04)")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["collection"] == NAME and body["expression"] == "(B08-B04)/(B08+B04)"
    assert body["lon"] == pytest.approx(LON) and body["count"] == 3 and body["clear"] == 2
    assert body["message"] is None
    pts = body["points"]
    assert [p["id"] for p in pts] == ["S2A_T0", "S2A_T1", "S2A_T2"]
    assert [p["date"][:10] for p in pts] == ["2021-05-02", "2021-06-01", "2021-07-01"]
    assert [p["cloud"] for p in pts] == [False, True, False]
    assert [p["scene_cloud"] for p in pts] == CLOUD
    assert pts[0]["value"] == pytest.approx(expected_ndvi(0), abs=1e-6)
    assert pts[1]["value"] is None
    assert pts[2]["value"] == pytest.approx(expected_ndvi(2), abs=1e-6)
    # the default expression is NDVI by common names; unmasked clouds keep their value
    raw = get_profile(client, mask_clouds="false").json()
    assert raw["points"][1]["value"] == pytest.approx(expected_ndvi(1), abs=1e-6)
    assert raw["points"][1]["cloud"] is True and raw["expression"] == "(nir-red)/(nir+red)"


def test_profile_filters_and_all_cloudy_message(client):
    body = get_profile(client, start="2021-06", end="2021-06").json()
    assert body["count"] == 1 and body["clear"] == 0
    assert "cloudy" in body["message"]
    body = get_profile(client, max_cloud=30).json()
    assert [p["id"] for p in body["points"]] == ["S2A_T0", "S2A_T2"]


def test_profile_csv(client):
    r = get_profile(client, format="csv", expression="B04")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    disposition = r.headers["content-disposition"]
    assert disposition.startswith("attachment;") and f"profile_{NAME}_" in disposition
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["date", "value", "cloud", "scene_cloud", "id"]
    assert len(rows) == 3 and rows[1]["value"] == "" and rows[1]["cloud"] == "True"
    assert float(rows[2]["value"]) == bands(2)["B04"][ROW, COL]


@pytest.mark.parametrize("params, status, needle", [
    ({"collection": "nope"}, 404, "nope"),
    ({"lon": 10.0, "lat": 40.0}, 404, "no scene"),
    ({"expression": "(B12-B04)"}, 422, "B12"),
    ({"expression": "(B08-"}, 422, "malformed"),
    ({"expression": "B08; B04"}, 422, "one expression"),
    ({"lat": 100}, 422, "lat"),
    ({"start": "2021-13"}, 400, "2021-13"),
    ({"start": "2022", "end": "2021"}, 400, "inverted"),
    ({"format": "xml"}, 422, "format"),
])
def test_profile_errors(client, params, status, needle):
    r = get_profile(client, **params)
    assert r.status_code == status, r.text
    body = r.json()
    assert needle in body["detail"] and body["type"]


def test_profile_unknown_band_lists_the_bands(client):
    body = get_profile(client, expression="B12").json()
    assert {"B04", "B08", "nir", "red"} <= set(body["choices"])


def _bbox():
    (w, e), (s, n) = warp_transform(CRS_UTM, "EPSG:4326", *[
        list(v) for v in xy(TRANSFORM, [400, 100], [100, 400])])
    return [w, s, e, n]


def test_timelapse_mp4_and_gif(client, tmp_path):
    req = {"collection": NAME, "bands": ["B04"], "vmin": 0, "vmax": 3000, "bbox": _bbox(),
           "width": 128, "fps": 3}
    r = client.post("/api/timelapse", json=req)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["content-disposition"] == f'attachment; filename="timelapse_{NAME}.mp4"'
    path = tmp_path / "t.mp4"
    path.write_bytes(r.content)
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    assert meta["size"][0] == 128 and meta["fps"] == pytest.approx(3)
    assert len(list(gen)) == 3

    r = client.post("/api/timelapse", json={**req, "format": "gif", "max_cloud": 50,
                                            "expression": None, "bands": None,
                                            "chain": None} | {"expression": "B08-B04",
                                                              "colormap": "viridis"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/gif"
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.n_frames == 2 and im.size[0] == 128


def test_timelapse_from_a_chain_template(client):
    chain = {"source": {"collection": NAME, "start": "2021-05-15T00:00:00Z"},
             "steps": [{"name": "bands", "bands": ["B04", "B08", "B04"]},
                       {"name": "scale", "min": [0], "max": [4000]}]}
    r = client.post("/api/timelapse", json={"chain": chain, "bbox": _bbox(), "width": 64,
                                            "format": "gif", "label": False})
    assert r.status_code == 200, r.text
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.n_frames == 2  # the template's query picks the dates, one frame each
    chain["source"] = {"collection": NAME, "ids": ["S2A_T2"]}
    r = client.post("/api/timelapse", json={"chain": chain, "bbox": _bbox(), "width": 64,
                                            "format": "gif"})
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.n_frames == 1


@pytest.mark.parametrize("change, status, needle", [
    ({"bands": None}, 400, "bands"),
    ({"collection": None}, 400, "collection"),
    ({"bands": ["B04", "B08"]}, 400, "not 2"),
    ({"width": 2100, "height": 2100}, 400, "2..2048"),
    ({"width": 10}, 422, "width"),
    ({"bbox": [10, 10, 10.1, 10.1]}, 404, "bbox"),
    ({"collection": "nope"}, 404, "nope"),
    ({"bands": ["B99"]}, 422, "B99"),
    ({"format": "avi"}, 422, "format"),
    ({"chain": {"source": {}}}, 400, "either"),
])
def test_timelapse_errors(client, change, status, needle):
    req = {"collection": NAME, "bands": ["B04"], "bbox": _bbox(), "width": 64} | change
    r = client.post("/api/timelapse", json=req)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
