"""Access control of the tile service: API keys for writes, per-client token buckets (429 +
Retry-After), the dashboard's Basic login, and the Settings -> policy wiring."""

from __future__ import annotations

import base64
import json
import logging

import morecantile
import pytest
from service_data import make_app, true_colour
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from app.auth import (
    DEPLOYED_READ_PER_MINUTE,
    DEPLOYED_WRITE_PER_MINUTE,
    access_policy,
    dashboard_users,
    panel_auth_kwargs,
    protect_dashboard,
)
from app.settings import Settings
from service.security import (
    Access,
    AccessPolicy,
    BasicAuthMiddleware,
    RateLimiter,
    TokenBucket,
    classify,
    presented_key,
)

KEY = "s3cret-key-1"
TILE = morecantile.tms.get("WebMercatorQuad").tile(15.035, 50.08, 15)
SQUARE = {"type": "Polygon", "coordinates": [[[15.02, 50.07], [15.05, 50.07], [15.05, 50.09],
                                              [15.02, 50.09], [15.02, 50.07]]]}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- pure units -------------------------------------------------------------------------------
@pytest.mark.parametrize("method, path, expected", [
    ("GET", "/api/chains/abc/tiles/1/0/0.png", Access.read),
    ("HEAD", "/api/chains/abc/tilejson.json", Access.read),
    ("POST", "/api/chains", Access.write),
    ("POST", "/api/chains/abc/statistics", Access.compute),
    ("POST", "/api/chains/abc/profile", Access.compute),
    ("POST", "/api/chains/abc/statistics/", Access.compute),
    ("POST", "/api/chains/abc/extract", Access.write),
    ("POST", "/api/batch", Access.write),
    ("DELETE", "/api/chains/abc", Access.write),
    ("PUT", "/api/chains/abc/statistics", Access.write),  # only POST statistics is a read
    ("POST", "/api/chains/a/b/statistics", Access.write),  # not the statistics route
    ("OPTIONS", "/api/chains", None),
    ("GET", "/api/profile", Access.compute),  # reads every scene of a collection
    ("POST", "/api/profile", Access.compute),  # the same over a polygon: no key needed
    ("POST", "/api/profiles", Access.write),  # not the profile route
    ("POST", "/api/timelapse", Access.write),
])
def test_classify(method, path, expected):
    assert classify(method, path) is expected


def test_presented_key_forms():
    assert presented_key([(b"authorization", b"Bearer abc")]) == "abc"
    assert presented_key([(b"authorization", b"bearer   abc ")]) == "abc"
    assert presented_key([(b"x-api-key", b"xyz")]) == "xyz"
    assert presented_key([(b"authorization", b"Basic Zm9vOmJhcg==")]) is None
    assert presented_key([(b"authorization", b"Bearer ")]) is None
    assert presented_key([]) is None


def test_token_bucket_refills_at_its_rate():
    bucket = TokenBucket(60, 3, now=0.0)  # one token per second, burst of 3
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(1.0)
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0) == 0.0  # refilled 1 token in the 1 s since the first refusal
    assert bucket.take(100.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # capped at 3


def test_rate_limiter_budgets_clients_and_bound():
    clock = FakeClock()
    limiter = RateLimiter(read_per_minute=600, write_per_minute=12, burst_seconds=10,
                          max_clients=5, clock=clock)
    # write burst = 12 * 10 / 60 = 2 tokens; compute shares the write budget.
    assert limiter.check(Access.write, "a") == 0
    assert limiter.check(Access.compute, "a") == 0
    wait = limiter.check(Access.write, "a")
    assert wait == pytest.approx(5.0)  # one token every 5 s
    assert limiter.check(Access.read, "a") == 0  # reads have their own budget
    assert limiter.check(Access.write, "b") == 0  # other clients are not affected
    clock.now += 5.0
    assert limiter.check(Access.write, "a") == 0
    for i in range(20):
        limiter.check(Access.read, f"flood-{i}")
    assert len(limiter) == 5  # bounded table
    assert limiter.refused == 1


def test_rate_limiter_zero_is_unlimited():
    limiter = RateLimiter(read_per_minute=0, write_per_minute=0)
    assert all(limiter.check(Access.write, "a") == 0 for _ in range(1000))
    assert len(limiter) == 0


def test_policy_validates_keys_without_storing_them_in_describe():
    policy = AccessPolicy(api_keys=(KEY, ""), write_per_minute=5)
    assert policy.api_keys == (KEY,)
    assert policy.valid_key(KEY) and not policy.valid_key(KEY + "x") and not policy.valid_key(None)
    assert KEY not in json.dumps(policy.describe()) and KEY not in repr(policy)
    assert AccessPolicy().open and not policy.open


# -- through the real app ---------------------------------------------------------------------
def _client(app, host="10.0.0.1"):
    return TestClient(app, client=(host, 4321))


@pytest.fixture()
def keyed(scene):
    with TestClient(make_app(scene.db, access=AccessPolicy(api_keys=(KEY, "other")))) as c:
        yield c


def test_writes_need_a_key_reads_do_not(keyed):
    anon = keyed.post("/api/chains", json=true_colour())
    assert anon.status_code == 401
    assert anon.json()["type"] == "Unauthorized" and "X-API-Key" in anon.json()["detail"]
    assert anon.headers["www-authenticate"].startswith("Bearer")
    bad = keyed.post("/api/chains", json=true_colour(), headers={"X-API-Key": "nope"})
    assert bad.status_code == 403 and bad.json()["type"] == "Forbidden"
    ok = keyed.post("/api/chains", json=true_colour(),
                    headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 201, ok.text
    again = keyed.post("/api/chains", json=true_colour(), headers={"X-API-Key": "other"})
    assert again.status_code == 201 and again.json()["id"] == ok.json()["id"]
    cid = ok.json()["id"]
    # Shared tile URLs, TileJSON, statistics and health work without any key.
    tile = keyed.get(f"/api/chains/{cid}/tiles/15/{TILE.x}/{TILE.y}.png")
    assert tile.status_code == 200 and tile.content.startswith(b"\x89PNG")
    assert keyed.get(f"/api/chains/{cid}/tilejson.json").status_code == 200
    stats = keyed.post(f"/api/chains/{cid}/statistics", json=SQUARE)
    assert stats.status_code == 200, stats.text
    health = keyed.get("/healthz").json()
    assert health["access"]["write_keys_required"] is True
    assert KEY not in json.dumps(health)


def test_key_check_happens_before_the_body_is_read(keyed):
    # An unauthenticated client cannot make the server parse a (large, malformed) body.
    r = keyed.post("/api/chains", content=b"{" * 500_000,
                   headers={"content-type": "application/json"})
    assert r.status_code == 401


def test_write_rate_limit_429_with_retry_after(scene):
    app = make_app(scene.db, access=AccessPolicy(write_per_minute=6))  # burst 1, one per 10 s
    c = _client(app)
    first = c.post("/api/chains", json=true_colour())
    assert first.status_code == 201
    second = c.post("/api/chains", json=true_colour())
    assert second.status_code == 429
    body = second.json()
    assert body["type"] == "RateLimited" and "6 per minute" in body["detail"]
    assert 1 <= int(second.headers["retry-after"]) <= 10
    # Statistics share the write budget; tiles do not.
    cid = first.json()["id"]
    assert c.post(f"/api/chains/{cid}/statistics", json=SQUARE).status_code == 429
    tile = c.get(f"/api/chains/{cid}/tiles/15/{TILE.x}/{TILE.y}.png")
    assert tile.status_code == 200
    # Another address has its own bucket; the server keeps serving.
    assert _client(app, "10.0.0.2").post("/api/chains", json=true_colour()).status_code == 201
    assert app.state.rate_limiter.refused == 2


def test_read_rate_limit_per_key_and_address(scene):
    app = make_app(scene.db, access=AccessPolicy(api_keys=(KEY, "k2"), read_per_minute=6))
    c = _client(app)
    url = "/api/collections"
    assert c.get(url).status_code == 200
    limited = c.get(url)
    assert limited.status_code == 429 and limited.headers["retry-after"]
    # A valid key is its own client (same address); an invalid key does not escape the limit.
    assert c.get(url, headers={"X-API-Key": KEY}).status_code == 200
    assert c.get(url, headers={"X-API-Key": "k2"}).status_code == 200
    assert c.get(url, headers={"X-API-Key": "junk"}).status_code == 429
    # /healthz and the OpenAPI document are not rate limited.
    for _ in range(3):
        assert c.get("/healthz").status_code == 200
        assert c.get("/openapi.json").status_code == 200


def test_open_policy_changes_nothing(client, chain_id):
    r = client.post("/api/chains", json=true_colour(vmax=2000))
    assert r.status_code == 201
    assert client.get("/healthz").json()["access"] == {
        "write_keys_required": False, "read_per_minute": 0, "write_per_minute": 0,
        "clients": 0, "refused": 0}


def test_limits_respect_root_path(scene):
    app = make_app(scene.db, access=AccessPolicy(api_keys=(KEY,)), root_path="/eox")
    with TestClient(app, root_path="/eox") as c:
        assert c.post("/api/chains", json=true_colour()).status_code == 401


# -- dashboard login ---------------------------------------------------------------------------
def _dashboard():
    async def page(request):
        return PlainTextResponse("dashboard")

    async def ws(websocket):
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    return Starlette(routes=[Route("/", page), Route("/api/collections", page),
                             Route("/healthz", page), WebSocketRoute("/ws", ws)])


def _basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_guards_pages_not_the_api():
    app = BasicAuthMiddleware(_dashboard(), users={"ana": "pw1", "bo": "pw2"})
    with TestClient(app) as c:
        r = c.get("/")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert c.get("/", headers=_basic("ana", "pw1")).text == "dashboard"
        assert c.get("/", headers=_basic("ana", "pw2")).status_code == 401
        assert c.get("/", headers=_basic("eve", "pw1")).status_code == 401
        assert c.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401
        assert c.get("/", headers={"Authorization": "Bearer pw1"}).status_code == 401
        assert c.get("/api/collections").status_code == 200
        assert c.get("/healthz").status_code == 200
        with pytest.raises(WebSocketDisconnect), c.websocket_connect("/ws") as ws:
            ws.receive_text()
        with c.websocket_connect("/ws", headers=_basic("bo", "pw2")) as ws:
            assert ws.receive_text() == "hi"


def test_shared_password_accepts_any_user(tmp_path):
    settings = Settings(catalog=str(tmp_path / "c.sqlite"), data_dir=tmp_path,
                        basic_auth="open-sesame")
    assert dashboard_users(settings) == {"*": "open-sesame"}
    app = protect_dashboard(_dashboard(), settings)
    with TestClient(app) as c:
        assert c.get("/", headers=_basic("anyone", "open-sesame")).status_code == 200
        assert c.get("/").status_code == 401


def test_users_file_and_panel_kwargs(tmp_path):
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"ana": "pw1"}))
    settings = Settings(catalog=str(tmp_path / "c.sqlite"), data_dir=tmp_path,
                        basic_auth=str(users), oauth_provider="github", oauth_key="id",
                        oauth_secret="s", cookie_secret="c",
                        oauth_extra_params={"scope": "read:user"})
    assert dashboard_users(settings) == {"ana": "pw1"}
    assert panel_auth_kwargs(settings) == {
        "basic_auth": str(users), "cookie_secret": "c", "oauth_provider": "github",
        "oauth_key": "id", "oauth_secret": "s", "oauth_extra_params": {"scope": "read:user"}}
    users.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        dashboard_users(settings)
    none = Settings(catalog=str(tmp_path / "c.sqlite"), data_dir=tmp_path)
    assert dashboard_users(none) is None and panel_auth_kwargs(none) == {}


# -- settings -> policy -------------------------------------------------------------------------
def test_access_policy_off_on_loopback_on_elsewhere(tmp_path, caplog, monkeypatch):
    base = {"catalog": str(tmp_path / "c.sqlite"), "data_dir": tmp_path}
    loop = access_policy(Settings(**base))
    assert loop.open
    with caplog.at_level(logging.WARNING, logger="app.auth"):
        public = access_policy(Settings(**base, address="0.0.0.0"))
    assert (public.read_per_minute, public.write_per_minute) == (
        DEPLOYED_READ_PER_MINUTE, DEPLOYED_WRITE_PER_MINUTE)
    assert "EOX_API_KEYS" in caplog.text
    custom = access_policy(Settings(**base, address="0.0.0.0", api_keys=["k"],
                                    rate_limit_per_minute=0, tile_rate_limit_per_minute=10))
    assert (custom.api_keys, custom.write_per_minute, custom.read_per_minute) == (("k",), 0, 10)
    assert Settings(**base, address="::1").is_loopback
    assert Settings(**base, address="localhost").is_loopback
    assert not Settings(**base, address="example.org").is_loopback
    # Keys come from the environment as a JSON list.
    monkeypatch.setenv("EOX_API_KEYS", '["a", "b"]')
    assert Settings(**base).api_keys == ["a", "b"]


def test_build_service_wires_the_keys(scene, tmp_path):
    from app.wiring import build_service

    settings = Settings(catalog=str(scene.db), data_dir=tmp_path, api_keys=[KEY])
    with TestClient(build_service(settings), base_url="http://localhost") as c:
        assert c.post("/api/chains", json=true_colour()).status_code == 401
        r = c.post("/api/chains", json=true_colour(), headers={"X-API-Key": KEY})
        assert r.status_code == 201
