"""Hostile HTTP input: oversize bodies, path traversal, absurd tiles, huge geometries, broken
JSON and content types, deep nesting, unicode junk. Every answer is a clear 4xx JSON error
(never a 5xx, never a file's content) and the server keeps serving correct tiles.
A bounded stateful schemathesis run (register -> use the returned id) closes the file."""

from __future__ import annotations

import io
import json
import math

import morecantile
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hyp_settings
from PIL import Image
from service_data import COLLECTION, ITEM_JUNE, make_app, true_colour
from starlette.testclient import TestClient

TILE = morecantile.tms.get("WebMercatorQuad").tile(15.035, 50.08, 15)
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def hostile(scene):
    """A client that turns server exceptions into responses, as a real server would."""
    app = make_app(scene.db, max_body_bytes=200_000)
    with TestClient(app, raise_server_exceptions=False) as c:
        cid = c.post("/api/chains", json=true_colour()).json()["id"]
        reference = c.get(f"/api/chains/{cid}/tiles/15/{TILE.x}/{TILE.y}.png")
        assert reference.status_code == 200
        yield c, cid, reference.content


def assert_client_error(r, *, status: int | tuple[int, ...] | None = None, mentions: str = ""):
    """A 4xx with the service's JSON error body (detail + type)."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if status is not None:
        assert r.status_code in ((status,) if isinstance(status, int) else status), r.text[:300]
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"] and isinstance(body["type"], str)
    assert "root:" not in r.text  # never a line of /etc/passwd
    if mentions:
        assert mentions.lower() in body["detail"].lower(), body["detail"]


def still_serving(c, cid: str, reference: bytes) -> None:
    r = c.get(f"/api/chains/{cid}/tiles/15/{TILE.x}/{TILE.y}.png?tilesize=256")
    assert r.status_code == 200 and r.content == reference
    assert c.get("/healthz").json()["status"] == "ok"


# -- size limits ------------------------------------------------------------------------------
def test_body_over_the_limit_is_413_declared_or_streamed(hostile):
    c, cid, ref = hostile
    big = json.dumps({"source": {"collection": COLLECTION}, "pad": "x" * 300_000})
    assert_client_error(c.post("/api/chains", content=big, headers=JSON), status=413,
                        mentions="200000 bytes")

    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(40):
            yield b"x" * 10_000

    assert_client_error(c.post("/api/chains", content=chunks(), headers=JSON), status=413)
    still_serving(c, cid, ref)


def test_statistics_geometry_with_too_many_vertices(hostile, scene):
    c, cid, ref = hostile
    n = 25_000  # compact JSON so it fits the body limit: the vertex cap answers
    ring = [[round(15.0 + 0.03 * math.cos(2 * math.pi * i / n), 4),
             round(50.08 + 0.02 * math.sin(2 * math.pi * i / n), 4)] for i in range(n)]
    ring.append(ring[0])
    body = json.dumps({"type": "Polygon", "coordinates": [ring]}, separators=(",", ":"))
    r = c.post(f"/api/chains/{cid}/statistics", content=body, headers=JSON)
    assert r.status_code in (413, 422), r.text[:200]
    # Split in many rings, each under the per-ring cap: the total is capped too.
    rings = [ring[i:i + 4000] + [ring[i]] for i in range(0, 24_000, 4000)]
    multi = json.dumps({"type": "MultiPolygon", "coordinates": [[r_] for r_ in rings]},
                       separators=(",", ":"))
    big_app = make_app(scene.db, max_body_bytes=2_000_000)
    with TestClient(big_app, raise_server_exceptions=False) as big:
        one = big.post(f"/api/chains/{cid}/statistics", content=body, headers=JSON)
        assert_client_error(one, status=422, mentions="at most 20000")
        many = big.post(f"/api/chains/{cid}/statistics", content=multi, headers=JSON)
        assert_client_error(many, status=422, mentions="simplify")
    still_serving(c, cid, ref)


@pytest.mark.parametrize("geometry, mentions", [
    ({"type": "Polygon", "coordinates": [[[15, 500], [15.1, 50.1], [15.1, 50], [15, 500]]]},
     "not a wgs84"),
    ({"type": "Polygon", "coordinates": [[[15, 50], [15.1, 50.1]]]}, "at least 4"),
    ({"type": "Point", "coordinates": [15, 50]}, "polygon"),
    ({"type": "Polygon", "coordinates": "x"}, "list"),
])
def test_bad_statistics_geometries(hostile, geometry, mentions):
    c, cid, _ref = hostile
    assert_client_error(c.post(f"/api/chains/{cid}/statistics", json=geometry), status=422,
                        mentions=mentions)


# -- path traversal and unicode in path parameters ---------------------------------------------
@pytest.mark.parametrize("path", [
    "/api/chains/..%2f..%2f..%2fetc%2fpasswd",
    "/api/chains/%2e%2e%2f%2e%2e%2fetc%2fpasswd/tilejson.json",
    "/api/chains/....//....//etc/passwd",
    "/api/chains/%252e%252e%252fetc%252fpasswd/tilejson.json",
    "/api/chains/..%5c..%5cwindows%5cwin.ini/tilejson.json",
    "/api/collections/..%2f..%2fetc%2fpasswd",
    "/api/collections/%00",
    "/api/chains/%ff%fe%00/tilejson.json",
    "/api/chains/%E2%80%AE%F0%9F%98%80/tilejson.json",
    "/api/chains/" + "a" * 65 + "/tilejson.json",
    "/api/search?collection=..%2f..%2fetc&limit=1",
])
def test_traversal_and_junk_in_path_parameters(hostile, path):
    c, _cid, _ref = hostile
    r = c.get(path)
    assert_client_error(r, status=(400, 404, 422))


@pytest.mark.parametrize("source", [
    {"collection": "../../etc/passwd"},
    {"collection": "/etc/passwd"},
    {"collection": COLLECTION, "href": "/etc/passwd"},
    {"collection": COLLECTION, "ids": [ITEM_JUNE], "assets": {"B04": "/etc/passwd"}},
    {"collection": "file:///etc/passwd"},
    {"collection": "\u0000\ud7ff\u202e"},
])
def test_chain_sources_cannot_name_files(hostile, source):
    c, _cid, _ref = hostile
    chain = {"source": source, "steps": [{"name": "bands", "bands": ["B04", "B03", "B02"]},
                                          {"name": "scale", "min": [0], "max": [3000]}]}
    assert_client_error(c.post("/api/chains", json=chain), status=422)


def test_item_ids_that_look_like_paths_select_nothing(hostile):
    c, _cid, _ref = hostile
    chain = true_colour(ids=("../../../etc/passwd",))
    r = c.post("/api/chains", json=chain)
    assert r.status_code == 201  # ids are catalog keys, never paths: nothing matches
    tile = c.get(f"/api/chains/{r.json()['id']}/tiles/15/{TILE.x}/{TILE.y}.png")
    assert tile.status_code == 204 and tile.content == b""


# -- absurd tiles -------------------------------------------------------------------------------
@pytest.mark.parametrize("zxy, query, status", [
    ("99999999999999999999999/1/1", "", 400),
    ("-1/0/0", "", 400),
    ("31/0/0", "", 400),
    ("2/4/0", "", 400),
    ("2/0/-1", "", 400),
    ("1/0/0", "?tilesize=100000", 422),
    ("1/0/0", "?tilesize=-256", 422),
    ("1/0/0", "?tilesize=256.5", 422),
    ("1e3/0/0", "", 422),
    ("1/0/0", "?tilesize=" + "9" * 5000, 422),
])
def test_absurd_tiles(hostile, zxy, query, status):
    c, cid, _ref = hostile
    assert_client_error(c.get(f"/api/chains/{cid}/tiles/{zxy}.png{query}"), status=status)


def test_unknown_tile_format_lists_choices(hostile):
    c, cid, _ref = hostile
    r = c.get(f"/api/chains/{cid}/tiles/15/{TILE.x}/{TILE.y}.tif")
    assert_client_error(r, status=422)
    assert set(r.json()["choices"]) == {"png", "webp", "jpg"}


# -- broken bodies ----------------------------------------------------------------------------
@pytest.mark.parametrize("content, headers", [
    (b'{"source": ', JSON),
    (b"\xff\xfe\x00garbage", JSON),
    (b'{"source": {"collection": "\\ud800"}, "steps": []}', JSON),
    (b"[" * 50_000 + b"]" * 50_000, JSON),
    (b'{"a":' * 20_000 + b"1" + b"}" * 20_000, JSON),
    (b"", JSON),
    (b"null", JSON),
    (b"NaN", JSON),
    (json.dumps(true_colour()).encode(), {"content-type": "text/plain"}),
    (json.dumps(true_colour()).encode(), {"content-type": "application/x-www-form-urlencoded"}),
    (json.dumps(true_colour()).encode(), {"content-type": "multipart/form-data; boundary=x"}),
    (json.dumps(true_colour()).encode(), {"content-type": "application/xml"}),
    (json.dumps(true_colour()).encode(), {}),
])
def test_malformed_bodies_and_content_types(hostile, content, headers):
    c, cid, _ref = hostile
    assert_client_error(c.post("/api/chains", content=content, headers=headers),
                        status=(400, 415, 422))
    assert_client_error(c.post(f"/api/chains/{cid}/statistics", content=content,
                               headers=headers), status=(400, 415, 422))


def test_deep_json_inside_a_valid_chain(hostile):
    c, cid, _ref = hostile
    deep: object = [15.0, 50.0]
    for _ in range(300):
        deep = {"type": "Polygon", "coordinates": [deep]}
    chain = true_colour()
    chain["source"]["intersects"] = deep
    assert_client_error(c.post("/api/chains", json=chain), status=422, mentions="GeoJSON")
    feature = {"type": "Feature", "properties": {"a": deep},
               "geometry": {"type": "Polygon", "coordinates": [[[15.02, 50.07], [15.05, 50.07],
                                                                [15.05, 50.09], [15.02, 50.07]]]}}
    r = c.post(f"/api/chains/{cid}/statistics", json=feature)
    assert r.status_code == 200 and r.json()["B04"]["count"] > 0  # properties are ignored


@pytest.mark.parametrize("steps", [
    [{"name": "bands", "bands": ["B04"] * 10_000}],  # would read the band 10 000 times
    [{"name": "expression", "expression": "(" * 3000 + "B04" + ")" * 3000}],
    [{"name": "expression", "expression": "B04.__class__.__subclasses__()"}],
    [{"name": "rm -rf /"}],
    "not a list",
    [{"name": "execute", "function": "f",
      "source": "def f(a):\n    return open('/etc/passwd').read()\n"}],
])
def test_hostile_chain_steps(hostile, steps):
    c, _cid, _ref = hostile
    r = c.post("/api/chains", json={"source": {"collection": COLLECTION}, "steps": steps})
    assert_client_error(r, status=422)


@pytest.mark.parametrize("source_extra, expected", [
    ({"sortby": [["\u0000", True]]}, 400),  # property names reach SQLite's JSON path
    ({"sortby": [['a"b', True]]}, 400),
    ({"limit": 10**30}, 200),  # beyond SQLite's integers: means no limit
    ({"intersects": {"type": "Polygon", "coordinates": [[[15, 500], [15, 501], [16, 500],
                                                          [15, 500]]]}}, 204),
])
def test_chains_accepted_then_rendered_without_5xx(hostile, source_extra, expected):
    c, _cid, ref = hostile
    chain = true_colour()
    chain["source"].update(source_extra)
    r = c.post("/api/chains", json=chain)
    if r.status_code != 201:
        assert_client_error(r)
        return
    tile = c.get(f"/api/chains/{r.json()['id']}/tiles/15/{TILE.x}/{TILE.y}.png")
    if expected >= 400:
        assert_client_error(tile, status=expected)
    else:
        assert tile.status_code == expected
    if expected == 200:
        assert tile.content == ref


def test_query_string_junk(hostile):
    c, cid, ref = hostile
    for url in [
        f"/api/chains/{cid}/point?lon=nan&lat=1",
        f"/api/chains/{cid}/point?lon=1e309&lat=1",
        f"/api/chains/{cid}/point?lon=%00&lat=1",
        "/api/search?collection=s2-test&bbox=" + ",".join(["1"] * 5000),
        "/api/search?collection=s2-test&bbox=nan,nan,nan,nan",
        "/api/search?collection=s2-test&limit=99999999999999999999999",
        "/api/search?collection=s2-test&datetime=" + "9" * 3000,
        "/api/search?collection=s2-test&sortby=%00",
    ]:
        assert_client_error(c.get(url))
    still_serving(c, cid, ref)


def test_server_still_serves_correct_pixels_after_the_abuse(hostile, scene):
    c, cid, ref = hostile
    still_serving(c, cid, ref)
    c.app.state.tile_cache.clear()  # rendered again, not served from the cache
    again = c.get(f"/api/chains/{cid}/tiles/15/{TILE.x}/{TILE.y}.png")
    with TestClient(make_app(scene.db)) as fresh:  # a process-state-free reference
        cold = fresh.get(f"/api/chains/{cid}/tiles/15/{TILE.x}/{TILE.y}.png")
    pixels = np.asarray(Image.open(io.BytesIO(again.content)))
    assert np.array_equal(pixels, np.asarray(Image.open(io.BytesIO(cold.content))))
    assert pixels.shape[:2] == (256, 256) and pixels.std() > 0


# -- stateful schemathesis: register a chain, then use the id it returns ----------------------
def test_stateful_register_then_use(scene):
    """Links from POST /api/chains (201: id) to the chain's GET/POST operations; a bounded
    run of random sequences; no 5xx and every error is the JSON error body."""
    app = make_app(scene.db)
    with TestClient(app) as c:
        raw = c.get("/openapi.json").json()
    links = {}
    for path, method in [("/api/chains/{chain_id}", "get"),
                         ("/api/chains/{chain_id}/tilejson.json", "get"),
                         ("/api/chains/{chain_id}/point", "get"),
                         ("/api/chains/{chain_id}/tiles/{z}/{x}/{y}.{fmt}", "get"),
                         ("/api/chains/{chain_id}/statistics", "post")]:
        op_id = raw["paths"][path][method]["operationId"]
        links[op_id] = {"operationId": op_id, "parameters": {"chain_id": "$response.body#/id"}}
    raw["paths"]["/api/chains"]["post"]["responses"]["201"]["links"] = links
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = app
    Machine = schema.as_state_machine()

    seen: list[tuple[str, str, int]] = []

    class Bounded(Machine):  # type: ignore[misc, valid-type]
        def before_call(self, case):
            # Random objects are never valid chains (the stateless test covers them):
            # register real ones, varied by the generated body, so the links carry ids.
            if case.method.upper() == "POST" and case.operation.path == "/api/chains":
                case.body = true_colour(vmax=1000 + len(json.dumps(case.body, default=str)))

        def validate_response(self, response, case, **kwargs):
            seen.append((case.method.upper(), case.operation.path, response.status_code))
            assert response.status_code < 500, (case.as_curl_command(), response.text[:300])
            if response.status_code >= 400:
                body = response.json()
                assert isinstance(body["detail"], str) and isinstance(body["type"], str)

    Bounded.run(settings=hyp_settings(max_examples=15, stateful_step_count=4, deadline=None,
                                      derandomize=True, database=None,
                                      suppress_health_check=list(HealthCheck)))
    # The links were followed: a registered chain's operations answered successfully.
    assert ("POST", "/api/chains", 201) in seen
    followed = {(m, p) for m, p, code in seen if "{chain_id}" in p and code in (200, 204)}
    assert followed, sorted(set(seen))
