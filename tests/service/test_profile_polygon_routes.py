"""POST /api/profile through the real ASGI app over the Landsat demo (61x61 px at 30 m,
105 scenes with Fmask): the polygon answer equals a mean of NDVI computed here with
rasterio/numpy over the clear pixels whose centre is inside the polygon; hostile bodies get
a 4xx JSON error naming the problem (and the valid choices), never a 500."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.features
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from pyproj import Transformer
from schemathesis import GenerationMode
from service_data import COLLECTION as SERVICE_COLLECTION
from service_data import make_app
from starlette.testclient import TestClient

from engine.catalog import SQLiteCatalog
from engine.chain.store import ChainStore
from service import create_service
from service.errors import add_exception_handlers
from service.routes.profile import MAX_PROFILE_PIXELS, TimeRoutes

ROOT = Path(__file__).resolve().parents[2]
DEMO = Path(os.environ.get("EOX_TEST_DEMO_DIR", ROOT / ".cache" / "demo"))
COLLECTION = "landsat-sr"
#: A 0.01 x 0.009 degree box inside the demo's 61x61 px Landsat footprint (about 940 px).
BOX = [-106.92, 40.283, -106.91, 40.292]
#: Fmask classes masked as cloud, shadow, snow (engine.chain.steps.FMASK_CLOUD_CLASSES),
#: restated here so a change there shows; 255 is Fmask's fill.
FMASK_CLOUDY = (2, 3, 4)
FMASK_FILL = 255
NODATA = -9999


def ring(w: float, s: float, e: float, n: float) -> list[list[float]]:
    return [[w, s], [e, s], [e, n], [w, n], [w, s]]


def polygon(w: float, s: float, e: float, n: float) -> dict:
    return {"type": "Polygon", "coordinates": [ring(w, s, e, n)]}


@pytest.fixture(scope="module")
def demo_client(tmp_path_factory):
    db = DEMO / "catalog.sqlite"
    if not (db.exists() and (DEMO / "data" / "cogs" / COLLECTION).is_dir()):
        pytest.skip(f"no Landsat demo at {DEMO}: run `eoexplorer demo` (make test does it)")
    store = ChainStore(tmp_path_factory.mktemp("chains") / "chains.sqlite")
    app = create_service(SQLiteCatalog(db), chain_store=store)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def answer(demo_client) -> dict:
    r = demo_client.post("/api/profile", json={"collection": COLLECTION,
                                               "geometry": polygon(*BOX)})
    assert r.status_code == 200, r.text
    return r.json()


def expected(scene_id: str, geometry: dict, *, mask_clouds: bool = True
             ) -> tuple[float, int, float]:
    """(mean NDVI, pixels averaged, cloudy fraction of valid pixels) of one scene over the
    polygon, from the files: pixel centres inside, fill (-9999 / Fmask 255) left out."""
    folder = DEMO / "data" / "cogs" / COLLECTION / scene_id
    with rasterio.open(folder / "red.tif") as ds:
        red = ds.read(1).astype(np.float64)
        crs, transform = ds.crs, ds.transform
    with rasterio.open(folder / "nir.tif") as ds:
        nir = ds.read(1).astype(np.float64)
    with rasterio.open(folder / "fmask.tif") as ds:
        fmask = ds.read(1)
    to_utm = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    xy = [to_utm.transform(x, y) for x, y in geometry["coordinates"][0]]
    inside = rasterio.features.geometry_mask(
        [{"type": "Polygon", "coordinates": [xy]}], out_shape=red.shape, transform=transform,
        invert=True)
    valid = inside & (red != NODATA) & (nir != NODATA) & (fmask != FMASK_FILL)
    cloudy = valid & np.isin(fmask, FMASK_CLOUDY)
    use = valid & ~cloudy if mask_clouds else valid
    ndvi = (nir - red) / (nir + red)
    use &= np.isfinite(ndvi)
    mean = float(ndvi[use].mean()) if use.any() else math.nan
    fraction = cloudy.sum() / valid.sum() if valid.any() else math.nan
    return mean, int(use.sum()), float(fraction)


def test_polygon_profile_matches_numpy(answer):
    assert answer["collection"] == COLLECTION and answer["geometry"]["type"] == "Polygon"
    assert answer["lon"] is None and answer["lat"] is None
    assert answer["expression"] == "(nir-red)/(nir+red)" and answer["mask_clouds"] is True
    pts = answer["points"]
    assert answer["count"] == len(pts) == 105
    assert set(pts[0]) == {"date", "value", "cloud", "scene_cloud", "id", "count",
                           "cloud_fraction"}
    assert [p["date"] for p in pts] == sorted(p["date"] for p in pts)
    assert answer["clear"] == sum(p["value"] is not None and not p["cloud"] for p in pts)
    # dates of every kind: all clear, partly cloudy, all cloudy
    whole = [p for p in pts if p["cloud_fraction"] == 0]
    partly = [p for p in pts if p["cloud_fraction"] and 0 < p["cloud_fraction"] < 1]
    cloudy = [p for p in pts if p["cloud"]]
    assert whole and partly and cloudy
    for p in whole[:2] + partly[:3] + cloudy[:2]:
        mean, n, fraction = expected(p["id"], polygon(*BOX))
        assert p["count"] == n, p
        assert p["cloud_fraction"] == pytest.approx(fraction, abs=1e-12), p
        if n:
            assert p["value"] == pytest.approx(mean, rel=1e-6), p
        else:
            assert p["value"] is None and p["cloud"] is True, p
    assert whole[0]["count"] > 900  # the box holds about 940 pixel centres


def test_polygon_profile_unmasked_and_filtered(demo_client, answer):
    partly = next(p for p in answer["points"]
                  if p["cloud_fraction"] and 0 < p["cloud_fraction"] < 1)
    day = partly["date"][:10]
    r = demo_client.post("/api/profile", json={
        "collection": COLLECTION, "geometry": polygon(*BOX), "mask_clouds": False,
        "start": day, "end": day, "expression": "(nir - red) / (nir + red)"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["id"] for p in body["points"]] == [partly["id"]]
    mean, n, _ = expected(partly["id"], polygon(*BOX), mask_clouds=False)
    assert body["points"][0]["value"] == pytest.approx(mean, rel=1e-6)
    assert body["points"][0]["count"] == n > partly["count"]  # cloudy pixels now count


def test_all_cloudy_date_says_so(demo_client, answer):
    cloudy = next(p for p in answer["points"] if p["cloud"])
    day = cloudy["date"][:10]
    body = demo_client.post("/api/profile", json={
        "collection": COLLECTION, "geometry": polygon(*BOX), "start": day, "end": day}).json()
    assert body["count"] == 1 and body["clear"] == 0
    assert body["points"][0]["cloud_fraction"] == 1.0 and body["points"][0]["value"] is None
    assert "no clear value over this polygon" in body["message"]


def test_multipolygon_is_the_union_of_its_parts(demo_client):
    west, east = [-106.92, 40.283, -106.9155, 40.292], [-106.915, 40.283, -106.91, 40.292]
    dates = {"start": "2008-05", "end": "2008-07"}
    multi = demo_client.post("/api/profile", json={
        "collection": COLLECTION, **dates, "geometry": {
            "type": "MultiPolygon", "coordinates": [[ring(*west)], [ring(*east)]]}}).json()
    parts = [demo_client.post("/api/profile", json={
        "collection": COLLECTION, **dates, "geometry": polygon(*box)}).json()
        for box in (west, east)]
    assert multi["count"] == parts[0]["count"] == parts[1]["count"] > 0
    for p, a, b in zip(multi["points"], *(x["points"] for x in parts), strict=True):
        assert p["count"] == a["count"] + b["count"], (p, a, b)
        if p["count"]:
            weighted = ((a["value"] or 0) * a["count"] + (b["value"] or 0) * b["count"]) \
                / p["count"]
            assert p["value"] == pytest.approx(weighted, rel=1e-6)


def test_polygon_profile_csv(demo_client, answer):
    r = demo_client.post("/api/profile", json={"collection": COLLECTION,
                                               "geometry": polygon(*BOX), "format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "_polygon_" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["date", "value", "cloud", "scene_cloud", "id", "count",
                             "cloud_fraction"]
    assert len(rows) == answer["count"]
    for row, p in zip(rows, answer["points"], strict=True):
        assert row["id"] == p["id"] and int(row["count"]) == p["count"]
        assert (row["value"] == "") == (p["value"] is None)
        if p["value"] is not None:
            assert float(row["value"]) == pytest.approx(p["value"], rel=1e-12)


def test_point_geometry_is_the_get_profile(demo_client):
    lon, lat = -106.915, 40.288
    post = demo_client.post("/api/profile", json={
        "collection": COLLECTION, "geometry": {"type": "Point", "coordinates": [lon, lat]}})
    get = demo_client.get("/api/profile", params={"collection": COLLECTION, "lon": lon,
                                                  "lat": lat})
    assert post.status_code == get.status_code == 200
    assert post.json() == get.json()
    assert "count" not in post.json()["points"][0]


BIG = polygon(-107.3, 40.0, -106.5, 40.6)  # 70 x 67 km around the demo: ~5.3 M px at 30 m


@pytest.mark.parametrize("change, status, needles", [
    ({"geometry": {"type": "Polygon", "coordinates": [[[-106.92, 40.283], [-106.91, 40.292],
                                                       [-106.91, 40.283], [-106.92, 40.292],
                                                       [-106.92, 40.283]]]}},
     400, ["invalid", "Self-intersection"]),
    ({"geometry": {"type": "Polygon", "coordinates": [[[-106.92, 40.283]] * 4]}},
     400, ["invalid", "Too few points"]),
    ({"geometry": {"type": "Polygon", "coordinates": []}}, 422, ["coordinates"]),
    ({"geometry": {"type": "Polygon", "coordinates": [[[-106.92, 40.283], [-106.91, 40.283],
                                                       [-106.92, 40.283]]]}},
     422, ["coordinates"]),
    ({"geometry": {"type": "LineString", "coordinates": [[-106.92, 40.283], [-106.91, 40.29]]}},
     422, ["geometry", "Polygon"]),
    ({"geometry": polygon(-106.92, 40.283, -106.91, 95.0)}, 422, ["WGS84"]),
    ({"geometry": BIG}, 400, ["too large", "5,2", f"{MAX_PROFILE_PIXELS:,}", "30 m"]),
    ({"geometry": polygon(-106.91501, 40.28801, -106.915, 40.28802)}, 400, ["no pixel"]),
    ({"geometry": polygon(10.0, 40.0, 10.01, 40.01)}, 404, ["no scene", COLLECTION]),
    ({"collection": "nope"}, 404, ["nope", "landsat-sr"]),
    ({"expression": "(B08-B04)/(B08+B04)"}, 422, ["B08", "nir", "red"]),
    ({"expression": "(nir-"}, 422, ["malformed"]),
    ({"start": "2013", "end": "2008"}, 400, ["inverted"]),
    ({"format": "xml"}, 422, ["format"]),
    ({"bbox": [0, 0, 1, 1]}, 422, ["bbox"]),
])
def test_hostile_bodies(demo_client, change, status, needles):
    body = {"collection": COLLECTION, "geometry": polygon(*BOX), **change}
    r = demo_client.post("/api/profile", json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["type"] and isinstance(err["detail"], str)
    text = err["detail"] + " " + " ".join(err.get("choices", []))
    for needle in needles:
        assert needle in text, (needle, err)


def test_unknown_band_and_collection_list_the_choices(demo_client):
    band = demo_client.post("/api/profile", json={
        "collection": COLLECTION, "geometry": polygon(*BOX), "expression": "B12"}).json()
    assert {"nir", "red", "fmask"} <= set(band["choices"])
    coll = demo_client.post("/api/profile", json={
        "collection": "nope", "geometry": polygon(*BOX)}).json()
    assert COLLECTION in coll["choices"]


def test_reads_limit_over_all_scenes(demo_client):
    """The bound over all scenes: box pixels x scenes (here a small limit)."""
    app = FastAPI()
    add_exception_handlers(app)
    routes = TimeRoutes(catalog=SQLiteCatalog(DEMO / "catalog.sqlite"), renderer=None,
                        max_profile_reads=50_000)
    app.include_router(routes.router)
    with TestClient(app) as c:
        r = c.post("/api/profile", json={"collection": COLLECTION, "geometry": polygon(*BOX)})
        assert r.status_code == 400, r.text
        assert "105 scenes" in r.json()["detail"] and "50,000" in r.json()["detail"]
        ok = c.post("/api/profile", json={"collection": COLLECTION, "geometry": polygon(*BOX),
                                          "start": "2008-05", "end": "2008-06"})
        assert ok.status_code == 200, ok.text


# -- schemathesis: generated bodies (valid and invalid) never give a 500 -------------------
BUDGET = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=lambda m: m.value)
def test_post_profile_no_server_error(scene, mode):
    schema = schemathesis.openapi.from_asgi("/openapi.json", make_app(scene.db))
    operation = schema["/api/profile"]["POST"]

    def known(case):  # generated collection names are unknown: aim at the real one too
        if isinstance(case.body, dict) and len(repr(case.body)) % 2:
            case.body["collection"] = SERVICE_COLLECTION
        return case

    @BUDGET
    @given(operation.as_strategy(mode).map(known))
    def run(case):
        response = case.call()
        assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body["detail"], str) and body["detail"]

    run()
