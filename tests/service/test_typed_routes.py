"""The chain routes answer typed results: their schemas are in /openapi.json, and the
answers validate against them (the same JSON the routes gave as plain dicts)."""

from __future__ import annotations

from test_tiles import _square, utm_to_lonlat

from engine.render import ChainInfo, PointValues, Statistics
from service.models import TileJSON


def _schema_ref(openapi: dict, path: str, method: str) -> str:
    ok = openapi["paths"][path][method]["responses"]["200"]["content"]["application/json"]
    return ok["schema"]["$ref"].rsplit("/", 1)[1]


def test_openapi_names_the_result_models(client):
    spec = client.get("/openapi.json").json()
    assert _schema_ref(spec, "/api/chains/{chain_id}/point", "get") == "PointValues"
    assert _schema_ref(spec, "/api/chains/{chain_id}/statistics", "post") == "Statistics"
    assert _schema_ref(spec, "/api/chains/{chain_id}/info", "get") == "ChainInfo"
    assert _schema_ref(spec, "/api/chains/{chain_id}/tilejson.json", "get") == "TileJSON"
    schemas = spec["components"]["schemas"]
    assert {"coordinates", "bands", "values", "items"} <= set(
        schemas["PointValues"]["required"])
    assert set(schemas["BandStatistics"]["properties"]) == {
        "min", "max", "mean", "std", "count", "percentiles", "histogram"}


def test_point_answer_is_a_point_values(client, chain_id):
    lon, lat = utm_to_lonlat(300.5, 200.5)
    body = client.get(f"/api/chains/{chain_id}/point", params={"lon": lon, "lat": lat}).json()
    assert "dates" not in body  # only time stacks have dates
    pv = PointValues.model_validate(body)
    assert pv.coordinates == (lon, lat) and len(pv.values) == 3 and pv.items


def test_statistics_and_info_answers_validate(client, chain_id):
    r = client.post(f"/api/chains/{chain_id}/statistics?bins=8&p=10,90",
                    json=_square(100, 100, 200, 160))
    stats = Statistics.model_validate(r.json())
    assert set(stats.root) == {"B04", "B03", "B02"}
    assert all(len(b.histogram.counts) == 8 and set(b.percentiles) == {"10", "90"}
               for b in stats.root.values())
    info = ChainInfo.model_validate(client.get(f"/api/chains/{chain_id}/info").json())
    tj = TileJSON.model_validate(client.get(f"/api/chains/{chain_id}/tilejson.json").json())
    assert info.bounds == tj.bounds and info.band_names == tj.bands == ["B04", "B03", "B02"]
    assert tj.center[2] == info.minzoom and isinstance(tj.center[2], int)


def test_info_of_an_unknown_chain_is_404(client):
    r = client.get("/api/chains/ffffffffffffffff/info")
    assert r.status_code == 404 and r.json()["type"] == "NotFound"
